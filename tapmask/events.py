"""Building and publishing TapMask events: the envelope fields and one Avro-encoding producer."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import KafkaException, Producer

from schemas import serde
from schemas.topics import schema_by_topic
from tapmask.settings import Settings


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (Avro timestamp-millis)."""
    return int(time.time() * 1000)


def envelope(correlation_id: str | None = None) -> dict[str, Any]:
    """The fields every event starts with: a fresh event id, the time, the correlation id."""
    return {"event_id": uuid.uuid4().hex, "occurred_at": now_ms(), "correlation_id": correlation_id}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka producer settings: idempotent, acks=all (DESIGN: at least once, no duplicates
    from producer retries)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": settings.kafka_client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # The Java client's murmur2 (librdkafka's default is CRC32): the same key goes to the same
        # partition whoever produces it, librdkafka here or aiokafka in the Faust worker, so a job's
        # events stay co-partitioned with the status agent's table across workers.
        "partitioner": "murmur2_random",
    }
    conf.update(overrides)
    return conf


class EventProducer:
    """Encodes events with the schema of their topic and produces them.

    ``publish`` waits until the broker has acknowledged the event (or raises), so callers
    can rely on "returned" meaning "durable on the broker".
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._producer = Producer(producer_config(settings, **overrides))
        self._lock = threading.Lock()

    def publish(self, topic: str, key: str, record: dict[str, Any] | None, timeout_s: float = 30.0) -> None:
        """Produce one event (``record=None`` writes a tombstone) and wait for its ack."""
        self.publish_many([(topic, key, record)], timeout_s=timeout_s)

    def publish_many(
        self, items: list[tuple[str, str, dict[str, Any] | None]], timeout_s: float = 30.0
    ) -> None:
        """Produce several events and wait until every one is acknowledged."""
        errors: list[str] = []
        pending = [len(items)]

        def on_delivery(err: Any, _msg: Any) -> None:
            pending[0] -= 1
            if err is not None:
                errors.append(str(err))

        with self._lock:
            for topic, key, record in items:
                schema = schema_by_topic()[topic]
                value = None if record is None else serde.encode(schema, record)
                self._producer.produce(
                    self._settings.topic(topic),
                    key=key.encode(),
                    value=value,
                    headers=[(serde.HEADER_SCHEMA, schema.encode())],
                    on_delivery=on_delivery,
                )
            deadline = time.monotonic() + timeout_s
            while pending[0] > 0 and time.monotonic() < deadline:
                self._producer.poll(0.05)
        if errors:
            raise KafkaException(f"delivery failed: {errors[0]}")
        if pending[0] > 0:
            raise TimeoutError(f"{pending[0]} event(s) not acknowledged within {timeout_s:.0f}s")

    def close(self) -> None:
        """Flush what is left."""
        self._producer.flush(10)


def job_failed(job: dict[str, Any], error_code: str, error: str, attempt: int = 1) -> dict[str, Any]:
    """A ``job.completed`` event that fails ``job`` (any event with job_id, video_id, owner_id)."""
    return envelope(job.get("correlation_id")) | {
        "job_id": job["job_id"], "video_id": job.get("video_id"), "owner_id": job["owner_id"],
        "attempt": attempt, "outcome": "failed", "error_code": error_code, "error": error,
        "output_bucket": None, "output_key": None, "masks_key": None, "frames": 0, "timings": {},
    }
