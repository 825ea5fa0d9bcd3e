"""The notifications agent and the delivery dispatcher.

``fan_out`` reads ``tapmask.notification.v1`` (job started, completed, failed, interrupted,
quota exceeded) and, for each, schedules one delivery per enabled webhook endpoint of the
user that subscribes to that kind, plus an e-mail when SMTP is configured and the user gave
an address. Scheduling is a few Valkey writes, so the partition never waits on a receiver.

``dispatch`` (a background task in every worker) takes due deliveries and sends them, up to
``webhook_concurrency`` at a time:

* webhooks follow Standard Webhooks: ``webhook-id`` (stable across retries and redeliveries:
  ``msg_`` + the notification's id), ``webhook-timestamp``, ``webhook-signature``
  (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``); no redirects are followed;
* a 2xx ends the delivery; 410 Gone disables the endpoint; anything else (other status,
  timeout, connection refused) is retried after the next delay of ``webhook_retry_schedule_s``
  (±jitter; a longer ``Retry-After`` is honoured); when the schedule is spent the delivery goes
  to ``tapmask.dlq.v1`` with the last error;
* the endpoint URL is checked again before every attempt (DNS can change): a URL that now
  resolves to a private address is dead-lettered at once;
* every attempt is written to the endpoint's delivery log, which the API serves.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import httpx
import structlog

from processors.app import app, dead_letter_record, guarded, handler, settings, topic
from processors.webhooks import Delivery, UrlRefused, WebhookStore, body_of, check_url, next_delay, retry_after_s, \
    schedule_of, signed_headers
from schemas.topics import NOTIFICATION

log = structlog.get_logger()
_store: WebhookStore | None = None


def store() -> WebhookStore:
    """The worker's Valkey store (made on first use, inside the running loop)."""
    global _store
    if _store is None:
        _store = WebhookStore(settings)
    return _store


async def _fan_out(note: dict[str, Any]) -> None:
    st = store()
    msg_id = "msg_" + note["event_id"]
    body = body_of(note).decode()
    base = {"msg_id": msg_id, "kind": note["kind"], "user_id": note["user_id"], "body": body,
            "created_at": int(time.time() * 1000)}
    for ep in await st.endpoints(note["user_id"]):
        if ep["disabled"] or note["kind"] not in ep["event_types"]:
            continue
        target = "ep:" + ep["id"]
        await st.schedule(Delivery(key=f"{msg_id}|{target}", target=target, **base))
    if settings.smtp_host and await st.email(note["user_id"]):
        target = "email:" + note["user_id"]
        await st.schedule(Delivery(key=f"{msg_id}|{target}", target=target, **base))


NOTIFICATIONS = handler("notifications", NOTIFICATION, _fan_out)


@app.agent(topic(NOTIFICATION))
async def fan_out(stream):  # type: ignore[no-untyped-def]
    """Schedule the deliveries of each notification (webhooks, e-mail)."""
    async for event in stream.events():
        await guarded(NOTIFICATIONS, event)


# ---- sending ---------------------------------------------------------------------------------------
class Outcome:
    """What one attempt came to."""

    def __init__(self, ok: bool, status: int | None = None, error: str | None = None, retry_after: float | None = None,
                 gone: bool = False, permanent: bool = False) -> None:
        self.ok, self.status, self.error, self.retry_after = ok, status, error, retry_after
        self.gone, self.permanent = gone, permanent


async def _post(client: httpx.AsyncClient, ep: dict[str, Any], d: Delivery) -> Outcome:
    try:
        url = await asyncio.to_thread(check_url, ep["url"], settings.webhook_allow_loopback)
    except UrlRefused as exc:
        return Outcome(False, error=f"refused: {exc}", permanent=True)
    body = d.body.encode()
    try:
        resp = await client.post(url, content=body, headers=signed_headers(ep["secret"], d.msg_id, body))
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
    if 200 <= resp.status_code < 300:
        return Outcome(True, resp.status_code)
    if resp.status_code == 410:
        return Outcome(False, 410, "410 Gone: the endpoint asked to be disabled", gone=True)
    return Outcome(False, resp.status_code, f"HTTP {resp.status_code}", retry_after=retry_after_s(resp.headers.get("retry-after")))


def _send_email(address: str, d: Delivery) -> None:
    data = json.loads(d.body)
    job = data.get("data", {})
    msg = EmailMessage()
    msg["From"], msg["To"] = settings.smtp_from, address
    msg["Subject"] = f"TapMask: {d.kind.replace('.', ' ')}" + (f" ({job['jobId'][:8]})" if job.get("jobId") else "")
    msg["Message-ID"] = f"<{d.msg_id}@tapmask>"  # stable: mail clients fold duplicates
    lines = [f"{k}: {v}" for k, v in job.items() if v is not None]
    msg.set_content(f"{d.kind} at {data.get('timestamp')}\n\n" + "\n".join(lines) + "\n")
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(msg)


async def _email(d: Delivery) -> Outcome:
    address = await store().email(d.user_id)
    if not address:
        return Outcome(False, error="no e-mail address any more", permanent=True)
    try:
        await asyncio.to_thread(_send_email, address, d)
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:500],
                       permanent=500 <= exc.smtp_code < 600 and exc.smtp_code != 552)
    except (OSError, smtplib.SMTPException) as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return Outcome(True, 250)


async def attempt(client: httpx.AsyncClient, key: str) -> None:
    """One attempt of one delivery, and what follows from it (done, retry, disable, dead letter)."""
    st = store()
    d = await st.delivery(key)
    if d is None:
        await st.finish(key)
        return
    endpoint_id = d.target[3:] if d.target.startswith("ep:") else None
    started = time.monotonic()
    if endpoint_id is not None:
        ep = await st.endpoint(endpoint_id)
        if ep is None or ep["disabled"]:
            await st.finish(key)  # deleted or disabled since: nobody to deliver to
            return
        outcome = await _post(client, ep, d)
    else:
        outcome = await _email(d)
    d.attempt += 1
    entry = {"webhookId": d.msg_id, "eventType": d.kind, "attempt": d.attempt, "at": int(time.time() * 1000),
             "status": outcome.status, "error": outcome.error, "durationMs": round((time.monotonic() - started) * 1000, 1)}
    if outcome.ok:
        entry["outcome"] = "delivered"
        await st.finish(key)
    elif outcome.gone and endpoint_id is not None:
        entry["outcome"] = "endpoint_disabled"
        await st.disable_endpoint(endpoint_id, "the receiver answered 410 Gone")
        await st.finish(key)
    else:
        delay = None if outcome.permanent else next_delay(
            d.attempt, schedule_of(settings), settings.webhook_jitter, outcome.retry_after, settings.webhook_max_retry_after_s)
        if delay is None:
            entry["outcome"] = "dead_lettered"
            await dead_letter_record("notifications", NOTIFICATION, d.user_id, d.body.encode(),
                                     f"delivery {d.msg_id} to {d.target} gave up after {d.attempt} attempt(s): {outcome.error}",
                                     d.attempt)
            await st.finish(key)
        else:
            entry["outcome"] = "retrying"
            entry["nextAttemptAt"] = int((time.time() + delay) * 1000)
            await st.reschedule(d, delay)
    if endpoint_id is not None:
        await st.log(endpoint_id, entry)
    log.info("notification.attempt", target=d.target, webhook_id=d.msg_id, **{k: entry[k] for k in ("attempt", "outcome", "status")})


@app.task
async def dispatch() -> None:
    """Send due deliveries for as long as the worker runs; never raises."""
    in_flight: set[asyncio.Task[None]] = set()
    limit = max(1, settings.webhook_concurrency)
    async with httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False) as client:
        while True:
            try:
                free = limit - len(in_flight)
                keys = await store().claim_due(free, settings.webhook_lease_s) if free > 0 else []
            except Exception as exc:  # noqa: BLE001 - Valkey away: wait, try again
                log.warning("notification.dispatch_waits", error=str(exc))
                keys = []
                await asyncio.sleep(1.0)
            for key in keys:
                task = asyncio.create_task(_safe_attempt(client, key))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if not keys:
                await asyncio.sleep(settings.webhook_poll_interval_s)


async def _safe_attempt(client: httpx.AsyncClient, key: str) -> None:
    try:
        await attempt(client, key)
    except Exception:  # noqa: BLE001 - the lease brings the delivery back later
        log.exception("notification.attempt_crashed", key=key)
