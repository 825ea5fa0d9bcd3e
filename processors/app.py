"""The Faust app every TapMask agent lives in, and the Avro-aware way agents emit events.

Topics are read and written as raw bytes and (de)serialised with ``schemas.serde``, the same
code the other services use. Delivery is at least once (Faust's exactly_once has open bugs,
DESIGN.md); every agent is idempotent. Faust's own topics (table changelogs) are created by
Faust; ours come from infra/topics.toml and are never re-declared here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import faust

from schemas import serde
from schemas.topics import load_topic_specs, schema_by_topic
from tapmask.settings import get_settings

settings = get_settings()
_partitions = {t.name: t.partitions for t in load_topic_specs()}

app = faust.App(
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


def decode(name: str, value: bytes) -> dict[str, Any]:
    """Decode an event read from topic ``name``."""
    return serde.decode(schema_by_topic()[name], value)


async def emit(name: str, key: str, record: dict[str, Any] | None) -> None:
    """Produce an event and wait until the broker has acknowledged it."""
    schema = schema_by_topic()[name]
    value = None if record is None else serde.encode(schema, record)
    fut = await topic(name).send(key=key.encode(), value=value, headers={serde.HEADER_SCHEMA: schema.encode()})
    await fut  # resolves once the broker acknowledged the record


# Register the agents (import for their side effect on `app`).
from processors import quota, status, validation  # noqa: E402,F401
