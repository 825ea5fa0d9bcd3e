"""The Faust app every TapMask agent lives in, and the Avro-aware way agents emit events.

Topics are read and written as raw bytes and (de)serialised with ``schemas.serde``, the same
code the other services use. Delivery is at least once (Faust's exactly_once has open bugs,
DESIGN.md); every agent is idempotent. Faust's own topics (table changelogs) are created by
Faust; ours come from infra/topics.toml and are never re-declared here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import faust
import structlog

from schemas import serde
from schemas.topics import DLQ, load_topic_specs, schema_by_topic
from processors import transport
from tapmask.events import envelope
from tapmask.logs import configure_logging
from tapmask.settings import get_settings

settings = get_settings()
configure_logging(settings, "processors")  # structlog filters below the log level (no per-event debug lines)
log = structlog.get_logger()
_partitions = {t.name: t.partitions for t in load_topic_specs()}


class App(faust.App):
    """faust.App on the aiokafka transport with a configurable fetch wait (processors/transport.py)."""

    def _new_transport(self):  # type: ignore[no-untyped-def]
        return transport.Transport(self.conf.broker_consumer, self)


app = App(
    settings.faust_app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",  # tables rebuild from their changelog topics at start
    topic_partitions=8,
    topic_replication_factor=1,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
    broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
    producer_acks=-1,
    # Batch what agents emit (they do not wait for each ack; see ``emit``): a few ms of linger
    # turns hundreds of single-record produce requests a second into a few batched ones.
    producer_linger=0.005,
    # aiokafka keeps one produce request in flight and puts at most one batch per partition in
    # it; a broker such as Tansu on S3 pays per partition batch, so under load the size of a
    # batch is the throughput: let one request carry everything that queued while the last one
    # was in flight (Apache Kafka's default message.max.bytes is 1 MiB).
    producer_max_batch_size=512 * 1024,
    producer_max_request_size=8 * 1024 * 1024,
    processing_guarantee="at_least_once",
    key_serializer="raw",
    value_serializer="raw",
)


@lru_cache(maxsize=None)
def topic(name: str) -> faust.TopicT:
    """A Faust handle on one of our topics (bytes in, bytes out; never declared by Faust)."""
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=_partitions[name],
        internal=False,
    )


def json_schema() -> faust.Schema:
    """Table keys and values as JSON (job snapshots, quota counts, video metadata)."""
    return faust.Schema(key_type=str, value_type=None, key_serializer="json", value_serializer="json")


def decode(name: str, value: bytes) -> dict[str, Any]:
    """Decode an event read from topic ``name``."""
    return serde.decode(schema_by_topic()[name], value)


async def emit(name: str, key: str, record: dict[str, Any] | None, wait: bool = True) -> None:
    """Produce an event; with ``wait`` (default) return once the broker acknowledged it.

    ``wait=False`` is for the hot path of agents: the record is buffered and this returns at
    once. That keeps at-least-once, because Faust flushes its producer (every buffered record
    acknowledged) before it commits the offsets of the events that caused them; a record the
    broker refuses is logged.
    """
    schema = schema_by_topic()[name]
    value = None if record is None else serde.encode(schema, record)
    fut = await topic(name).send(key=key.encode(), value=value, headers={serde.HEADER_SCHEMA: schema.encode()})
    if wait:
        await fut  # resolves once the broker acknowledged the record
    else:
        fut.add_done_callback(_log_send_failure)


def _log_send_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("emit.failed", error=str(fut.exception()))


def stable_id(*parts: str) -> str:
    """A deterministic event id: the same logical event re-emitted after a crash keeps its id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "tapmask:" + ":".join(parts)).hex


RETRY_DELAYS_S = (2.0, 4.0)  # DESIGN: 2 s, x2, 3 attempts in all


GiveUp = Callable[[dict[str, Any], str], Awaitable[None]]


async def guarded(service: str, event: Any, topic_name: str, handler: Callable[[dict[str, Any]], Awaitable[None]],
                  on_give_up: GiveUp | None = None) -> None:
    """Decode ``event`` and run ``handler`` on it so that nothing blocks the partition for long.

    An undecodable event goes straight to the dead-letter topic. Any other failure is retried
    with exponential backoff (2 s, 4 s); the third failure dead-letters the event, with the
    reason, then ``on_give_up(record, reason)`` tells the user (e.g. fails the job with a
    readable reason), and the agent moves on. Handlers are idempotent, so a retry is safe.
    The partition waits at most 6 s for one poison event.
    """
    msg = event.message
    try:
        record = decode(topic_name, event.value)
    except serde.SerdeError as exc:
        await dead_letter(service, msg, f"undecodable event: {exc}", attempts=1)
        return
    for attempt in range(len(RETRY_DELAYS_S) + 1):
        try:
            await handler(record)
            return
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered
            if attempt == len(RETRY_DELAYS_S):
                log.exception("agent.dead_letter", service=service, topic=msg.topic, offset=msg.offset)
                reason = f"{type(exc).__name__}: {exc}"
                await dead_letter(service, msg, reason, attempts=attempt + 1)
                if on_give_up is not None:
                    try:
                        await on_give_up(record, reason)
                    except Exception:  # noqa: BLE001 - the event is parked already
                        log.exception("agent.give_up_failed", service=service)
                return
            log.warning("agent.retry", service=service, error=str(exc), attempt=attempt + 1)
            await asyncio.sleep(RETRY_DELAYS_S[attempt])


async def dead_letter(service: str, msg: Any, error: str, attempts: int) -> None:
    """Park an event on the dead-letter topic with where it came from and why."""
    key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else str(msg.key or "")
    await emit(DLQ, key, envelope() | {
        "service": service, "original_topic": msg.topic, "original_partition": msg.partition,
        "original_offset": msg.offset, "original_key": msg.key, "original_value": msg.value,
        "error": error[:2000], "attempts": attempts,
    })


async def dead_letter_record(service: str, topic_name: str, key: str, value: bytes | None, error: str, attempts: int) -> None:
    """Park something that is not a consumed message (e.g. a webhook delivery that ran out of
    retries) on the dead-letter topic; partition and offset are -1."""
    await emit(DLQ, key, envelope() | {
        "service": service, "original_topic": settings.topic(topic_name), "original_partition": -1,
        "original_offset": -1, "original_key": key.encode(), "original_value": value,
        "error": error[:2000], "attempts": attempts,
    })


# Register the agents (import for their side effect on `app`).
from processors import notifications, quota, status, validation  # noqa: E402,F401
