"""Webhook endpoints, signing, the URL guard and the delivery schedule, kept in Valkey.

Why Valkey: endpoints are written by the API and read by the notifications agent on every
notification; the delivery log is read by the API; and retries must wait minutes to days
without blocking a Kafka partition. A sorted set of due deliveries (score = due time in ms)
is a durable timer both processes share; claiming a due delivery moves its score forward by a
lease (atomically, in a Lua script), so several workers never send the same attempt at once
and a worker that dies mid-attempt leaves it to be retried when the lease runs out.

Keys (prefix ``tapmask:{topic_prefix}wh:``):

==========================  ===========================================================
``ep:{id}``                 hash: id, user_id, url, secret, event_types (JSON), created_at, disabled, disabled_reason
``user:{user_id}``          set of the user's endpoint ids
``email:{user_id}``         the user's e-mail address for notifications
``log:{endpoint_id}``       list of JSON delivery-log entries, newest first, capped
``due``                     sorted set of delivery keys by due time (ms)
``dl:{key}``                JSON of a pending delivery (body, attempt, target...)
``done:{key}``              set for 7 days after a delivery ended, so a redelivered
                            notification is not sent again
==========================  ===========================================================

A delivery key is ``{webhook_id}|{target}``; the webhook id (``msg_`` + the notification's
event id) is the same on every retry, so receivers de-duplicate on it (Standard Webhooks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from tapmask.settings import Settings

EVENT_TYPES = ("job.started", "job.completed", "job.failed", "job.interrupted", "quota.exceeded")
DONE_TTL_S = 7 * 24 * 3600
# Cloud metadata services; all are also non-global addresses, listed for the message.
METADATA_ADDRESSES = frozenset({"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"})


# ---- signing (Standard Webhooks) ------------------------------------------------------------
def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the base64-decoded part after the prefix)."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one delivery attempt."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body),
            "content-type": "application/json", "user-agent": "TapMask-Webhooks/1"}


# ---- the URL guard ------------------------------------------------------------------------------
class UrlRefused(ValueError):
    """An endpoint URL TapMask will not call; the message says why."""


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> str | None:
    """Why TapMask will not send to this address, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def check_url(url: str, allow_loopback: bool) -> str:
    """The URL, normalised, if TapMask may send to it; else UrlRefused with the reason.

    Every address the host resolves to must be public (one private answer is enough to refuse:
    DNS answers can rotate). Checked again before every attempt, since DNS can change.
    """
    if len(url) > 2048:
        raise UrlRefused("the URL is longer than 2048 characters")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http"):
        raise UrlRefused("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("the URL must not carry credentials; use the signing secret to authenticate deliveries")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused(f"the URL's port is invalid ({exc})") from exc
    try:
        addresses = resolve(parts.hostname, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"the host {parts.hostname!r} cannot be resolved") from exc
    for addr in addresses:
        problem = address_problem(ipaddress.ip_address(addr.split("%")[0]), allow_loopback)
        if problem:
            raise UrlRefused(f"the host {parts.hostname!r} resolves to {addr}, {problem}; TapMask only calls public addresses")
    return parts.geturl()


# ---- the schedule ---------------------------------------------------------------------------------
def schedule_of(settings: Settings) -> list[float]:
    """Delays (s) before each retry, from ``webhook_retry_schedule_s``."""
    return [float(x) for x in settings.webhook_retry_schedule_s.split(",") if x.strip()]


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def next_delay(attempt: int, schedule: list[float], jitter: float, retry_after: float | None, max_retry_after: float,
               rnd: random.Random | None = None) -> float | None:
    """Seconds until the next try after ``attempt`` tries failed, or None when the schedule is spent.

    The scheduled delay is spread by ±``jitter`` (so endpoints coming back are not hit by a
    herd); a ``Retry-After`` longer than that is honoured, up to ``max_retry_after``.
    """
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    delay = base * (1 + (rnd or random).uniform(-jitter, jitter)) if jitter else base
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return max(0.0, delay)


def body_of(notification: dict[str, Any]) -> bytes:
    """The JSON body of a notification (Standard Webhooks shape: type, timestamp, data)."""
    ts = datetime.fromtimestamp(notification["occurred_at"] / 1000, tz=timezone.utc)
    data = json.loads(notification.get("payload_json") or "{}")
    return json.dumps({"type": notification["kind"], "timestamp": ts.isoformat().replace("+00:00", "Z"), "data": data},
                      separators=(",", ":")).encode()


# ---- the store --------------------------------------------------------------------------------------
@dataclass
class Delivery:
    """A pending delivery of one notification to one target (``ep:{id}`` or ``email:{user}``)."""

    key: str
    msg_id: str
    target: str
    kind: str
    user_id: str
    body: str
    attempt: int = 0  # tries made so far
    created_at: int = 0


_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"""


class WebhookStore:
    """Endpoints, e-mail addresses, pending deliveries and delivery logs in Valkey."""

    def __init__(self, settings: Settings, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.r = client or aioredis.from_url(settings.redis_url, decode_responses=True)
        self.p = f"tapmask:{settings.topic_prefix}wh:"
        self._claim = self.r.register_script(_CLAIM)

    async def close(self) -> None:
        await self.r.aclose()

    # endpoints
    async def add_endpoint(self, user_id: str, url: str, secret: str | None, event_types: list[str] | None) -> dict[str, Any]:
        ep = {"id": "ep_" + uuid.uuid4().hex, "user_id": user_id, "url": url, "secret": secret or new_secret(),
              "event_types": json.dumps(sorted(event_types or EVENT_TYPES)), "created_at": str(int(time.time() * 1000)),
              "disabled": "0", "disabled_reason": ""}
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.p + "ep:" + ep["id"], mapping=ep)
            pipe.sadd(self.p + "user:" + user_id, ep["id"])
            await pipe.execute()
        return self._endpoint(ep)

    @staticmethod
    def _endpoint(raw: dict[str, str]) -> dict[str, Any]:
        return {"id": raw["id"], "user_id": raw["user_id"], "url": raw["url"], "secret": raw["secret"],
                "event_types": json.loads(raw["event_types"]), "created_at": int(raw["created_at"]),
                "disabled": raw.get("disabled") == "1", "disabled_reason": raw.get("disabled_reason") or None}

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        raw = await self.r.hgetall(self.p + "ep:" + endpoint_id)
        return self._endpoint(raw) if raw else None

    async def endpoints(self, user_id: str) -> list[dict[str, Any]]:
        ids = sorted(await self.r.smembers(self.p + "user:" + user_id))
        out = [await self.endpoint(i) for i in ids]
        return sorted((e for e in out if e is not None), key=lambda e: e["created_at"])

    async def delete_endpoint(self, endpoint_id: str) -> None:
        ep = await self.endpoint(endpoint_id)
        if ep is None:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.p + "ep:" + endpoint_id, self.p + "log:" + endpoint_id)
            pipe.srem(self.p + "user:" + ep["user_id"], endpoint_id)
            await pipe.execute()

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> None:
        if await self.r.exists(self.p + "ep:" + endpoint_id):
            await self.r.hset(self.p + "ep:" + endpoint_id, mapping={"disabled": "1", "disabled_reason": reason})

    # e-mail
    async def set_email(self, user_id: str, address: str | None) -> None:
        if address:
            await self.r.set(self.p + "email:" + user_id, address)
        else:
            await self.r.delete(self.p + "email:" + user_id)

    async def email(self, user_id: str) -> str | None:
        return await self.r.get(self.p + "email:" + user_id)

    # delivery log
    async def log(self, endpoint_id: str, entry: dict[str, Any]) -> None:
        key = self.p + "log:" + endpoint_id
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.lpush(key, json.dumps(entry))
            pipe.ltrim(key, 0, self.settings.webhook_log_size - 1)
            await pipe.execute()

    async def delivery_log(self, endpoint_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.r.lrange(self.p + "log:" + endpoint_id, 0, max(0, limit - 1))]

    # deliveries
    async def schedule(self, d: Delivery, due_ms: int | None = None) -> bool:
        """Add a delivery unless it is pending or ended already (idempotent); True if added."""
        if await self.r.exists(self.p + "done:" + d.key):
            return False
        if not await self.r.set(self.p + "dl:" + d.key, json.dumps(d.__dict__), nx=True):
            return False
        await self.r.zadd(self.p + "due", {d.key: due_ms if due_ms is not None else int(time.time() * 1000)})
        return True

    async def claim_due(self, limit: int, lease_s: float) -> list[str]:
        """Take up to ``limit`` due deliveries; they come back due after ``lease_s`` unless rescheduled."""
        now = int(time.time() * 1000)
        return list(await self._claim(keys=[self.p + "due"], args=[now, now + int(lease_s * 1000), limit]))

    async def delivery(self, key: str) -> Delivery | None:
        raw = await self.r.get(self.p + "dl:" + key)
        return Delivery(**json.loads(raw)) if raw else None

    async def reschedule(self, d: Delivery, delay_s: float) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.p + "dl:" + d.key, json.dumps(d.__dict__))
            pipe.zadd(self.p + "due", {d.key: int((time.time() + delay_s) * 1000)})
            await pipe.execute()

    async def finish(self, key: str) -> None:
        """The delivery ended (delivered, dead-lettered or dropped): forget it, remember it ended."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(self.p + "due", key)
            pipe.delete(self.p + "dl:" + key)
            pipe.set(self.p + "done:" + key, "1", ex=DONE_TTL_S)
            await pipe.execute()

    async def pending(self) -> int:
        return int(await self.r.zcard(self.p + "due"))
