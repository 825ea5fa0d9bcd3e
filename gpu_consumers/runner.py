"""The consumer-group runner: takes jobs from ``job.queued`` one at a time.

Commit discipline: a job's offset is committed only after its output is in S3 and its
completion event is acknowledged by the broker (``JobRunner.run`` returns only then; a
failed job's completion and dead-letter record are acknowledged first too), and a HEAD of
the output object confirms it just before the commit. Commits are synchronous and manual
(``enable.auto.commit=false``); each can be appended to an audit log (``consumer_commit_log``)
with the time it started and that HEAD's answer.

Membership during long jobs: the job runs in a worker thread; the main thread pauses every
assigned partition and keeps calling ``poll`` every 0.2 s. librdkafka heartbeats from its own
thread (``session.timeout.ms`` detects a dead process), and the steady polls keep
``max.poll.interval.ms`` (a bounded 5 minutes) from ever expiring however long the job
takes, so the group never evicts a live worker and never needs an unbounded poll interval.
A message fetched before the pause took effect is rewound (``seek``) and read again later.

Resuming at once: librdkafka's fetcher (one thread per broker) does not notice ``resume()``
until its loop next wakes, and with every partition paused nothing wakes it but its 1-second
idle timer (librdkafka's ``rd_kafka_max_block_ms``, not configurable; ``fetch.wait.max.ms``
and the fetch backoffs play no part): every job waited up to 1 s (0.89 s median on the bench)
before its first message. After a commit the runner therefore also seeks the job's partition
to the offset it just committed, where that partition resumes anyway: a seek moves the
partition's fetch state to active, which wakes its leader's fetcher, and the fetch goes out
at once. Nothing is skipped or re-read (the seek is only made after a successful commit).

Pause flags: librdkafka keeps an application-paused partition paused across a rebalance,
even one that takes it away and gives it back, so every revoke resumes the partitions it
takes (``_on_revoke``); a consumer that was busy during a rebalance would otherwise keep
its old partitions paused for good and their jobs would never run.

Cancellation, never committing: a revoked partition (rebalance), SIGTERM, or a spot notice
from the instance-metadata endpoint stops the running job between frames. The consumer then
publishes an ``interrupted`` progress event for that attempt (and, for SIGTERM or spot, a
``job.interrupted`` notification), and on SIGTERM/spot leaves the group at once with
``close()`` (LeaveGroup): the group rebalances immediately and another member picks the job
up from the last committed offset, without waiting for the session timeout. No static
membership (``group.instance.id``): it would hold the partitions for the session timeout.

Failures that end a job (permanent, or retries exhausted) are published as ``failed`` with
a readable reason, recorded on the dead-letter topic, then committed: the partition flows on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from gpu_consumers.engine.errors import JobCancelled
from gpu_consumers.job import JobContext, JobRunner, Outcome, output_key, stable_id
from gpu_consumers.ledger import JobLedger
from gpu_consumers.spot import SpotWatcher
from schemas import serde
from schemas.topics import DLQ, JOB_PROGRESS, JOB_QUEUED, NOTIFICATION, schema_by_topic
from tapmask.events import EventProducer, envelope, now_ms
from tapmask.settings import Settings
from tapmask.storage import s3_client

log = structlog.get_logger()

POLL_S = 0.2  # idle: how long one poll waits for a message
BUSY_POLL_S = 0.05  # busy: how soon a finished job is noticed (polls also serve the group)


def consumer_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    """librdkafka settings of a GPU consumer: manual commits only, short session timeout,
    bounded poll interval, no static membership."""
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
        # After a job the partitions are resumed and fetched afresh: do not let the broker
        # hold that fetch for librdkafka's default 500 ms.
        "fetch.wait.max.ms": settings.consumer_fetch_wait_max_ms,
    } | json.loads(settings.consumer_kafka_config_json or "{}")


@dataclass
class Busy:
    """The job being worked on: its message, context and future."""

    msg: Message
    job: JobContext
    future: Future[Outcome]

    def on(self, partitions: list[TopicPartition]) -> bool:
        return any(p.topic == self.msg.topic() and p.partition == self.msg.partition() for p in partitions)


class ConsumerRunner:
    """One member of the GPU consumer group."""

    def __init__(self, settings: Settings, idle_timeout_s: float | None = None, *,
                 jobs: JobRunner | None = None, consumer: Any | None = None,
                 producer: EventProducer | None = None, ledger: JobLedger | None = None) -> None:
        self.settings = settings
        self.worker_id = f"gpu-{socket.gethostname()}-{os.getpid()}"
        self.idle_timeout_s = idle_timeout_s
        self.producer = producer or EventProducer(settings)
        self.ledger = ledger or JobLedger(settings.redis_url)
        self.jobs = jobs or JobRunner(settings, s3_client(settings), self.producer, self.worker_id, self.ledger)
        self.consumer = consumer or Consumer(consumer_config(settings, self.worker_id))
        self.stopping = threading.Event()
        self.cancel_job = threading.Event()
        self.stop_reason: str | None = None
        self._cancel_reason: str | None = None
        self.spot_notice: dict | None = None
        self.busy: Busy | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self.jobs_done = 0
        self.commits = 0

    # ---- group membership ---------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("consumer.assigned", partitions=sorted(p.partition for p in partitions))
        if self.busy is not None:  # new partitions wait until the job is done
            consumer.assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("consumer.revoked", partitions=sorted(p.partition for p in partitions))
        busy = self.busy
        if busy is not None and busy.on(partitions):
            log.warning("job.partition_revoked", job_id=busy.job.job_id, partition=busy.msg.partition())
            self._cancel(self.stop_reason or "revoked")
            self._settle(busy, revoking=True)
        # librdkafka keeps the application's pause flag on a partition across unassign and a
        # later assign (only its own pause is reset): a partition paused for a job, revoked,
        # and given back to this consumer would never be fetched again, and its jobs would
        # wait forever. Clear the flag while the partitions are still ours.
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("consumer.resume_on_revoke_failed", error=str(exc))

    def request_stop(self, reason: str = "stopping") -> None:
        """Stop soon: cancel the running job (uncommitted, so it is redelivered) and leave."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopping.set()
        self.cancel_job.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.request_stop("sigterm" if signum == signal.SIGTERM else "stopping")

    def _on_spot(self, notice: dict) -> None:
        self.spot_notice = notice
        self.request_stop("spot")

    def _cancel(self, reason: str) -> None:
        self._cancel_reason = self._cancel_reason or reason
        self.cancel_job.set()

    # ---- main loop ----------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped or idle for ``idle_timeout_s``; returns the jobs finished."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        watcher = None
        if self.settings.spot_metadata_url:
            watcher = SpotWatcher(self.settings.spot_metadata_url, self.settings.spot_poll_interval_s, self._on_spot).start()
        self.consumer.subscribe([self.settings.topic(JOB_QUEUED)], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                msg = self.consumer.poll(BUSY_POLL_S if self.busy is not None else POLL_S)
                busy = self.busy
                if busy is not None:
                    if msg is not None and not msg.error():
                        # Fetched before the pause took effect: rewind so it is read again later.
                        self._rewind(msg)
                    if busy.future.done():
                        self._settle(busy)
                        last_activity = time.monotonic()
                    continue
                if msg is None:
                    if self.idle_timeout_s and time.monotonic() - last_activity > self.idle_timeout_s:
                        log.info("consumer.idle_exit", idle_s=self.idle_timeout_s, jobs_done=self.jobs_done)
                        break
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer.error", error=str(msg.error()))
                    continue
                self._start(msg)
                last_activity = time.monotonic()
        finally:
            if watcher is not None:
                watcher.stop()
            busy = self.busy
            if busy is not None:
                self.cancel_job.set()
                self._settle(busy)
            t = time.monotonic()
            self.consumer.close()  # LeaveGroup: partitions move on at once
            log.info("consumer.left_group", reason=self.stop_reason or "idle", close_s=round(time.monotonic() - t, 3))
            self.producer.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
        return self.jobs_done

    def _start(self, msg: Message) -> None:
        self.consumer.pause(self.consumer.assignment())
        self.cancel_job.clear()
        self._cancel_reason = None
        try:
            spec = serde.decode(schema_by_topic()[JOB_QUEUED], msg.value())
        except serde.SerdeError as exc:
            log.error("job.undecodable", partition=msg.partition(), offset=msg.offset(), error=str(exc))
            committed = self._dead_letter(msg, f"undecodable job event: {exc}", 1) and \
                self._commit(msg, None, "undecodable")
            self._resume(msg if committed else None)
            return
        job = JobContext(spec)
        log.info("job.start", job_id=job.job_id, partition=msg.partition(), offset=msg.offset(), worker=self.worker_id)
        self.busy = Busy(msg, job, self.pool.submit(self.jobs.run, job, self.cancel_job))

    def _settle(self, busy: Busy, revoking: bool = False) -> None:
        """The job's future has ended (or is ending: wait): commit, or leave it uncommitted."""
        msg, job = busy.msg, busy.job
        try:
            outcome = busy.future.result()
        except JobCancelled:
            self.busy = None
            reason = self.stop_reason or self._cancel_reason or "cancelled"
            log.warning("job.cancelled", job_id=job.job_id, attempt=job.attempt, reason=reason, offset=msg.offset())
            self._report_interrupted(job, reason)
            if not revoking and not self.stopping.is_set():
                self._rewind(msg)  # still ours: run it again (a new attempt)
                self._resume()
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the broker refused the failed event
            self.busy = None
            log.exception("job.unfinished", job_id=job.job_id, error=str(exc))
            if not revoking and not self.stopping.is_set():
                time.sleep(min(5.0, self.settings.consumer_retry_backoff_s))
                self._rewind(msg)  # not committed: try again
                self._resume()
            return
        self.busy = None
        # A failed job (or the redelivery of one whose worker died, or whose dead-letter record
        # the broker refused, before the commit) is dead-lettered before it is committed.
        if outcome.dead_letter is not None:
            if not self._dead_letter(msg, outcome.dead_letter, max(job.tries, job.failures), job.spec):
                if not revoking:
                    self._rewind(msg)
                    self._resume()
                return
        self.jobs_done += 1
        committed = self._commit(msg, job, outcome.kind)
        if not revoking:
            self._resume(msg if committed else None)

    def _resume(self, committed: Message | None = None) -> None:
        """Resume every assigned partition; ``committed``: the message whose offset was just
        committed, whose partition is then sought to the committed offset to wake the fetcher
        (see the module's docstring: without it the fetch waits for a 1-second timer)."""
        if self.stopping.is_set():
            return
        self.consumer.resume(self.consumer.assignment())
        if committed is not None:
            try:
                self.consumer.seek(TopicPartition(committed.topic(), committed.partition(), committed.offset() + 1))
            except KafkaException as exc:  # partition no longer ours: nothing to wake
                log.info("consumer.wake_seek_skipped", partition=committed.partition(), error=str(exc))

    def _rewind(self, msg: Message) -> None:
        try:
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        except KafkaException as exc:  # partition no longer ours: its next owner reads it
            log.info("consumer.rewind_skipped", partition=msg.partition(), error=str(exc))

    # ---- commit ---------------------------------------------------------------------------
    def _output_evidence(self, job: JobContext) -> dict[str, Any] | None:
        """HEAD of the job's output object: its size and time, or None when it is missing."""
        bucket, key = job.spec["s3_bucket"], output_key(job.job_id)
        try:
            head = self.jobs.s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - 404 or S3 trouble: no proof, no commit
            log.error("job.output_unverified", job_id=job.job_id, key=key, error=str(exc))
            return None
        return {"key": key, "size": int(head["ContentLength"]), "etag": head.get("ETag", "").strip('"'),
                "last_modified_ms": int(head["LastModified"].timestamp() * 1000)}

    def _commit(self, msg: Message, job: JobContext | None, outcome: str) -> bool:
        """Commit the offset after ``msg`` (synchronously) and audit it; True when committed.

        A completed job is committed only when its output object is there (one HEAD): the
        order upload → completion → commit is the code's, and this check holds it even
        against a future bug. The audit line is written before the commit, with that proof.
        """
        evidence = None
        if job is not None and outcome in ("complete", "already_done") and job.completed:
            evidence = self._output_evidence(job)
            if evidence is None:
                self.ledger.reopen(job.job_id)
                self._rewind(msg)  # not committed: the job runs again
                return False
        tp = TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)
        started_ms = now_ms()
        if self.settings.consumer_commit_log:
            self._audit({
                "job_id": job.job_id if job else None, "attempt": job.attempt if job else None,
                "outcome": outcome, "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                "commit_started_ms": started_ms, "worker_id": self.worker_id, "output": evidence,
            })
        try:
            result = self.consumer.commit(offsets=[tp], asynchronous=False)
            errors = [str(p.error) for p in (result or []) if p.error]
            if errors:
                raise KafkaException(errors[0])
        except KafkaException as exc:
            # Not committed (e.g. the partition moved): the job's next owner runs it again;
            # its output and completion id are the same, so that only costs time.
            log.warning("consumer.commit_failed", partition=msg.partition(), offset=msg.offset(), error=str(exc))
            return False
        self.commits += 1
        log.info("job.committed", job_id=job.job_id if job else None, partition=msg.partition(),
                 offset=msg.offset(), outcome=outcome, commit_ms=now_ms() - started_ms)
        return True

    def _audit(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.settings.consumer_commit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write on an O_APPEND file: lines of several processes never interleave
        finally:
            os.close(fd)

    # ---- side events ----------------------------------------------------------------------
    def _report_interrupted(self, job: JobContext, reason: str) -> None:
        """``interrupted`` progress for the attempt, and a notification when this worker goes away."""
        if job.attempt == 0:
            return  # stopped before it began a try
        self.ledger.interrupted(job.job_id)
        spec = job.spec
        items: list[tuple[str, str, dict[str, Any] | None]] = [(JOB_PROGRESS, job.job_id, envelope(spec.get("correlation_id")) | {
            "job_id": job.job_id, "attempt": job.attempt, "state": "interrupted", "percent": 0.0,
            "frames_done": 0, "frames_total": int(spec["video"]["frame_count"]), "worker_id": self.worker_id,
            "message": f"stopped ({reason}); the job will run again on another worker",
        })]
        if reason in ("spot", "sigterm"):
            payload = {"reason": "spot_interruption" if reason == "spot" else "worker_terminated",
                       "attempt": job.attempt, "worker_id": self.worker_id, "notice": self.spot_notice}
            items.append((NOTIFICATION, spec["owner_id"], envelope(spec.get("correlation_id")) | {
                "event_id": stable_id(f"{job.job_id}:job.interrupted:{job.attempt}"),
                "kind": "job.interrupted", "user_id": spec["owner_id"], "job_id": job.job_id,
                "payload_json": json.dumps(payload),
            }))
        try:
            self.producer.publish_many(items, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001 - leaving matters more than reporting
            log.warning("job.interrupted_not_reported", job_id=job.job_id, error=str(exc))

    def _dead_letter(self, msg: Message, error: str, attempts: int, spec: dict[str, Any] | None = None) -> bool:
        """Record ``msg`` on the dead-letter topic; False when the broker did not take it."""
        try:
            self.producer.publish(DLQ, (msg.key() or b"").decode("utf-8", "replace"), envelope(
                spec.get("correlation_id") if spec else None) | {
                "service": "gpu_consumer", "original_topic": msg.topic(), "original_partition": msg.partition(),
                "original_offset": msg.offset(), "original_key": msg.key(), "original_value": msg.value(),
                "error": error[:2000], "attempts": max(1, attempts),
            })
            return True
        except Exception as exc:  # noqa: BLE001
            log.error("dlq.publish_failed", error=str(exc))
            return False
