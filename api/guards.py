"""Guards kept in Valkey, shared by every API replica: per-user rate limits and
Idempotency-Key records.

Rate limit: a fixed one-minute window per user and bucket (``INCR`` + ``EXPIRE``); over the
limit the caller gets 429 with ``Retry-After`` = seconds left in the window. If Valkey is
unreachable the limiter lets the request through and logs ``ratelimit.unavailable``
(an alarm condition), rather than taking the whole API down with it.

Idempotency: the first request with a key claims it with ``SET NX`` (state ``pending``, short
TTL so a crashed request frees it); when it finishes, its status and body are stored for
``idempotency_ttl_s``. A duplicate waits for the first one and replays its answer; a failed
first request releases the key so the retry runs. A different body under the same key is 422.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from fastapi import HTTPException

from tapmask.settings import Settings

log = structlog.get_logger()
PENDING_TTL_S = 900
KEY_MAX = 128


def make_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio Valkey client with short timeouts."""
    return aioredis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True)


async def check_rate(redis: aioredis.Redis, user_id: str, bucket: str, limit: int, now: float | None = None) -> None:
    """Count one request of ``user_id`` in ``bucket``; 429 when over ``limit`` a minute."""
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // 60)
    key = f"tapmask:rl:{bucket}:{window}:{user_id}"
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 61)
        count, _ = await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - fail open, loudly
        log.warning("ratelimit.unavailable", error=str(exc))
        return
    if int(count) > limit:
        retry = max(1, int((window + 1) * 60 - now) + 1)
        raise HTTPException(
            status_code=429,
            detail=f"rate limit: at most {limit} {bucket} requests a minute; retry in {retry}s",
            headers={"Retry-After": str(retry)},
        )


def fingerprint(body: Any) -> str:
    """A stable hash of a request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Claim:
    """The outcome of claiming an Idempotency-Key: either ours to run, or a stored answer."""

    key: str | None
    replay: dict[str, Any] | None = None  # {"status": int, "body": ...}


class Idempotency:
    """Idempotency-Key records in Valkey."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis, self.settings = redis, settings

    @staticmethod
    def check_key(raw: str | None) -> str | None:
        """The header value, validated (422 when unusable)."""
        if raw is None:
            return None
        raw = raw.strip()
        if not (1 <= len(raw) <= KEY_MAX) or not raw.isascii() or not raw.isprintable():
            raise HTTPException(status_code=422, detail=f"Idempotency-Key must be 1-{KEY_MAX} printable ASCII characters")
        return raw

    async def claim(self, user_id: str, scope: str, raw_key: str | None, fp: str | None) -> Claim:
        """Claim the key for this request, or wait for the first request and return its answer."""
        key = self.check_key(raw_key)
        if key is None:
            return Claim(key=None)
        digest = hashlib.sha256(user_id.encode() + b"\x00" + key.encode()).hexdigest()
        rkey = f"tapmask:idem:{scope}:{digest}"
        deadline = time.monotonic() + self.settings.idempotency_wait_s
        try:
            while True:
                mine = json.dumps({"state": "pending", "fp": fp})
                if await self.redis.set(rkey, mine, nx=True, ex=PENDING_TTL_S):
                    return Claim(key=rkey)
                raw = await self.redis.get(rkey)
                if raw is not None:
                    rec = json.loads(raw)
                    if fp and rec.get("fp") and rec["fp"] != fp:
                        raise HTTPException(status_code=422, detail="this Idempotency-Key was used with a different request body")
                    if rec.get("state") == "done":
                        return Claim(key=None, replay={"status": rec["status"], "body": rec["body"]})
                if time.monotonic() > deadline:
                    raise HTTPException(status_code=409, detail="a request with this Idempotency-Key is still in progress",
                                        headers={"Retry-After": "5"})
                await asyncio.sleep(0.05)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("idempotency.unavailable", error=str(exc))
            raise HTTPException(status_code=503, detail="idempotency store unavailable; retry shortly",
                                headers={"Retry-After": "5"}) from exc

    async def finish(self, claim: Claim, status: int, body: Any, fp: str | None = None) -> None:
        """Store the answer for replays."""
        if claim.key is None:
            return
        rec = json.dumps({"state": "done", "fp": fp, "status": status, "body": body})
        try:
            await self.redis.set(claim.key, rec, ex=self.settings.idempotency_ttl_s)
        except Exception as exc:  # noqa: BLE001 - the resource exists; a retry may make a twin
            log.error("idempotency.store_failed", error=str(exc))

    async def release(self, claim: Claim) -> None:
        """Free the key after a failed first request, so a retry runs."""
        if claim.key is None:
            return
        try:
            await self.redis.delete(claim.key)
        except Exception as exc:  # noqa: BLE001
            log.error("idempotency.release_failed", error=str(exc))
