"""The consumer-group runner: takes jobs from ``job.queued`` one at a time.

Commit discipline: a job's offset is committed only after its output is in S3 and its
completion event is acknowledged by the broker (``JobRunner.run`` returns only then). While
a job runs, every assigned partition is paused and the loop keeps polling, so the consumer
stays in its group however long the job takes, with a bounded ``max.poll.interval.ms``.
A revoked partition or SIGTERM cancels the running job without committing, so the job is
redelivered to another member.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from gpu_consumers.engine.errors import JobCancelled
from gpu_consumers.job import JobRunner
from schemas import serde
from schemas.topics import DLQ, JOB_QUEUED, schema_by_topic
from tapmask.events import EventProducer, envelope, job_failed
from schemas.topics import JOB_COMPLETED
from tapmask.settings import Settings
from tapmask.storage import s3_client

log = structlog.get_logger()


def consumer_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    """librdkafka settings of a GPU consumer: manual commits only, short session timeout."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.consumer_group,
        "client.id": worker_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        "max.poll.interval.ms": settings.kafka_max_poll_interval_ms,
    }


class ConsumerRunner:
    """One member of the GPU consumer group."""

    def __init__(self, settings: Settings, idle_timeout_s: float | None = None) -> None:
        self.settings = settings
        self.worker_id = f"gpu-{socket.gethostname()}-{os.getpid()}"
        self.idle_timeout_s = idle_timeout_s
        self.producer = EventProducer(settings)
        self.jobs = JobRunner(settings, s3_client(settings), self.producer, self.worker_id)
        self.consumer = Consumer(consumer_config(settings, self.worker_id))
        self.stopping = threading.Event()
        self.cancel_job = threading.Event()
        self.current: tuple[Message, Future[Any]] | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self.jobs_done = 0

    # ---- group membership ---------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("consumer.assigned", partitions=[p.partition for p in partitions])
        if self.current is not None:  # busy: new partitions wait until the job is done
            consumer.pause(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.current is not None:
            msg = self.current[0]
            if any(p.topic == msg.topic() and p.partition == msg.partition() for p in partitions):
                log.warning("job.partition_revoked", partition=msg.partition())
                self.cancel_job.set()
                self._wait_current()

    def request_stop(self, *_: Any) -> None:
        """Stop soon: cancel the running job (uncommitted, so it is redelivered) and leave."""
        self.stopping.set()
        self.cancel_job.set()

    # ---- main loop ----------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped or idle for ``idle_timeout_s``; returns the jobs completed."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.consumer.subscribe([self.settings.topic(JOB_QUEUED)], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                msg = self.consumer.poll(0.2)
                if self.current is not None:
                    if msg is not None and not msg.error():
                        # Fetched before the pause took effect: rewind so it is read again later.
                        self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                    if self.current[1].done():
                        self._finish_current()
                        last_activity = time.monotonic()
                    continue
                if msg is None:
                    if self.idle_timeout_s and time.monotonic() - last_activity > self.idle_timeout_s:
                        log.info("consumer.idle_exit", idle_s=self.idle_timeout_s)
                        break
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer.error", error=str(msg.error()))
                    continue
                self._start(msg)
                last_activity = time.monotonic()
        finally:
            if self.current is not None:
                self.cancel_job.set()
                self._wait_current()
            self.consumer.close()  # leaves the group at once: partitions move without waiting
            self.producer.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
        return self.jobs_done

    def _start(self, msg: Message) -> None:
        self.consumer.pause(self.consumer.assignment())
        self.cancel_job.clear()
        try:
            spec = serde.decode(schema_by_topic()[JOB_QUEUED], msg.value())
        except serde.SerdeError as exc:
            self._dead_letter(msg, f"undecodable job: {exc}")
            self._commit_and_resume(msg)
            return
        log.info("job.start", job_id=spec["job_id"], partition=msg.partition(), offset=msg.offset())
        self.current = (msg, self.pool.submit(self.jobs.run, spec, self.cancel_job))
        self.current_spec = spec

    def _wait_current(self) -> None:
        if self.current is not None:
            try:
                self.current[1].result()
            except BaseException:
                pass
            self.current = None

    def _finish_current(self) -> None:
        assert self.current is not None
        msg, fut = self.current
        self.current = None
        try:
            fut.result()
        except JobCancelled:
            log.warning("job.cancelled", offset=msg.offset())
            return  # not committed: the job is redelivered
        except Exception as exc:  # noqa: BLE001 - anything else fails the job, readable
            log.exception("job.failed")
            spec = self.current_spec
            self.producer.publish(JOB_COMPLETED, spec["job_id"], job_failed(spec, "internal_error", f"processing failed: {exc}", spec["attempt"]))
            self._dead_letter(msg, repr(exc))
        self.jobs_done += 1
        self._commit_and_resume(msg)

    def _commit_and_resume(self, msg: Message) -> None:
        self.consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)], asynchronous=False)
        self.consumer.resume(self.consumer.assignment())

    def _dead_letter(self, msg: Message, error: str) -> None:
        self.producer.publish(DLQ, (msg.key() or b"").decode("utf-8", "replace"), envelope() | {
            "service": "gpu_consumer", "original_topic": msg.topic(), "original_partition": msg.partition(),
            "original_offset": msg.offset(), "original_key": msg.key(), "original_value": msg.value(),
            "error": error[:2000], "attempts": 1,
        })
