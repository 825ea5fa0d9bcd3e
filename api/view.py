"""The API's read model: job snapshots from the compacted status topic, and videos from the
upload and validation topics.

A background thread reads those topics from the beginning (no consumer group: every API
replica reads everything, so replicas answer alike), then follows them. Tansu never compacts,
so tombstones (null values) are applied here, not left to the broker. Reads are served from
memory. ``ready`` turns true once the thread has caught up with the end offsets that existed
when it started and then drained what the broker had (see ``_follow``).
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas import serde
from schemas.topics import JOB_STATUS, VIDEO_UPLOADED, VIDEO_VALIDATED, schema_by_topic
from tapmask.settings import Settings

VIDEO_DELETED = "tapmask.video.deleted.v1"
VIEW_TOPICS = (JOB_STATUS, VIDEO_UPLOADED, VIDEO_VALIDATED, VIDEO_DELETED)
OPTIONAL_TOPICS = (VIDEO_DELETED,)
# Jobs that failed before the quota agent counted them do not use quota.
NOT_COUNTED = frozenset({"quota_exceeded", "invalid_request"})


def month_of(epoch_ms: int) -> str:
    """The UTC calendar month of a timestamp, e.g. 2026-11 (as the quota agent counts)."""
    return _month_of_day(epoch_ms // 86_400_000)


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(day * 86_400))


@dataclass
class VideoRecord:
    """What the API knows of one video."""

    video_id: str
    owner_id: str
    filename: str
    size_bytes: int
    s3_bucket: str
    s3_key: str
    uploaded_at: int
    sha256: str = ""
    container: str = ""
    region: str = "eu"
    state: str = "validating"  # validating | valid | rejected
    reason: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class StatusView:
    """In-memory job and video state, kept up to date from Kafka."""

    settings: Settings
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    videos: dict[str, VideoRecord] = field(default_factory=dict)
    # Jobs this replica accepted whose first snapshot has not come back yet (read-your-writes).
    pending_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Verdicts read before their upload event (the two topics are read in no fixed order).
    early_verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Indexes for the per-user lists, and the read model of quota use.
    jobs_by_owner: dict[str, set[str]] = field(default_factory=dict)
    jobs_by_video: dict[str, set[str]] = field(default_factory=dict)
    videos_by_owner: dict[str, set[str]] = field(default_factory=dict)
    usage: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (owner, month) -> job ids
    deleted_videos: set[str] = field(default_factory=set)
    ready: bool = False
    records_applied: int = 0
    decode_errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start following the topics in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="status-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": "tapmask-api-view-unused",  # required by librdkafka; never joined or committed
                "enable.auto.commit": False,
                "client.id": f"{self.settings.kafka_client_id}-api-view",
                # Replay fast: big fetches, many partitions in flight, no waiting for more data.
                "fetch.wait.max.ms": 50,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "queued.min.messages": 200000,
            }
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:  # broker away: retry after a pause, keep serving what we have
                time.sleep(1.0)

    def _follow(self) -> None:
        consumer = self._consumer()
        try:
            names = {self.settings.topic(t): t for t in VIEW_TOPICS}
            metadata = consumer.list_topics(timeout=10)
            partitions: list[TopicPartition] = []
            for real in names:
                topic_md = metadata.topics.get(real)
                if topic_md is None or topic_md.error is not None:
                    if names[real] in OPTIONAL_TOPICS:  # a stack created before the topic existed
                        continue
                    raise RuntimeError(f"topic {real} missing")
                partitions += [TopicPartition(real, p, OFFSET_BEGINNING) for p in topic_md.partitions]
            # The end offsets at start: once reached everywhere, the view is ready.
            remaining: dict[tuple[str, int], int] = {}
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > low:
                    remaining[(tp.topic, tp.partition)] = high
            consumer.assign(partitions)
            # Ready = those end offsets reached AND then a poll that drained what the broker had
            # (fewer records than asked for). The second condition is for Tansu 0.6, whose high
            # watermark is the base offset of a partition's last batch + 1 (measured: 5 records
            # in batches of 3 and 2 → 4), so the end offsets alone can fall short of the end.
            while not self._stop.is_set():
                batch = consumer.consume(num_messages=500, timeout=0.2)
                for msg in batch:
                    if msg.error():
                        continue
                    self._apply(names.get(msg.topic(), msg.topic()), msg.key(), msg.value())
                    goal = remaining.get((msg.topic(), msg.partition()))
                    if goal is not None and msg.offset() + 1 >= goal:
                        del remaining[(msg.topic(), msg.partition())]
                if not remaining and not self.ready and len(batch) < 500:
                    self._became_ready()
        finally:
            consumer.close()

    def _became_ready(self) -> None:
        """Caught up. The replayed history is long-lived: move it out of the garbage
        collector's sight (gc.freeze), so full collections stop walking 100,000s of snapshots
        while requests wait (they showed up as 50+ ms pauses in the p99)."""
        if not self.ready:
            gc.collect()
            gc.freeze()
        self.ready = True

    # ---- folding records -----------------------------------------------------------------
    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        with self._changed:
            self.records_applied += 1
            try:
                if topic == JOB_STATUS:
                    job_id = key.decode() if key else ""
                    if value is None:  # tombstone: the job was deleted
                        self._forget_job(job_id)
                    else:
                        self._apply_snapshot(serde.decode("JobStatus", value))
                elif topic == VIDEO_UPLOADED and value is not None:
                    self._apply_uploaded(serde.decode(schema_by_topic()[VIDEO_UPLOADED], value))
                elif topic == VIDEO_VALIDATED and value is not None:
                    self._apply_validated(serde.decode(schema_by_topic()[VIDEO_VALIDATED], value))
                elif topic == VIDEO_DELETED and value is not None:
                    self._apply_deleted(serde.decode("VideoDeleted", value))
            except serde.SerdeError:
                self.decode_errors += 1
            self._changed.notify_all()

    def _apply_snapshot(self, snap: dict[str, Any]) -> None:
        job_id = snap["job_id"]
        self.pending_jobs.pop(job_id, None)
        if snap["video_id"] in self.deleted_videos:
            return  # a late snapshot of a deleted video's job: stays deleted
        self.jobs[job_id] = snap
        self._index_job(snap)

    def _index_job(self, snap: dict[str, Any]) -> None:
        job_id, owner = snap["job_id"], snap["owner_id"]
        self.jobs_by_owner.setdefault(owner, set()).add(job_id)
        self.jobs_by_video.setdefault(snap["video_id"], set()).add(job_id)
        used = self.usage.setdefault((owner, month_of(snap["created_at"])), set())
        if snap["state"] == "failed" and snap.get("error_code") in NOT_COUNTED:
            used.discard(job_id)
        else:
            used.add(job_id)  # never removed on deletion: the quota agent keeps counting it

    def _forget_job(self, job_id: str) -> None:
        snap = self.jobs.pop(job_id, None) or self.pending_jobs.pop(job_id, None)
        self.pending_jobs.pop(job_id, None)
        if snap is None:
            return
        self.jobs_by_owner.get(snap["owner_id"], set()).discard(job_id)
        self.jobs_by_video.get(snap["video_id"], set()).discard(job_id)

    def _apply_deleted(self, ev: dict[str, Any]) -> None:
        video_id = ev["video_id"]
        self.deleted_videos.add(video_id)
        self.early_verdicts.pop(video_id, None)
        for job_id in list(self.jobs_by_video.get(video_id, ())) + list(ev.get("job_ids") or ()):
            self._forget_job(job_id)
        self.jobs_by_video.pop(video_id, None)
        video = self.videos.pop(video_id, None)
        if video is not None:
            self.videos_by_owner.get(video.owner_id, set()).discard(video_id)

    def _apply_uploaded(self, ev: dict[str, Any]) -> None:
        if ev["video_id"] in self.videos or ev["video_id"] in self.deleted_videos:
            return
        self.videos[ev["video_id"]] = VideoRecord(
            video_id=ev["video_id"],
            owner_id=ev["owner_id"],
            filename=ev["filename"],
            size_bytes=ev["size_bytes"],
            s3_bucket=ev["s3_bucket"],
            s3_key=ev["s3_key"],
            uploaded_at=ev["occurred_at"],
            sha256=ev.get("sha256", ""),
            container=ev.get("container", ""),
            region=ev.get("region", "eu"),
        )
        self.videos_by_owner.setdefault(ev["owner_id"], set()).add(ev["video_id"])
        early = self.early_verdicts.pop(ev["video_id"], None)
        if early is not None:
            self._apply_validated(early)

    def _apply_validated(self, ev: dict[str, Any]) -> None:
        video = self.videos.get(ev["video_id"])
        if video is None:
            if ev["video_id"] not in self.deleted_videos:
                self.early_verdicts[ev["video_id"]] = ev
            return
        video.state = "valid" if ev["valid"] else "rejected"
        video.reason = ev.get("reason")
        video.metadata = ev.get("metadata")

    # ---- reads -----------------------------------------------------------------------------
    def note_uploaded(self, event: dict[str, Any]) -> None:
        """Record an upload this replica just published, before it comes back from Kafka."""
        with self._changed:
            self._apply_uploaded(event)

    def note_pending_job(self, snapshot: dict[str, Any]) -> None:
        """Record a job this replica just accepted, until the status agent's snapshot arrives."""
        with self._changed:
            if snapshot["job_id"] not in self.jobs:
                self.pending_jobs[snapshot["job_id"]] = snapshot
                self._index_job(snapshot)

    def note_deleted(self, event: dict[str, Any]) -> None:
        """Apply a deletion this replica just published, before it comes back from Kafka."""
        with self._changed:
            self._apply_deleted(event)

    def jobs_of(self, owner_id: str, video_id: str | None = None) -> list[dict[str, Any]]:
        """A user's jobs (optionally of one video), newest first."""
        with self._lock:
            ids = self.jobs_by_owner.get(owner_id, set())
            if video_id is not None:
                ids = ids & self.jobs_by_video.get(video_id, set())
            snaps = [s for s in (self.jobs.get(i) or self.pending_jobs.get(i) for i in ids) if s is not None]
        return sorted(snaps, key=lambda s: (s["created_at"], s["job_id"]), reverse=True)

    def job_ids_of_video(self, video_id: str) -> list[str]:
        """Every job id known for a video."""
        with self._lock:
            return sorted(self.jobs_by_video.get(video_id, set()))

    def videos_of(self, owner_id: str) -> list[VideoRecord]:
        """A user's videos, newest first."""
        with self._lock:
            vids = [self.videos[v] for v in self.videos_by_owner.get(owner_id, set()) if v in self.videos]
        return sorted(vids, key=lambda v: (v.uploaded_at, v.video_id), reverse=True)

    def jobs_used(self, owner_id: str, month: str) -> int:
        """Jobs a user started in a calendar month that count towards the quota."""
        with self._lock:
            return len(self.usage.get((owner_id, month), ()))

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The latest snapshot of a job, or None."""
        with self._lock:
            return self.jobs.get(job_id) or self.pending_jobs.get(job_id)

    def video(self, video_id: str) -> VideoRecord | None:
        """What is known of a video, or None."""
        with self._lock:
            return self.videos.get(video_id)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the view has caught up (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready
