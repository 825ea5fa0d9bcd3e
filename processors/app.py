"""The Faust app every TapMask agent lives in, and the Avro-aware way agents emit events.

Topics are read and written as raw bytes and (de)serialised with ``schemas.serde``, the same
code the other services use. Delivery is at least once (Faust's exactly_once has open bugs,
DESIGN.md); every agent is idempotent. Faust's own topics (table changelogs) are created by
Faust; ours come from infra/topics.toml and are never re-declared here.

Failures never hold a partition (retries: 2 s, x2, 3 attempts in all; ``processors.retry``).
Each agent declares at import what it does with a topic's events, ``handler(service, topic,
run, on_give_up)``, and runs every event through ``guarded``:

* an undecodable event goes straight to ``tapmask.dlq.v1``;
* when ``run`` raises, the event is *parked*: a ``RetryEvent`` on ``tapmask.retry.v1`` (the
  original topic, partition, offset, key and bytes, the error, the attempt to make and its
  not-before time) is produced without waiting for the ack, and the agent goes on with the
  next event of the partition at once. Faust flushes the producer before it commits the
  original offset, so the parked copy exists before the original is given up (at least once).
* ``run_retries``, an agent of the same app, reads the retry topic. The handler is found by
  (service, original topic) in the registry, so a retried event runs exactly the code its
  first attempt ran (segment.requested, for one, has two: validation's and status's). A due
  event runs at once; one that is not yet due gets an asyncio timer task and the agent reads
  on, so the retry topic never waits in line either; there is no ordering among retries
  (handlers are idempotent and the status fold is order-independent, so a late re-run is
  safe). A failed retry parks the event again with the next attempt, until the third
  failure: then the event goes to the dead-letter topic with the reason and the handler's
  ``on_give_up`` runs (e.g. the job fails with a reason a person can read).
* A retry record is acked by hand when its attempt is over, and Faust commits a partition's
  offsets only up to the first unacked one: a worker that dies with parked events leaves
  them to be read again. At a rebalance Faust waits for unacked events, i.e. at most the
  4 s backoff.
* Retry records keep their event's partition number (the inputs an agent retries have the
  retry topic's 8 partitions): Faust shards a table by the partition of the event being
  processed, and the timer task inherits that retry event as Faust's current event, so a
  retried handler writes its tables to the changelog partition the first attempt would have.
* A retried handler can run while the agent processes later events of the same key, so a
  handler never awaits between reading a table entry and writing it back.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import faust
import structlog
from faust.serializers import codecs
from mode.utils.objects import cached_property

from schemas import serde
from schemas.topics import DLQ, RETRY, load_topic_specs, schema_by_topic
from processors import retry, transport
from tapmask.events import envelope, now_ms
from tapmask.logs import configure_logging
from tapmask.settings import get_settings

settings = get_settings()
configure_logging(settings, "processors")  # structlog filters below the log level (no per-event debug lines)
log = structlog.get_logger()
_partitions = {t.name: t.partitions for t in load_topic_specs()}


class App(faust.App):
    """faust.App on the aiokafka transport with a configurable fetch wait, and a flow control
    that keeps the streams' buffered events when a running flow is resumed (processors/transport.py)."""

    def _new_transport(self):  # type: ignore[no-untyped-def]
        return transport.Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> transport.FlowControl:
        return transport.FlowControl(loop=self.loop)


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
    """Table keys and values as JSON (quota counts, video metadata)."""
    return faust.Schema(key_type=str, value_type=None, key_serializer="json", value_serializer="json")


class AvroCodec(codecs.Codec):
    """A Faust codec for the values of one of our topics: ``schemas.serde`` (Avro single-object
    encoding; any released writer schema is read into the current one), as every service reads them."""

    def __init__(self, schema: str, children: Any = None) -> None:
        super().__init__(children=children, schema=schema)  # kwargs: what clone() passes on

    def _dumps(self, record: Any) -> bytes:
        return serde.encode(self.kwargs["schema"], record)

    def _loads(self, data: bytes) -> Any:
        return serde.decode(self.kwargs["schema"], data)


class PublishedTable(faust.Table):
    """A table whose changelog is one of our own topics, and whose records the owning agent writes.

    The topic's event *is* the changelog record: the agent sets an entry (with no await between
    reading and writing it, the usual rule) and then ``publish``-es it, one record per change
    instead of Faust's changelog record plus the agent's event. Faust still treats the topic as
    this table's changelog: it rebuilds the table from it at start and after a rebalance (a null
    value, e.g. the API's tombstone, removes the entry), and its assignor gives a worker the same
    partition numbers of the topic as of the agent's inputs, so the topic has their partition
    count (Faust checks). ``publish`` writes to the partition of the event being processed, as a
    Faust changelog does; the inputs are keyed like the table and every producer partitions with
    murmur2, so that is also the key's partition, where a compacted topic needs each key.

    What Faust's own changelog would add and this does not: a persistent store's record of the
    offsets it holds (``on_changelog_sent``); with the memory store the table always rebuilds from
    the start of the topic, as it did from its own changelog.
    """

    topic_name: str = ""  # logical name of the changelog topic (schemas.topics)

    def on_key_set(self, key: Any, value: Any) -> None:
        self._sensor_on_set(self, key, value)  # no Faust changelog record: ``publish`` writes it

    def on_key_del(self, key: Any) -> None:
        self._sensor_on_del(self, key)

    async def publish(self, key: str) -> None:
        """Produce ``key``'s entry (a tombstone when it has none) as its changelog record, without
        waiting for the ack (Faust flushes the producer before it commits the input's offset)."""
        await emit(self.topic_name, key, self.data.get(key), wait=False, partition=self.partition_for_key(key))


def published_table(name: str, topic_name: str) -> PublishedTable:
    """A ``PublishedTable`` whose changelog is our topic ``topic_name`` (keys: the Kafka key as
    text; values: the topic's Avro records), which Faust never declares (infra/topics.toml does)."""
    value_codec = AvroCodec(schema_by_topic()[topic_name])
    changelog = app.topic(settings.topic(topic_name), key_type=str, value_type=None, key_serializer="raw",
                          value_serializer=value_codec, partitions=_partitions[topic_name], internal=False)
    table = PublishedTable(app, name=name, default=None, partitions=_partitions[topic_name], changelog_topic=changelog,
                           key_type=str, value_type=None, beacon=app.tables.beacon)
    table.topic_name = topic_name
    # Faust picks JSON for a str key type; these are only used should Faust itself send a record.
    table.key_serializer, table.value_serializer = "raw", value_codec
    return app.tables.add(table)  # type: ignore[return-value]


def decode(name: str, value: bytes) -> dict[str, Any]:
    """Decode an event read from topic ``name``."""
    return serde.decode(schema_by_topic()[name], value)


async def emit(name: str, key: str, record: dict[str, Any] | None, wait: bool = True,
               partition: int | None = None) -> None:
    """Produce an event; with ``wait`` (default) return once the broker acknowledged it.

    ``partition`` overrides the partitioner (the retry topic keeps an event's partition).
    ``wait=False`` is for the hot path of agents: the record is buffered and this returns at
    once. That keeps at-least-once, because Faust flushes its producer (every buffered record
    acknowledged) before it commits the offsets of the events that caused them; a record the
    broker refuses is logged.

    The record goes straight to the app's producer, not through ``faust.Topic.send`` (its
    channel, future-message and sensor layers cost more than the Avro encoding, and these
    topics are never declared by Faust); the producer is the one Faust flushes before a commit.
    """
    real, schema, headers = _out(name)
    value = None if record is None else serde.encode(schema, record)
    fut = await app.producer.send(real, key.encode(), value, partition, None, headers)
    if wait:
        await fut  # resolves once the broker acknowledged the record
    else:
        fut.add_done_callback(_log_send_failure)


@lru_cache(maxsize=None)
def _out(name: str) -> tuple[str, str, list[tuple[str, bytes]]]:
    """Real topic name, schema name and the (shared, never mutated) headers of ``name``'s events."""
    schema = schema_by_topic()[name]
    return settings.topic(name), schema, [(serde.HEADER_SCHEMA, schema.encode())]


def _log_send_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("emit.failed", error=str(fut.exception()))


def stable_id(*parts: str) -> str:
    """A deterministic event id: the same logical event re-emitted after a crash keeps its id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "tapmask:" + ":".join(parts)).hex


GiveUpHook = Callable[[dict[str, Any], str], Awaitable[None]]


@dataclass(frozen=True)
class Handler:
    """What ``service`` does with each event of ``topic_name``: ``run`` (idempotent), and what
    ``on_give_up(record, reason)`` tells the user when every attempt failed."""

    service: str
    topic_name: str  # logical name (schemas.topics)
    run: Callable[[dict[str, Any]], Awaitable[None]]
    on_give_up: GiveUpHook | None = None


# (service, real topic name) -> handler: how the retry agent finds the handler of a parked event.
_HANDLERS: dict[tuple[str, str], Handler] = {}


def handler(service: str, topic_name: str, run: Callable[[dict[str, Any]], Awaitable[None]],
            on_give_up: GiveUpHook | None = None) -> Handler:
    """Declare (at import, so a fresh worker can retry events parked by another) the handler
    that ``service`` runs on ``topic_name``'s events, first time and retries alike."""
    h = Handler(service, topic_name, run, on_give_up)
    slot = (service, settings.topic(topic_name))
    if slot in _HANDLERS:
        raise ValueError(f"{service} already has a handler for {topic_name}")
    _HANDLERS[slot] = h
    return h


@dataclass(frozen=True)
class _Origin:
    """Where a consumed event came from (what the retry and dead-letter records carry)."""

    topic: str  # real topic name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def key_text(self) -> str:
        """The key as the retry and dead-letter records are keyed."""
        return self.key.decode("utf-8", "replace") if isinstance(self.key, bytes) else str(self.key or "")

    def fields(self) -> dict[str, Any]:
        """The ``original_*`` fields that retry and dead-letter records share."""
        return {"original_topic": self.topic, "original_partition": self.partition, "original_offset": self.offset,
                "original_key": self.key, "original_value": self.value}


async def guarded(h: Handler, event: Any) -> None:
    """Decode ``event`` and run ``h`` on it; a failure never holds the partition.

    An undecodable event goes straight to the dead-letter topic. A failing handler parks the
    event on the retry topic (attempt 2, due 2 s later) and returns at once: the partition
    moves on, and the retry agent runs the same handler when the event is due.
    """
    msg = event.message
    try:
        record = decode(h.topic_name, msg.value)
    except serde.SerdeError as exc:
        await _dead_letter_origin(h.service, _origin(msg), f"undecodable event: {exc}", attempts=1)
        return
    try:
        await h.run(record)
    except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered
        await _failed(h, _origin(msg), record, 1, exc)


def _origin(msg: Any) -> _Origin:
    return _Origin(msg.topic, msg.partition, msg.offset, msg.key, msg.value)


async def _failed(h: Handler, origin: _Origin, record: dict[str, Any], attempt: int, exc: Exception) -> None:
    """Attempt ``attempt`` of ``h`` on this event raised ``exc``: park it for the next attempt,
    or, when none is left, dead-letter it and run ``on_give_up``."""
    reason = f"{type(exc).__name__}: {exc}"
    now = now_ms()
    step = retry.after_failure(attempt, now)
    if isinstance(step, retry.Retry):
        log.warning("agent.retry_parked", service=h.service, topic=origin.topic, partition=origin.partition,
                    offset=origin.offset, failed_attempt=attempt, error=reason[:500])
        await emit(RETRY, origin.key_text, envelope(record.get("correlation_id")) | origin.fields() | {
            "event_id": stable_id("retry", origin.topic, str(origin.partition), str(origin.offset), str(step.attempt)),
            "service": h.service, "occurred_at": now, "error": reason[:2000], "attempt": step.attempt, "not_before": step.not_before_ms,
        }, wait=False, partition=retry.retry_partition(origin.partition, _partitions[RETRY]))
        return
    log.error("agent.dead_letter", service=h.service, topic=origin.topic, partition=origin.partition,
              offset=origin.offset, attempts=step.attempts, error=reason[:500], exc_info=exc)
    await _dead_letter_origin(h.service, origin, reason, attempts=step.attempts)
    if h.on_give_up is not None:
        try:
            await h.on_give_up(record, reason)
        except Exception:  # noqa: BLE001 - the event is parked already
            log.exception("agent.give_up_failed", service=h.service)


MAX_PARKED = 10_000  # retries held in memory at once by one worker; beyond, the retry agent waits


@app.agent(topic(RETRY))
async def run_retries(stream):  # type: ignore[no-untyped-def]
    """Run each parked event's handler again once it is due, without waiting in line for it.

    A due event runs at once; one not yet due is handed to a timer task (which inherits this
    event as Faust's current event, so table writes go where they belong) and the agent reads
    on. Events are acked by hand when their attempt is over: Faust commits a partition's
    offsets only up to the first one still waiting, so a worker that dies with parked events
    leaves them to be read again.
    """
    acking = stream.noack()
    parked: set[asyncio.Task[None]] = set()
    async for event in acking.events():
        try:
            parked_event = serde.decode(schema_by_topic()[RETRY], event.value)
        except serde.SerdeError as exc:
            await _dead_letter_origin("retry", _origin(event.message), f"undecodable retry event: {exc}", attempts=1)
            await acking.ack(event)
            continue
        delay = retry.wait_s(parked_event["not_before"], now_ms())
        if delay <= 0:
            await _retry(parked_event, event, acking)
            continue
        while len(parked) >= MAX_PARKED:
            await asyncio.wait(parked, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(_retry_later(delay, parked_event, event, acking))
        parked.add(task)
        task.add_done_callback(parked.discard)


async def _retry_later(delay_s: float, parked: dict[str, Any], event: Any, acking: Any) -> None:
    await asyncio.sleep(delay_s)
    await _retry(parked, event, acking)


async def _retry(parked: dict[str, Any], event: Any, acking: Any) -> None:
    """One retry attempt of a parked event; its retry record is acked whatever happens."""
    origin = _Origin(parked["original_topic"], parked["original_partition"], parked["original_offset"],
                     parked["original_key"], parked["original_value"])
    try:
        h = _HANDLERS.get((parked["service"], parked["original_topic"]))
        if h is None:
            await _dead_letter_origin(parked["service"], origin, f"no handler of {parked['service']} for "
                                      f"{parked['original_topic']} any more; last error: {parked['error']}",
                                      attempts=parked["attempt"] - 1)
            return
        try:
            record = decode(h.topic_name, parked["original_value"])
        except serde.SerdeError as exc:
            await _dead_letter_origin(h.service, origin, f"undecodable event: {exc}", attempts=parked["attempt"] - 1)
            return
        log.info("agent.retry", service=h.service, topic=origin.topic, offset=origin.offset, attempt=parked["attempt"])
        try:
            await h.run(record)
        except Exception as exc:  # noqa: BLE001 - retried again or dead-lettered
            await _failed(h, origin, record, parked["attempt"], exc)
    except Exception:  # noqa: BLE001 - e.g. the broker refused the next record: logged, not retried
        log.exception("agent.retry_crashed", service=parked["service"], topic=origin.topic, offset=origin.offset)
    finally:
        await acking.ack(event)


async def _dead_letter_origin(service: str, origin: _Origin, error: str, attempts: int) -> None:
    await emit(DLQ, origin.key_text, envelope() | origin.fields() | {
        "service": service, "error": error[:2000], "attempts": attempts,
    })


async def dead_letter_record(service: str, topic_name: str, key: str, value: bytes | None, error: str, attempts: int) -> None:
    """Park something that is not a consumed message (e.g. a webhook delivery that ran out of
    retries) on the dead-letter topic; partition and offset are -1."""
    await _dead_letter_origin(service, _Origin(settings.topic(topic_name), -1, -1, key.encode(), value), error, attempts)


# Register the agents (import for their side effect on `app`).
from processors import notifications, quota, status, validation  # noqa: E402,F401
