"""The API's read model (pure logic): snapshots, tombstones, deletions, per-user indexes and
quota use; and the on-the-fly masks archive."""

from __future__ import annotations

import io
import zipfile

from api.masks import zip_stream
from api.view import VIDEO_DELETED, StatusView
from schemas import serde
from schemas.topics import JOB_STATUS, VIDEO_UPLOADED
from tapmask.events import envelope
from tapmask.settings import Settings

T0 = 1_700_000_000_000  # 2023-11


def snap(job: str, video: str, owner: str = "alice", state: str = "queued", code: str | None = None, at: int = T0) -> bytes:
    return serde.encode("JobStatus", {
        "job_id": job, "video_id": video, "owner_id": owner, "state": state, "percent": 0.0, "frames_done": 0,
        "frames_total": 0, "attempt": 1, "mode": "blur", "error_code": code, "error": None, "output_bucket": None,
        "output_key": None, "masks_key": None, "created_at": at, "updated_at": at, "seen_event_ids": []})


def uploaded(video: str, owner: str = "alice", at: int = T0) -> bytes:
    return serde.encode("VideoUploaded", envelope() | {
        "occurred_at": at, "video_id": video, "owner_id": owner, "region": "eu", "filename": "a.mp4", "container": "mp4",
        "size_bytes": 10, "sha256": "00", "s3_bucket": "b", "s3_key": f"uploads/{video}/source"})


def test_indexes_tombstones_and_deletion() -> None:
    v = StatusView(Settings())
    v._apply(VIDEO_UPLOADED, b"v1", uploaded("v1"))
    v._apply(VIDEO_UPLOADED, b"v2", uploaded("v2", at=T0 + 1))
    v._apply(VIDEO_UPLOADED, b"v3", uploaded("v3", owner="bob"))
    v._apply(JOB_STATUS, b"j1", snap("j1", "v1"))
    v._apply(JOB_STATUS, b"j2", snap("j2", "v1", at=T0 + 5))
    v._apply(JOB_STATUS, b"j3", snap("j3", "v2"))
    v._apply(JOB_STATUS, b"j4", snap("j4", "v3", owner="bob"))
    assert [j["job_id"] for j in v.jobs_of("alice")] == ["j2", "j3", "j1"]
    assert {j["job_id"] for j in v.jobs_of("alice", "v1")} == {"j1", "j2"}
    assert [x.video_id for x in v.videos_of("alice")] == ["v2", "v1"]
    assert v.jobs_used("alice", "2023-11") == 3

    v._apply(JOB_STATUS, b"j3", None)  # tombstone
    assert v.job("j3") is None and {j["job_id"] for j in v.jobs_of("alice")} == {"j1", "j2"}
    assert v.jobs_used("alice", "2023-11") == 3  # deletion does not give quota back

    deleted = envelope() | {"video_id": "v1", "owner_id": "alice", "job_ids": ["j1", "j2"], "objects_deleted": 3}
    v._apply(VIDEO_DELETED, b"v1", serde.encode("VideoDeleted", deleted))
    assert v.video("v1") is None and v.job("j1") is None and v.jobs_of("alice", "v1") == []
    v._apply(JOB_STATUS, b"j1", snap("j1", "v1", state="complete"))  # a late snapshot stays deleted
    v._apply(VIDEO_UPLOADED, b"v1", uploaded("v1"))  # so does a replayed upload
    assert v.job("j1") is None and v.video("v1") is None
    assert [j["job_id"] for j in v.jobs_of("bob")] == ["j4"]


def test_jobs_refused_before_quota_do_not_count() -> None:
    v = StatusView(Settings())
    v._apply(JOB_STATUS, b"a", snap("a", "v", state="queued"))
    v._apply(JOB_STATUS, b"a", snap("a", "v", state="failed", code="invalid_request"))
    v._apply(JOB_STATUS, b"b", snap("b", "v", state="failed", code="quota_exceeded"))
    v._apply(JOB_STATUS, b"c", snap("c", "v", state="failed", code="engine_error"))
    assert v.jobs_used("alice", "2023-11") == 1


class FakeBody:
    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self.f.read(n)


class FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        return {"Body": FakeBody(self.objects[Key])}


def test_masks_zip_streams_and_reads_back() -> None:
    objs = {f"outputs/j/masks/{i:06d}.png": bytes([i]) * (3 << 19) for i in range(3)}  # 1.5 MiB each
    parts = list(zip_stream(FakeS3(objs), "b", sorted(objs), "masks-j/"))
    assert len(parts) > 3  # streamed in pieces, not built whole
    with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as zf:
        assert zf.namelist() == [f"masks-j/{i:06d}.png" for i in range(3)]
        assert zf.read("masks-j/000002.png") == objs["outputs/j/masks/000002.png"]
        assert zf.testzip() is None
