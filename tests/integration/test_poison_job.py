"""Poison jobs on one partition — an undecodable event, a video the engine cannot decode, a
source that is gone, a click outside the picture — each ends ``failed`` at once with a
reason a person can read and a dead-letter record, and the good job queued behind them on
the same partition completes. (Retryable failures, their backoff and their exhaustion are
covered with injected faults in tests/unit/test_consumer_runner.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpu_consumers import harness as h
from schemas.topics import DLQ, JOB_COMPLETED
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration


def test_poison_jobs_fail_readably_and_the_partition_flows(stack, stack_settings: Settings, tmp_path: Path) -> None:
    settings = h.isolated(stack_settings, "poison", consumer_idle_timeout_s=0.0, consumer_retry_backoff_s=0.2)
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=1.0, width=160, height=96, fps=25, audio=False)
    good_source = h.upload_clip(settings, clip)
    x, y = sample_object_center(0, 160, 96, 25)
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.s3_bucket, Key="uploads/poison/source", Body=bytes(clip.read_bytes()[:64]) + b"\0" * 4000)
    undecodable = h.job_spec(good_source | {"video_key": "uploads/poison/source"}, x, y)
    gone = h.job_spec(good_source | {"video_key": "uploads/never-uploaded/source"}, x, y)
    # A click outside the 160x96 frame passes the schema but not the engine: permanent, readable.
    outside = h.job_spec(good_source, 5000.0, 5000.0)
    good = h.job_spec(good_source, x, y)
    jobs = [undecodable, gone, outside, good]
    h.queue_jobs(settings, jobs, partition=3, raw=[b"\x00not an event"])

    consumer = h.ConsumerProc("c", settings, tmp_path / "logs").start()
    try:
        ids = {j["job_id"] for j in jobs}
        deadline_states: dict = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            deadline_states = h.job_states(settings)
            if all(deadline_states.get(j, {}).get("state") in ("complete", "failed") for j in ids):
                break
            time.sleep(1)
    finally:
        consumer.stop()
    states = deadline_states
    assert states[good["job_id"]]["state"] == "complete"
    for job, code, words in ((undecodable, "undecodable_video", "not a video"), (gone, "source_missing", "no longer available"),
                             (outside, "prompt_out_of_range", "outside")):
        st = states[job["job_id"]]
        assert (st["state"], st["error_code"]) == ("failed", code), st
        assert words in st["error"] and "Traceback" not in st["error"], st["error"]
    dead = [r for _m, r in h.read_topic(settings, DLQ)]
    assert len(dead) == 4  # the undecodable event and the three failed jobs
    assert {d["original_offset"] for d in dead} == {0, 1, 2, 3} and all(d["original_partition"] == 3 for d in dead)
    completions = [r for _m, r in h.read_topic(settings, JOB_COMPLETED)]
    assert len(completions) == 4
    assert h.committed_offsets(settings)[3] == 5
