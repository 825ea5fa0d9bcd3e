"""The processors over the real broker: quota at a month boundary and across an upgrade to Pro,
the quota notification, and the status snapshots they lead to.

Events are produced straight onto the topics (the API is not in the way), so the tests can
set the time a request was made. A tiny clip is stored in S3 and announced as uploaded for a
user of the test's own, so validation probes it for real.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas import serde
from schemas.topics import DLQ, JOB_STATUS, NOTIFICATION, RETRY, SEGMENT_REQUESTED, VIDEO_UPLOADED, VIDEO_VALIDATED, \
    load_topic_specs, schema_by_topic
from tapmask.events import EventProducer, envelope, producer_config
from tapmask.samples import make_sample_clip
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


class TopicReader:
    """Reads a topic from the beginning (no group) and decodes its events."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name, self.settings = name, settings
        self.c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                           "enable.auto.commit": False})
        real = settings.topic(name)
        md = self.c.list_topics(real, timeout=10).topics[real]
        self.c.assign([TopicPartition(real, p, OFFSET_BEGINNING) for p in md.partitions])
        self.seen: list[tuple[bytes | None, dict[str, Any] | None, list[Any]]] = []
        self.stamps: list[int] = []  # the record's Kafka timestamp (ms), parallel to ``seen``

    def poll(self, seconds: float = 0.3) -> None:
        for msg in self.c.consume(500, timeout=seconds):
            if msg.error():
                continue
            value = msg.value()
            record = serde.decode(schema_by_topic()[self.name], value) if value is not None else None
            self.seen.append((msg.key(), record, msg.headers() or []))
            self.stamps.append(msg.timestamp()[1])

    def wait(self, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            records = [r for _, r, _ in self.seen if r is not None]
            if done(records) or time.monotonic() > deadline:
                return records
            time.sleep(0.1)

    def close(self) -> None:
        self.c.close()


@pytest.fixture(scope="module")
def producer(stack: Any, stack_settings: Settings) -> Any:
    p = EventProducer(stack_settings)
    yield p
    p.close()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("clip") / "tiny.mp4", seconds=0.4, width=160, height=96, audio=False)


def upload_as(settings: Settings, producer: EventProducer, clip: Path, owner: str) -> str:
    """Store ``clip`` and announce it as uploaded by ``owner``; returns the video id."""
    video_id = uuid.uuid4().hex
    key = f"uploads/{video_id}/source"
    s3_client(settings).upload_file(str(clip), settings.s3_bucket, key)
    producer.publish(VIDEO_UPLOADED, video_id, envelope() | {
        "video_id": video_id, "owner_id": owner, "region": "eu", "filename": clip.name, "container": "mp4",
        "size_bytes": clip.stat().st_size, "sha256": "0" * 64, "s3_bucket": settings.s3_bucket, "s3_key": key})
    return video_id


def request_job(producer: EventProducer, video_id: str, owner: str, tier: str, at_ms: int | None = None) -> str:
    job_id = uuid.uuid4().hex
    event = envelope() | {
        "job_id": job_id, "video_id": video_id, "owner_id": owner, "tier": tier,
        "points": [{"x": 80.0, "y": 48.0, "frame": 0, "label": 1}], "box": None, "mode": "blur",
        "options": {"margin_px": 8, "blur_kernel": 99, "export_masks": False},
    }
    if at_ms is not None:
        event["occurred_at"] = at_ms
    producer.publish(SEGMENT_REQUESTED, job_id, event)
    return job_id


def latest(records: list[dict[str, Any]], job_ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["job_id"] in job_ids:
            out[r["job_id"]] = r
    return out


def decided(snap: dict[str, Any] | None) -> bool:
    """Quota has ruled on the job: it is queued (or further), or it failed."""
    return snap is not None and (snap.get("queued_at") is not None or snap["state"] == "failed")


def wait_decided(settings: Settings, job_ids: list[str], timeout_s: float = 90.0) -> dict[str, dict[str, Any]]:
    reader = TopicReader(settings, JOB_STATUS)
    try:
        recs = reader.wait(lambda rs: all(decided(latest(rs, job_ids).get(j)) for j in job_ids), timeout_s)
    finally:
        reader.close()
    return latest(recs, job_ids)


def test_free_quota_resets_at_the_utc_month_boundary(stack_settings: Settings, producer: EventProducer, tiny_clip: Path) -> None:
    user = f"quota-{uuid.uuid4().hex[:8]}"
    video = upload_as(stack_settings, producer, tiny_clip, user)
    limit = stack_settings.free_jobs_per_month
    # All of these in the last second of January (UTC); then one a second later, in February.
    january = [request_job(producer, video, user, "free", ms(2026, 1, 31, 23, 59, 59)) for _ in range(limit + 1)]
    february = request_job(producer, video, user, "free", ms(2026, 2, 1, 0, 0, 0))
    snaps = wait_decided(stack_settings, january + [february])
    # segment.requested is keyed by job, so which request comes to quota last is not fixed.
    ran = [j for j in january if snaps[j].get("queued_at") is not None and snaps[j]["error_code"] is None]
    refused = [j for j in january if snaps[j]["error_code"] == "quota_exceeded"]
    assert len(ran) == limit and len(refused) == 1, [(s["state"], s["error_code"]) for s in snaps.values()]
    over = snaps[refused[0]]
    assert over["state"] == "failed" and "free tier allows" in over["error"]
    assert snaps[february].get("queued_at") is not None and snaps[february]["error_code"] is None

    notes = TopicReader(stack_settings, NOTIFICATION)
    try:
        recs = notes.wait(lambda rs: any(r["kind"] == "quota.exceeded" and r["job_id"] == refused[0] for r in rs), 30)
    finally:
        notes.close()
    quota_notes = [r for r in recs if r["kind"] == "quota.exceeded" and r["user_id"] == user]
    assert [r["job_id"] for r in quota_notes] == refused
    assert any(r["kind"] == "job.failed" and r["job_id"] == refused[0] for r in recs)


def test_upgrade_to_pro_mid_month_lifts_the_limit(stack_settings: Settings, producer: EventProducer, tiny_clip: Path) -> None:
    user = f"upgrade-{uuid.uuid4().hex[:8]}"
    video = upload_as(stack_settings, producer, tiny_clip, user)
    limit = stack_settings.free_jobs_per_month
    mid_march = ms(2026, 3, 15, 12)
    free = [request_job(producer, video, user, "free", mid_march) for _ in range(limit + 1)]
    # The user upgrades: the same month, requests now carry tier=pro.
    pro = [request_job(producer, video, user, "pro", mid_march + 1000) for _ in range(2)]
    # ...and downgrades again later that month: the month's free count still stands.
    back_to_free = request_job(producer, video, user, "free", mid_march + 2000)
    snaps = wait_decided(stack_settings, free + pro + [back_to_free])
    codes = sorted(str(snaps[j]["error_code"]) for j in free + [back_to_free])
    assert codes == ["None"] * limit + ["quota_exceeded"] * 2, codes
    assert all(snaps[j].get("queued_at") is not None and snaps[j]["error_code"] is None for j in pro)
    # Pro exports at the source size; free jobs carry the 1080p cap (this clip is smaller: no notice).
    assert all(snaps[j]["max_output_height"] is None for j in pro)
    queued_free = [j for j in free if snaps[j]["error_code"] is None]
    assert all(snaps[j]["max_output_height"] == 1080 and snaps[j]["notice"] is None for j in queued_free)


def test_a_request_that_does_not_fit_the_video_fails_with_the_reason(stack_settings: Settings, producer: EventProducer,
                                                                       tiny_clip: Path) -> None:
    user = f"val-{uuid.uuid4().hex[:8]}"
    video = upload_as(stack_settings, producer, tiny_clip, user)
    job_id = uuid.uuid4().hex
    producer.publish(SEGMENT_REQUESTED, job_id, envelope() | {
        "job_id": job_id, "video_id": video, "owner_id": user, "tier": "pro",
        "points": [{"x": 500.0, "y": 10.0, "frame": 0, "label": 1}], "box": None, "mode": "blur",
        "options": {"margin_px": 8, "blur_kernel": 99, "export_masks": False}})
    snap = wait_decided(stack_settings, [job_id])[job_id]
    assert snap["state"] == "failed" and snap["error_code"] == "invalid_request"
    assert "outside the 160x96 frame" in snap["error"]


def test_a_request_for_an_unknown_video_fails_after_its_retries(stack_settings: Settings, producer: EventProducer) -> None:
    """No verdict for the video: the request is retried (not waited for in the agent), then the
    job fails with a reason a person can read."""
    job_id = request_job(producer, uuid.uuid4().hex, f"ghost-{uuid.uuid4().hex[:8]}", "pro")
    snap = wait_decided(stack_settings, [job_id])[job_id]
    assert snap["state"] == "failed" and snap["error_code"] == "invalid_request"
    assert snap["error"] == "the video is unknown or was not validated"


def test_a_poison_event_does_not_hold_its_partition(stack: Any, stack_settings: Settings, tiny_clip: Path) -> None:
    """A poison upload (its object is not in S3: the probe's HEAD fails, which is not a
    rejection but an error, retried) and a good upload right behind it on the same partition:
    the good one is validated while the poison one waits for its retries, and the poison one
    ends on the dead-letter topic with its reason after 3 attempts, 2 s then 4 s apart."""
    user = f"poison-{uuid.uuid4().hex[:8]}"
    poison, good = uuid.uuid4().hex, uuid.uuid4().hex
    s3_client(stack_settings).upload_file(str(tiny_clip), stack_settings.s3_bucket, f"uploads/{good}/source")
    real_topic, partition = stack_settings.topic(VIDEO_UPLOADED), 5
    offsets: dict[str, int] = {}
    prod = Producer(producer_config(stack_settings))
    for video_id in (poison, good):  # in this order, on one partition
        rec = envelope() | {
            "video_id": video_id, "owner_id": user, "region": "eu", "filename": "tiny.mp4", "container": "mp4",
            "size_bytes": tiny_clip.stat().st_size, "sha256": "0" * 64, "s3_bucket": stack_settings.s3_bucket,
            "s3_key": f"uploads/{video_id}/source"}
        prod.produce(real_topic, key=video_id.encode(), value=serde.encode("VideoUploaded", rec), partition=partition,
                     on_delivery=lambda err, msg, v=video_id: offsets.__setitem__(v, msg.offset()))
    assert prod.flush(30) == 0
    assert offsets[good] == offsets[poison] + 1

    validated, dlq, retries = (TopicReader(stack_settings, name) for name in (VIDEO_VALIDATED, DLQ, RETRY))
    try:
        def poison_dead(rs: list[dict[str, Any]]) -> bool:
            return any(r["original_key"] == poison.encode() for r in rs)

        dlq.wait(poison_dead, 90)
        validated.wait(lambda rs: {good, poison} <= {r["video_id"] for r in rs}, 30)
        retries.wait(lambda rs: sum(r["original_key"] == poison.encode() for r in rs) >= 2, 10)
    finally:
        for reader in (validated, dlq, retries):
            reader.close()

    def stamped(reader: TopicReader, pick: Callable[[dict[str, Any]], bool]) -> list[tuple[int, dict[str, Any]]]:
        return [(ts, r) for (_, r, _), ts in zip(reader.seen, reader.stamps) if r is not None and pick(r)]

    [(dead_at, dead)] = stamped(dlq, lambda r: r["original_key"] == poison.encode())
    verdicts = {r["video_id"]: (ts, r) for ts, r in stamped(validated, lambda r: r["video_id"] in (good, poison))}
    # The good event did not wait for the poison one's retries: validated before the poison was dead-lettered.
    good_at, good_verdict = verdicts[good]
    assert good_verdict["valid"], good_verdict
    assert good_at < dead_at, (good_at, dead_at)
    # The poison event: three attempts, parked on its own partition 2 s then 4 s, then the DLQ with the reason.
    assert (dead["service"], dead["original_topic"], dead["original_partition"], dead["original_offset"]) == \
        ("validation", real_topic, partition, offsets[poison])
    assert dead["attempts"] == 3 and "404" in dead["error"], dead["error"]
    parked = [r for _, r in stamped(retries, lambda r: r["original_key"] == poison.encode())]
    assert [r["attempt"] for r in parked] == [2, 3]
    assert [r["not_before"] - r["occurred_at"] for r in parked] == [2000, 4000]
    assert all(r["original_offset"] == offsets[poison] and "404" in r["error"] for r in parked)
    assert parked[1]["occurred_at"] >= parked[0]["not_before"] and dead_at >= parked[1]["not_before"]
    # ...and on_give_up ran: the user sees the video rejected with a reason, after the good one was accepted.
    poison_at, poison_verdict = verdicts[poison]
    assert not poison_verdict["valid"] and "could not be checked" in poison_verdict["reason"]
    assert good_at < poison_at


def test_librdkafka_and_aiokafka_put_a_key_on_the_same_partition(stack: Any, stack_settings: Settings) -> None:
    """The API and GPU consumers (librdkafka) and the Faust worker (aiokafka) write events of
    one job; the status agent's table is sharded by partition, so they must partition alike."""
    from aiokafka.partitioner import DefaultPartitioner
    from fastavro.utils import generate_many

    from schemas.topics import AUDIT, load_topic_specs

    real = stack_settings.topic(AUDIT)  # written by the API, read by no agent
    n = next(t.partitions for t in load_topic_specs() if t.name == AUDIT)
    keys = [uuid.uuid4().hex.encode() for _ in range(40)]
    got: dict[bytes, int] = {}
    prod = Producer(producer_config(stack_settings))
    for key, rec in zip(keys, generate_many(serde.current_schemas()["AuditEvent"].parsed, len(keys))):
        prod.produce(real, key=key, value=serde.encode("AuditEvent", rec),
                     on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()))
    assert prod.flush(30) == 0
    partitioner = DefaultPartitioner()
    assert {k: partitioner(k, list(range(n)), list(range(n))) for k in keys} == got
    assert len(set(got.values())) > 1


def wait_status(settings: Settings, job_ids: list[str], done: Callable[[dict[str, Any]], bool],
                timeout_s: float = 90.0) -> dict[str, dict[str, Any]]:
    """The latest status snapshot of each job, once every one satisfies ``done`` (or the timeout)."""
    reader = TopicReader(settings, JOB_STATUS)
    try:
        recs = reader.wait(lambda rs: len(latest(rs, job_ids)) == len(job_ids)
                           and all(done(s) for s in latest(rs, job_ids).values()), timeout_s)
    finally:
        reader.close()
    return latest(recs, job_ids)


def job_ids_on_every_partition(partitions: int, per_partition: int) -> list[str]:
    """Fresh job ids, ``per_partition`` of them on each partition (murmur2, as every producer here)."""
    from aiokafka.partitioner import DefaultPartitioner

    part = DefaultPartitioner()
    ids: list[list[str]] = [[] for _ in range(partitions)]
    while any(len(b) < per_partition for b in ids):
        j = uuid.uuid4().hex
        bucket = ids[part(j.encode(), list(range(partitions)), list(range(partitions)))]
        if len(bucket) < per_partition:
            bucket.append(j)
    return [j for bucket in ids for j in bucket]


class Worker:
    """One Faust worker process (``python -m processors worker``) with the test's own settings
    (its own topic prefix and app id: its own consumer group), in a folder of its own."""

    def __init__(self, settings: Settings, folder: Path, name: str) -> None:
        import subprocess
        import sys

        from gpu_consumers.harness import REPO_ROOT, env_of

        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.log"
        env = env_of(settings, PYTHONPATH=str(REPO_ROOT))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "processors", "worker", "--loglevel", "info",
                                          "--without-web"], cwd=folder, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "[^Worker]: Ready" not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()[-3000:]
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM (Faust leaves the group), then SIGKILL of its process group if it lingers."""
        import os
        import signal
        import subprocess

        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def test_workers_rebuild_the_status_table_from_the_status_topic_after_rebalances(
        stack: Any, stack_settings: Settings, tmp_path: Path) -> None:
    """The status agent's snapshot table has the status topic as its changelog. A second worker
    joins (it rebuilds the partitions it is given from the topic), later the first one leaves
    (the second rebuilds the rest); after each, a job's next event must fold into the snapshot
    made before, not into an empty one.

    What it guards (processors/transport.py): Tansu's ListOffsets(latest) answers the base
    offset of a partition's newest batch object + 1, and on S3 a partition written within one
    second answers 1 whatever it holds. Faust's recovery read up to that, declared the table
    rebuilt, and left what it fetched beyond in its buffer, unapplied until the next rebalance:
    a job folded in between started from an empty snapshot. So several status records per
    partition are written in one burst, and half of the jobs get their next event between the
    two rebalances, the other half after the second.

    Isolated from the shared stack: its own topic prefix (topics and Valkey keys) and Faust app
    id (consumer group, Faust's own changelog topics), its own two workers, both stopped at the
    end; the stack's worker never sees these events. Jobs are made of progress events only (no
    request: nothing runs them): 40 % tracking, then a failed completion, which carries neither
    the percent nor the frames done nor the creation time."""
    from gpu_consumers.harness import isolated
    from schemas.topics import JOB_COMPLETED, JOB_PROGRESS
    from tapmask.events import job_failed

    run = uuid.uuid4().hex[:6]
    settings = isolated(stack_settings, "rebuild", faust_app_id=f"tapmask-rebuild-{run}")
    partitions = next(t.partitions for t in load_topic_specs() if t.name == JOB_STATUS)
    user, started_at = f"rebuild-{run}", int(time.time() * 1000) - 60_000
    producer = EventProducer(settings)

    def progress(job_ids: list[str]) -> None:
        producer.publish_many([(JOB_PROGRESS, j, envelope() | {
            "job_id": j, "attempt": 1, "state": "tracking", "percent": 40.0, "frames_done": 4, "frames_total": 10,
            "worker_id": "test", "message": None, "max_output_height": None, "occurred_at": started_at})
            for j in job_ids])

    def settle() -> None:
        """Wait until the group has settled and works: a fresh event is folded on every partition
        (Faust holds the agents' streams until their partitions' tables are rebuilt)."""
        probe = job_ids_on_every_partition(partitions, 1)
        progress(probe)
        snaps = wait_status(settings, probe, lambda s: s["state"] == "tracking", 120)
        assert len(snaps) == len(probe), "the workers did not settle"

    def fail(job_ids: list[str]) -> dict[str, dict[str, Any]]:
        producer.publish_many([(JOB_COMPLETED, j, job_failed({"job_id": j, "owner_id": user, "video_id": "v"},
                                                             "engine_error", "test: failed after a rebuild"))
                               for j in job_ids])
        return wait_status(settings, job_ids, lambda s: s["state"] == "failed")

    per_partition = 6  # several status records on each partition, in one burst
    jobs = job_ids_on_every_partition(partitions, per_partition)
    halves = jobs[0::2], jobs[1::2]  # both halves on every partition
    first = Worker(settings, tmp_path / "first", "worker-1")
    second: Worker | None = None
    try:
        first.wait_ready()
        progress(jobs)
        before = wait_status(settings, jobs, lambda s: s["state"] == "tracking")
        assert all(before[j]["percent"] == 40.0 and before[j]["created_at"] == started_at for j in jobs), before

        second = Worker(settings, tmp_path / "second", "worker-2")
        second.wait_ready()
        settle()  # the partitions are shared now; the second worker rebuilt its own from the status topic
        after = fail(halves[0])
        first.stop()
        settle()  # the second worker has them all, the first one's rebuilt too
        assert second.proc.poll() is None, second.text()[-3000:]
        after |= fail(halves[1])
    finally:
        producer.close()
        for worker in (first, second):
            if worker is not None:
                worker.stop()
    assert all(after[j]["state"] == "failed" and after[j]["error_code"] == "engine_error" for j in jobs), after
    # Folded into the snapshot from before the rebalances: the completion carries none of these.
    lost = {j: (after[j]["percent"], after[j]["frames_done"], after[j]["created_at"]) for j in jobs
            if (after[j]["percent"], after[j]["frames_done"], after[j]["created_at"]) != (40.0, 4, started_at)}
    assert not lost, f"{len(lost)} of {len(jobs)} jobs folded into an empty snapshot: {lost}"
