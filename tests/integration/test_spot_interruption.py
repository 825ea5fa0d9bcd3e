"""Spot interruption: the instance-metadata notice arrives mid-job (after the first chunk was
checkpointed); the consumer stops the job, reports ``interrupted``, emits a job.interrupted
notification and leaves the group without committing; the other consumer takes the job at
once, resumes it from the checkpoints and finishes it. The same for SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from gpu_consumers import harness as h
from gpu_consumers.checkpoints import checkpoint_prefix
from gpu_consumers.job import output_key
from schemas.topics import JOB_PROGRESS, NOTIFICATION
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["spot", "sigterm"])
def test_interrupted_job_moves_to_another_consumer_and_resumes(how: str, stack, stack_settings: Settings, tmp_path: Path) -> None:
    meta = h.MetadataServer()
    settings = h.isolated(stack_settings, f"spot-{how}", consumer_idle_timeout_s=0.0, progress_interval_s=0.5,
                          consumer_chunk_frames=2, spot_poll_interval_s=0.1,
                          consumer_commit_log=str(tmp_path / "commits.jsonl"))
    # 8 s in 2-frame chunks: 100 checkpointed segments, so the job is still far from done when
    # the notice arrives even if this process is descheduled for a while (a 2-s clip could
    # finish, and be committed, between the first checkpoint and the notice on a busy CI box).
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=8.0, width=160, height=96, fps=25, audio=False)
    source = h.upload_clip(settings, clip)
    x, y = sample_object_center(0, 160, 96, 25)
    spec = h.job_spec(source, x, y)
    job_id = spec["job_id"]
    s3 = s3_client(settings)
    cons = {n: h.ConsumerProc(n, settings, tmp_path / "logs", {"TAPMASK_SPOT_METADATA_URL": meta.url(n)}).start()
            for n in ("a", "b")}
    try:
        h.wait_until(lambda: all(c.assigned() for c in cons.values()), 60, "both consumers in the group")
        h.queue_jobs(settings, [spec])
        h.wait_until(lambda: any("job.start" in c.log_text() for c in cons.values()), 60, "the job to start")
        first = next(c for c in cons.values() if "job.start" in c.log_text())
        other = next(c for c in cons.values() if c is not first)

        def checkpointed() -> bool:  # the first chunk of pass 2 is in S3: well into the job
            listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=checkpoint_prefix(job_id))
            return any(o["Key"].endswith("seg-00000.mp4") for o in listed.get("Contents", []))

        h.wait_until(checkpointed, 60, "the first chunk checkpoint")
        t_notice = time.monotonic()
        if how == "spot":
            meta.notify(first.name)
        else:
            first.kill(signal.SIGTERM)
        assert first.wait(30) == 0, first.log_text()[-2000:]
        assert "job.committed" not in first.log_text(), "the job finished before the notice: the clip is too short"
        left_after = time.monotonic() - t_notice
        h.wait_until(lambda: "job.start" in other.log_text(), 60, "the other consumer to take the job",
              lambda: other.log_text()[-3000:])
        taken_after = time.monotonic() - t_notice
        h.wait_until(lambda: "job.committed" in other.log_text(), 90, "the other consumer to finish")
        print(f"{how}: left the group {left_after:.2f}s after the notice, job running again after {taken_after:.2f}s")
    finally:
        for c in cons.values():
            c.stop()
        meta.close()

    assert "job.cancelled" in first.log_text() and "job.committed" not in first.log_text()
    assert "consumer.left_group" in first.log_text()
    assert "job.resumed" in other.log_text(), "the second consumer started from frame 0"
    states = h.job_states(settings)
    assert states[job_id]["state"] == "complete" and states[job_id]["attempt"] >= 2
    progress = [r for _m, r in h.read_topic(settings, JOB_PROGRESS) if r["job_id"] == job_id]
    interrupted = [p for p in progress if p["state"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["worker_id"].endswith(f"-{first.pid}")
    assert all(p["attempt"] > interrupted[0]["attempt"] for p in progress if p["worker_id"].endswith(f"-{other.pid}"))
    notes = [r for _m, r in h.read_topic(settings, NOTIFICATION) if r["job_id"] == job_id]
    assert [n["kind"] for n in notes] == ["job.interrupted"]
    payload = json.loads(notes[0]["payload_json"])
    assert payload["reason"] == ("spot_interruption" if how == "spot" else "worker_terminated")
    assert payload["attempt"] == interrupted[0]["attempt"]
    commits = [json.loads(line) for line in (tmp_path / "commits.jsonl").read_text().splitlines()]
    assert [c["worker_id"].endswith(f"-{other.pid}") for c in commits] == [True]
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"outputs/{job_id}/").get("Contents", [])
    assert [o["Key"] for o in listed] == [output_key(job_id)]
