"""The GPU consumer runner against in-memory fakes of Kafka and S3 that record one ordered
log of every side effect, so the tests can check the order: output uploaded → completion
acknowledged → offset committed; never a commit for a cancelled job."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gpu_consumers.backends import NoopBackend, SleepBackend
from gpu_consumers.engine.errors import JobCancelled, UndecodableVideo
from gpu_consumers.job import JobContext, JobRunner, ProgressReporter, output_key
from gpu_consumers.ledger import JobLedger
from gpu_consumers.runner import ConsumerRunner, consumer_config
from schemas import serde
from schemas.topics import DLQ, JOB_COMPLETED, JOB_PROGRESS, NOTIFICATION
from tapmask.settings import Settings

TOPIC = "tapmask.job.queued.v1"


class Msg:
    def __init__(self, partition: int, offset: int, value: bytes, key: bytes = b"k") -> None:
        self._p, self._o, self._v, self._k = partition, offset, value, key

    def topic(self) -> str: return TOPIC
    def partition(self) -> int: return self._p
    def offset(self) -> int: return self._o
    def key(self) -> bytes: return self._k
    def value(self) -> bytes: return self._v
    def error(self) -> None: return None


class TP:
    def __init__(self, topic: str, partition: int, offset: int = -1001) -> None:
        self.topic, self.partition, self.offset, self.error = topic, partition, offset, None


class FakeConsumer:
    """One partition per list of values; honours pause, seek, commit."""

    def __init__(self, log: list, partitions: dict[int, list[bytes]]) -> None:
        self.log, self.data = log, partitions
        self.pos = dict.fromkeys(partitions, 0)
        self.paused: set[int] = set()
        self.committed: dict[int, int] = {}
        self.assigned = False
        self.closed = False
        self.revoke_at: float | None = None

    def subscribe(self, topics, on_assign, on_revoke) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def assignment(self) -> list[TP]:
        return [TP(TOPIC, p) for p in self.data] if self.assigned else []

    def assign(self, parts) -> None:
        self.assigned = True

    def poll(self, timeout: float) -> Msg | None:
        if not self.assigned:
            self.assigned = True
            self.on_assign(self, self.assignment())
        if self.revoke_at is not None and time.monotonic() >= self.revoke_at:
            self.revoke_at = None
            self.on_revoke(self, self.assignment())
            # A new assignment fetches from the committed offsets. Like librdkafka (measured
            # on Tansu with librdkafka 2.16), the application's pause flag is NOT cleared.
            self.pos = {p: self.committed.get(p, 0) for p in self.data}
            self.on_assign(self, self.assignment())
        for p, values in self.data.items():
            if p not in self.paused and self.pos[p] < len(values):
                m = Msg(p, self.pos[p], values[self.pos[p]])
                self.pos[p] += 1
                return m
        time.sleep(min(timeout, 0.01))
        return None

    def pause(self, parts) -> None:
        self.paused |= {p.partition for p in parts}

    def resume(self, parts) -> None:
        self.paused -= {p.partition for p in parts}

    def seek(self, tp) -> None:
        self.pos[tp.partition] = tp.offset

    def commit(self, offsets, asynchronous: bool) -> list:
        for tp in offsets:
            self.committed[tp.partition] = tp.offset
            self.log.append(("commit", tp.partition, tp.offset))
        return offsets

    def close(self) -> None:
        self.closed = True
        self.log.append(("close",))


class FakeProducer:
    def __init__(self, log: list) -> None:
        self.log = log
        self.events: list[tuple[str, dict]] = []

    def publish(self, topic: str, key: str, record: dict | None, timeout_s: float = 30.0) -> None:
        self.publish_many([(topic, key, record)])

    def publish_many(self, items, timeout_s: float = 30.0) -> None:
        for topic, _key, record in items:
            serde.encode({JOB_PROGRESS: "JobProgress", JOB_COMPLETED: "JobCompleted", DLQ: "DeadLetter",
                          NOTIFICATION: "Notification"}[topic], record)  # schema-valid
            self.events.append((topic, record))
            self.log.append(("ack", topic, record.get("job_id"), record.get("state") or record.get("outcome")))

    def close(self) -> None:
        pass

    def of(self, topic: str) -> list[dict]:
        return [r for t, r in self.events if t == topic]


class S3NotFound(Exception):
    """What botocore raises for a missing key, as far as the consumer looks at it."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.response = {"Error": {"Code": "404", "Message": "Not Found"}}


class FakeS3:
    def __init__(self, log: list, fail_uploads: int = 0) -> None:
        self.log, self.objects, self.fail_uploads = log, {"uploads/v/source": b"video"}, fail_uploads

    def download_file(self, bucket: str, key: str, path: str) -> None:
        Path(path).write_bytes(b"video")

    def upload_file(self, path: str, bucket: str, key: str, ExtraArgs=None) -> None:  # noqa: N803
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise ConnectionError("S3 hiccup")
        self.objects[key] = Path(path).read_bytes()
        self.log.append(("upload", key))

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        import datetime

        if Key not in self.objects:
            raise S3NotFound(Key)
        return {"ContentLength": len(self.objects[Key]), "ETag": '"x"', "LastModified": datetime.datetime.now(datetime.UTC)}


def spec(job_id: str, frames: int = 10) -> dict[str, Any]:
    return {
        "event_id": "e" + job_id, "occurred_at": 0, "correlation_id": None, "job_id": job_id, "video_id": "v",
        "owner_id": "u", "tier": "pro", "points": [{"x": 1.0, "y": 1.0, "frame": 0, "label": 1}], "box": None,
        "mode": "blur", "options": {"margin_px": 4, "blur_kernel": 31, "export_masks": False}, "s3_bucket": "b",
        "video_key": "uploads/v/source", "video": {"container": "mp4", "codec": "h264", "width": 16, "height": 16,
        "fps_num": 25, "fps_den": 1, "frame_count": frames, "duration_s": 0.4, "rotation": 0, "has_audio": False,
        "audio_codec": None}, "max_output_height": None, "attempt": 1,
    }


def encoded(job_id: str) -> bytes:
    return serde.encode("JobSpec", spec(job_id))


class Failing(NoopBackend):
    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)

    def process(self, src, dst, job, progress, should_cancel):
        if self.errors:
            raise self.errors.pop(0)
        return super().process(src, dst, job, progress, should_cancel)


SETTINGS = Settings(consumer_retry_backoff_s=0.01, progress_interval_s=0.05, spot_metadata_url="")


def make(partitions: dict[int, list[bytes]], backend=None, s3_fail: int = 0, idle: float | None = 0.5, **over: Any):
    log: list = []
    settings = SETTINGS.model_copy(update=over)
    consumer, producer, s3 = FakeConsumer(log, partitions), FakeProducer(log), FakeS3(log, s3_fail)
    ledger = JobLedger(None)
    jobs = JobRunner(settings, s3, producer, "w1", ledger, backend or NoopBackend())
    runner = ConsumerRunner(settings, idle_timeout_s=idle, jobs=jobs, consumer=consumer, producer=producer, ledger=ledger)
    return runner, consumer, producer, s3, log


def test_commit_only_after_output_and_completion_ack() -> None:
    runner, consumer, producer, s3, log = make({0: [encoded("a"), encoded("b")], 1: [encoded("c")]})
    assert runner.run() == 3
    assert consumer.committed == {0: 2, 1: 1} and consumer.closed
    for job in "abc":
        upload = log.index(("upload", output_key(job)))
        ack = next(i for i, e in enumerate(log) if e[:4] == ("ack", JOB_COMPLETED, job, "complete"))
        commits = [i for i, e in enumerate(log) if e[0] == "commit"]
        assert upload < ack < min(i for i in commits if i > ack)
    # no commit ever precedes the first completion ack
    first_ack = next(i for i, e in enumerate(log) if e[:2] == ("ack", JOB_COMPLETED))
    assert all(i > first_ack for i, e in enumerate(log) if e[0] == "commit")
    done = producer.of(JOB_COMPLETED)
    assert {d["job_id"] for d in done} == {"a", "b", "c"} and all(d["attempt"] == 1 for d in done)


def test_progress_has_stage_percent_and_attempt_and_never_goes_back() -> None:
    runner, _c, producer, _s3, _log = make({0: [encoded("a")]}, backend=SleepBackend(0.4))
    runner.run()
    progress = producer.of(JOB_PROGRESS)
    assert len(progress) >= 4  # heartbeat + engine callbacks every 0.05 s over 0.4 s
    assert [p["state"] for p in progress][0] == "extracting" and progress[-1]["state"] == "encoding"
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents) and all(p["attempt"] == 1 for p in progress)


def test_permanent_failure_is_failed_dead_lettered_committed_and_the_partition_flows() -> None:
    backend = Failing([UndecodableVideo("The file is not a video we can decode.")])
    runner, consumer, producer, _s3, log = make({0: [encoded("poison"), encoded("next")]}, backend=backend)
    runner.run()
    failed, ok = producer.of(JOB_COMPLETED)
    assert failed["outcome"] == "failed" and failed["error"] == "The file is not a video we can decode."
    assert failed["error_code"] == "undecodable_video"
    assert ok["job_id"] == "next" and ok["outcome"] == "complete"
    (dlq,) = producer.of(DLQ)
    assert dlq["original_offset"] == 0 and "decode" in dlq["error"]
    assert consumer.committed == {0: 2}
    assert log.index(("ack", DLQ, None, None)) < log.index(("commit", 0, 1))


def test_retryable_failures_back_off_then_succeed_with_growing_attempts() -> None:
    runner, consumer, producer, _s3, _log = make({0: [encoded("a")]}, s3_fail=2)
    runner.run()
    (done,) = producer.of(JOB_COMPLETED)
    assert done["outcome"] == "complete" and done["attempt"] == 3
    assert sorted({p["attempt"] for p in producer.of(JOB_PROGRESS)}) == [1, 2, 3]
    assert consumer.committed == {0: 1} and not producer.of(DLQ)


def test_retries_exhausted_fail_with_a_readable_reason_and_a_dead_letter() -> None:
    runner, consumer, producer, _s3, _log = make({0: [encoded("a"), encoded("b")]}, s3_fail=3)
    runner.run()
    failed = producer.of(JOB_COMPLETED)[0]
    assert failed["outcome"] == "failed" and failed["attempt"] == 3 and failed["error_code"] == "retries_exhausted"
    assert "S3 hiccup" in failed["error"] and "repeated" in failed["error"]
    assert producer.of(DLQ)[0]["attempts"] == 3
    assert producer.of(JOB_COMPLETED)[1]["outcome"] == "complete"
    assert consumer.committed == {0: 2}


def test_out_of_memory_retries_smaller() -> None:
    scales = []

    class Oom(NoopBackend):
        def process(self, src, dst, job, progress, should_cancel):
            scales.append(job.scale)
            if len(scales) == 1:
                raise MemoryError("CUDA out of memory")
            return super().process(src, dst, job, progress, should_cancel)

    runner, *_ = make({0: [encoded("a")]}, backend=Oom())
    runner.run()
    assert scales == [1.0, 0.5]


class StoppedMidway(SleepBackend):
    """A 30-s job that records whether it was stopped between frames (by the cancel flag)
    rather than running to its end."""

    def __init__(self) -> None:
        super().__init__(30.0)
        self.running = threading.Event()
        self.cancelled_midway = False

    def process(self, src, dst, job, progress, should_cancel):
        self.running.set()
        try:
            return super().process(src, dst, job, progress, should_cancel)
        except JobCancelled:
            self.cancelled_midway = True
            raise


@pytest.mark.parametrize("reason", ["sigterm", "spot"])
def test_stop_mid_job_reports_interrupted_never_commits_and_leaves(reason: str) -> None:
    backend = StoppedMidway()
    runner, consumer, producer, _s3, log = make({0: [encoded("a")]}, backend=backend, idle=None)
    threading.Thread(target=lambda: backend.running.wait() and runner.request_stop(reason), daemon=True).start()
    runner.run()
    assert backend.cancelled_midway  # stopped between frames, not after the whole job
    assert consumer.committed == {} and consumer.closed and not producer.of(JOB_COMPLETED)
    assert producer.of(JOB_PROGRESS)[-1]["state"] == "interrupted"
    (note,) = producer.of(NOTIFICATION)
    assert note["kind"] == "job.interrupted" and note["job_id"] == "a"
    assert (reason == "spot") == ("spot_interruption" in note["payload_json"])
    assert log[-1] == ("close",)


class RevokedMidJob(SleepBackend):
    """The first try asks the fake consumer to revoke the partition on its next poll, i.e.
    while this job runs (no timing guess); later tries just run."""

    def __init__(self) -> None:
        super().__init__(5.0)
        self.consumer: FakeConsumer | None = None

    def process(self, src, dst, job, progress, should_cancel):
        if self.consumer is not None:
            self.consumer.revoke_at, self.consumer = time.monotonic(), None
            return super().process(src, dst, job, progress, should_cancel)  # cancelled by the revoke
        return NoopBackend().process(src, dst, job, progress, should_cancel)


def test_revoked_partition_cancels_without_commit_then_the_job_runs_again() -> None:
    backend = RevokedMidJob()
    runner, consumer, producer, _s3, _log = make({0: [encoded("a")]}, backend=backend)
    backend.consumer = consumer
    runner.run()
    states = [(p["attempt"], p["state"]) for p in producer.of(JOB_PROGRESS)]
    assert (1, "interrupted") in states
    (done,) = producer.of(JOB_COMPLETED)
    assert done["attempt"] == 2 and consumer.committed == {0: 1}
    assert not producer.of(NOTIFICATION)  # a rebalance is not news for the user


def test_a_failed_job_whose_dead_letter_was_refused_is_dead_lettered_on_redelivery() -> None:
    backend = Failing([UndecodableVideo("The file is not a video we can decode.")])
    runner, consumer, producer, _s3, log = make({0: [encoded("poison"), encoded("next")]}, backend=backend)
    real, refused = producer.publish_many, []

    def refuse_first_dead_letter(items, timeout_s: float = 30.0) -> None:
        if not refused and any(topic == DLQ for topic, _k, _r in items):
            refused.append(items)
            raise TimeoutError("1 event(s) not acknowledged within 30s")
        real(items, timeout_s)

    producer.publish_many = refuse_first_dead_letter
    runner.run()
    assert refused
    (failed, ok) = producer.of(JOB_COMPLETED)  # the job ran once: the redelivery found it done
    assert (failed["job_id"], failed["outcome"], ok["job_id"]) == ("poison", "failed", "next")
    (dlq,) = producer.of(DLQ)
    assert dlq["original_offset"] == 0 and dlq["error"].startswith("undecodable_video: The file is not a video")
    assert consumer.committed == {0: 2}
    assert log.index(("ack", DLQ, None, None)) < log.index(("commit", 0, 1))


def test_undecodable_job_event_is_dead_lettered_and_skipped() -> None:
    runner, consumer, producer, _s3, _log = make({0: [b"garbage", encoded("b")]})
    runner.run()
    assert producer.of(DLQ)[0]["original_value"] == b"garbage"
    assert producer.of(JOB_COMPLETED)[0]["job_id"] == "b" and consumer.committed == {0: 2}


def test_a_finished_but_uncommitted_job_is_committed_without_running_again() -> None:
    runner, consumer, producer, s3, _log = make({0: [encoded("a")]})
    runner.jobs.ledger.start("a")
    runner.jobs.ledger.finished("a")  # an earlier worker completed it, then died before its commit
    s3.objects[output_key("a")] = b"out"
    runner.run()
    assert not producer.of(JOB_COMPLETED) and consumer.committed == {0: 1}


def test_missing_output_is_never_committed() -> None:
    runner, consumer, producer, s3, _log = make({0: [encoded("a")]}, idle=0.3)
    real_upload, calls = s3.upload_file, []

    def lossy(*a: Any, **k: Any) -> None:  # the first "upload" stores nothing: a bug, or a lost write
        calls.append(a)
        if len(calls) > 1:
            real_upload(*a, **k)

    s3.upload_file = lossy
    runner.run()
    assert len(producer.of(JOB_COMPLETED)) == 2  # same stable event id: readers see one completion
    assert len({e["event_id"] for e in producer.of(JOB_COMPLETED)}) == 1
    assert consumer.committed == {0: 1} and output_key("a") in s3.objects


def test_after_a_commit_the_partition_is_resumed_then_sought_to_the_committed_offset() -> None:
    """librdkafka notices resume() only when its fetcher thread next wakes (its 1-s idle timer
    when every partition was paused); a seek to the committed offset wakes it at once. The seek
    comes after the resume, only after a successful commit, and only to the committed offset
    (never past a job that was not committed: see test_missing_output_is_never_committed)."""
    runner, consumer, _producer, _s3, log = make({0: [encoded("a"), encoded("b")], 1: [encoded("c")]})
    real_resume, real_seek = consumer.resume, consumer.seek

    def resume(parts) -> None:
        log.append(("resume",))
        real_resume(parts)

    def seek(tp) -> None:
        log.append(("seek", tp.partition, tp.offset))
        real_seek(tp)

    consumer.resume, consumer.seek = resume, seek
    assert runner.run() == 3
    commits = [i for i, e in enumerate(log) if e[0] == "commit"]
    assert len(commits) == 3
    for i in commits:
        _, partition, offset = log[i]
        after = [e for e in log[i + 1:] if e[0] in ("resume", "seek", "commit")]
        assert after[:2] == [("resume",), ("seek", partition, offset)]
    assert all(e[0] != "seek" or log[i - 1][0] == "resume" for i, e in enumerate(log))


def test_idle_timeout_exits_cleanly() -> None:
    runner, consumer, *_ = make({0: []}, idle=0.2)
    assert runner.run() == 0  # nothing else stops it: without the idle exit this never returns
    assert consumer.closed and runner.stop_reason is None


def test_idle_timeout_defaults_to_five_minutes() -> None:
    assert Settings.model_fields["consumer_idle_timeout_s"].default == 300.0


def test_consumer_config_manual_commits_bounded_poll_interval_no_static_membership() -> None:
    conf = consumer_config(Settings(), "w1")
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert 0 < conf["max.poll.interval.ms"] <= 300_000  # bounded: steady polls keep membership
    assert conf["session.timeout.ms"] < conf["max.poll.interval.ms"]
    assert "group.instance.id" not in conf  # static membership would hold a reclaimed node's partitions


def test_progress_heartbeat_repeats_the_stage_while_a_step_says_nothing() -> None:
    class Silent(NoopBackend):
        """Says nothing until the heartbeat has published three more progress events."""

        def __init__(self) -> None:
            self.producer: FakeProducer | None = None
            self.beats: list[dict] = []

        def process(self, src, dst, job, progress, should_cancel):
            assert self.producer is not None
            before = len(self.producer.of(JOB_PROGRESS))
            deadline = time.monotonic() + 30
            while len(self.producer.of(JOB_PROGRESS)) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.beats = self.producer.of(JOB_PROGRESS)[before:]
            return super().process(src, dst, job, progress, should_cancel)

    backend = Silent()
    runner, _c, producer, _s3, _log = make({0: [encoded("a")]}, backend=backend)
    backend.producer = producer
    runner.run()
    assert len(backend.beats) >= 3
    assert all(b["state"] == "extracting" and b["attempt"] == 1 and b["percent"] is not None for b in backend.beats)


def test_progress_interval_is_capped_at_two_seconds() -> None:
    job = JobContext(spec("a"))
    assert ProgressReporter(FakeProducer([]), job, "w1", interval_s=30.0).interval_s == 2.0


def test_a_crash_looping_job_is_failed() -> None:
    runner, consumer, producer, _s3, _log = make({0: [encoded("a")]}, consumer_max_crashes=2)
    for _ in range(2):
        runner.jobs.ledger.start("a")  # two earlier workers died mid-job
    runner.run()
    (failed,) = producer.of(JOB_COMPLETED)
    assert failed["outcome"] == "failed" and failed["error_code"] == "worker_crashed"
    assert producer.of(DLQ) and consumer.committed == {0: 1}


def test_attempt_counts_through_the_ledger() -> None:
    ledger = JobLedger(None)
    assert ledger.start("j").starts == 1
    c = ledger.start("j")
    assert c.starts == 2 and c.crashes == 1
    ledger.interrupted("j")
    assert ledger.start("j").crashes == 1
    job = JobContext({"job_id": "j", "attempt": 1})
    assert job.job_id == "j"


class DeletesTheSource(NoopBackend):
    """The user deletes the video while the engine works on it."""

    def __init__(self, s3: FakeS3) -> None:
        self.s3 = s3

    def process(self, src, dst, job, progress, should_cancel):
        del self.s3.objects["uploads/v/source"]
        return super().process(src, dst, job, progress, should_cancel)


def test_a_video_deleted_mid_job_leaves_no_output_and_fails_with_the_reason() -> None:
    runner, consumer, producer, s3, log = make({0: [encoded("a")]})
    runner.jobs.backend = DeletesTheSource(s3)
    runner.run()
    (failed,) = producer.of(JOB_COMPLETED)
    assert (failed["outcome"], failed["error_code"]) == ("failed", "source_missing")
    assert "deleted while it was being processed" in failed["error"]
    assert not any(e[0] == "upload" for e in log) and output_key("a") not in s3.objects
    assert consumer.committed == {0: 1}  # permanent: committed, the partition flows on
