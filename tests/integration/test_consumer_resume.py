"""Resume from chunk checkpoints in (real) S3: a job stopped after two of five chunks resumes
from the third — reusing the track and both segments — and its output is the same, frame
for frame, as a run that was never interrupted."""

from __future__ import annotations

import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from gpu_consumers import harness as h
from gpu_consumers.checkpoints import TWO_PASS, VideoBackend, checkpoint_prefix
from gpu_consumers.engine.errors import JobCancelled
from gpu_consumers.engine.video_io import VideoWriter
from gpu_consumers.engine.yuv import Yuv420
from gpu_consumers.job import JobContext
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not TWO_PASS, reason="the engine has no two-pass API")]


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def recorded_pictures(monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """Frame index -> a copy of the picture handed to the encoder (the last one for each index).

    x264 does not always give the same packets for the same pictures (bench/README.md,
    session 7: about 1 run in 15-25), so rendered pictures are compared exactly and the
    encoded files only closely."""
    pictures: dict[int, np.ndarray] = {}
    write_frame = VideoWriter.write_frame

    def recording(self, image, pts, index):
        pictures[index] = image.to_array() if isinstance(image, Yuv420) else np.array(image)
        return write_frame(self, image, pts, index)

    monkeypatch.setattr(VideoWriter, "write_frame", recording)
    return pictures


def test_resumed_job_skips_finished_chunks_and_gives_the_same_output(stack, stack_settings: Settings, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=2.0, width=160, height=96, fps=25, audio=True)
    pictures = recorded_pictures(monkeypatch)
    source = h.upload_clip(stack_settings, clip)
    x, y = sample_object_center(0, 160, 96, 25)
    s3 = s3_client(stack_settings)
    noop = lambda *a: None  # noqa: E731

    # Reference: one uninterrupted run.
    ref_job = JobContext(h.job_spec(source, x, y))
    (tmp_path / "ref").mkdir()
    VideoBackend(s3, chunk_frames=10).process(clip, tmp_path / "ref" / "out.mp4", ref_job, noop, lambda: False)
    ref_pictures = dict(pictures)
    assert sorted(ref_pictures) == list(range(50))

    # The job under test: stopped once 25 frames are rendered (chunks 0 and 1 are done).
    job = JobContext(h.job_spec(source, x, y, job_id=uuid.uuid4().hex))
    rendered = [0]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "processing":
            rendered[0] = done

    (tmp_path / "a").mkdir()
    with pytest.raises(JobCancelled):
        VideoBackend(s3, chunk_frames=10).process(clip, tmp_path / "a" / "out.mp4", job, progress, lambda: rendered[0] >= 25)
    keys = {o["Key"].rsplit("/", 1)[1] for o in s3.list_objects_v2(
        Bucket=source["s3_bucket"], Prefix=checkpoint_prefix(job.job_id))["Contents"]}
    assert keys == {"track.npz", "seg-00000.mp4", "seg-00001.mp4"}

    # Redelivered: a fresh backend (another consumer) resumes from chunk 2.
    pictures.clear()
    again = VideoBackend(s3, chunk_frames=10)
    (tmp_path / "b").mkdir()
    n = again.process(clip, tmp_path / "b" / "out.mp4", job, noop, lambda: False)
    assert n == 50
    assert again.last_run["track_reused"] and again.last_run["segments_reused"] == [0, 1]
    assert again.last_run["segments_rendered"] == [2, 3, 4]

    # The chunks rendered again get exactly the pictures of the uninterrupted run (same track).
    assert sorted(pictures) == list(range(20, 50))
    assert all(np.array_equal(pictures[i], ref_pictures[i]) for i in range(20, 50)), \
        "resumed output differs from an uninterrupted run"
    # The whole file, reused segments included, is the same video (within x264's variation).
    ref, out = frames(tmp_path / "ref" / "out.mp4"), frames(tmp_path / "b" / "out.mp4")
    assert len(out) == len(ref) == 50
    assert min(psnr(a, b) for a, b in zip(ref, out)) > 35.0, "resumed output differs from an uninterrupted run"
    with av.open(str(tmp_path / "b" / "out.mp4")) as c:
        assert c.streams.audio, "audio lost on the resumed output"

    again.cleanup(job)
    assert not s3.list_objects_v2(Bucket=source["s3_bucket"], Prefix=checkpoint_prefix(job.job_id)).get("Contents")


def test_out_of_memory_retry_renders_smaller_chunks_with_the_same_output(stack, stack_settings: Settings, tmp_path: Path) -> None:
    """After an out-of-memory failure the runner halves ``job.scale``; the video backend then
    renders in chunks half as long (less held at once), never mixes them with the pieces
    the full-size try left in S3, and its output is the same video as a full-size run's."""
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=2.0, width=160, height=96, fps=25, audio=False)
    source = h.upload_clip(stack_settings, clip)
    x, y = sample_object_center(0, 160, 96, 25)
    s3 = s3_client(stack_settings)
    noop = lambda *a: None  # noqa: E731

    (tmp_path / "ref").mkdir()
    VideoBackend(s3, chunk_frames=20).process(clip, tmp_path / "ref" / "out.mp4", JobContext(h.job_spec(source, x, y)),
                                              noop, lambda: False)

    job = JobContext(h.job_spec(source, x, y, job_id=uuid.uuid4().hex))
    rendered = [0]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "processing":
            rendered[0] = done

    (tmp_path / "a").mkdir()  # the full-size try: one 20-frame chunk done, then it "runs out of memory"
    with pytest.raises(JobCancelled):
        VideoBackend(s3, chunk_frames=20).process(clip, tmp_path / "a" / "out.mp4", job, progress, lambda: rendered[0] >= 25)

    job.scale = 0.5  # what JobRunner sets after one out-of-memory failure
    smaller = VideoBackend(s3, chunk_frames=20)
    (tmp_path / "b").mkdir()
    assert smaller.process(clip, tmp_path / "b" / "out.mp4", job, noop, lambda: False) == 50
    assert smaller.last_run["chunk_frames"] == 10
    assert smaller.last_run["segments_rendered"] == list(range(5)) and not smaller.last_run["segments_reused"]
    assert not smaller.last_run["track_reused"]  # another fingerprint: nothing of the full-size try is mixed in

    ref, out = frames(tmp_path / "ref" / "out.mp4"), frames(tmp_path / "b" / "out.mp4")
    assert len(out) == len(ref) == 50
    # Each chunk is encoded from a keyframe, so other chunk boundaries give other packets: the
    # same pictures up to encoding noise (measured: 40-57 dB PSNR per frame, most frames equal).
    assert min(psnr(a, b) for a, b in zip(ref, out)) > 35.0, "the smaller-chunk output is not the same video"
    smaller.cleanup(job)
