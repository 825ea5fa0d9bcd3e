"""A rebalance in the middle of a job must not leave the busy consumer's partitions paused.

The consumer pauses its partitions while it works. librdkafka keeps that (application)
pause flag on a partition across a rebalance, even one that takes the partition away and
gives it back, so a consumer whose job was revoked used to get its old partitions back
paused for good: their jobs never ran (a CI chaos run found three jobs stuck for 400 s).

Here: consumer ``a`` is busy with a job when ``b`` joins (the rebalance revokes the job),
then ``b`` leaves, so ``a`` owns every partition again, including the job's. The job must
finish, on ``a``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_consumers import harness as h
from schemas.topics import JOB_COMPLETED
from tapmask.samples import make_sample_clip
from tapmask.settings import Settings

pytestmark = pytest.mark.integration


def test_partitions_paused_for_a_revoked_job_are_fetched_again(stack, stack_settings: Settings, tmp_path: Path) -> None:
    settings = h.isolated(stack_settings, "rebal", consumer_idle_timeout_s=0.0, progress_interval_s=0.5,
                          kafka_session_timeout_ms=6000, consumer_backend="sleep:8")
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=0.4, width=64, height=48, fps=25, audio=False)
    source = h.upload_clip(settings, clip)
    first = h.job_spec(source, 32, 24)
    a = h.ConsumerProc("a", settings, tmp_path / "logs").start()
    b = h.ConsumerProc("b", settings, tmp_path / "logs")
    logs = lambda: f"--- a\n{a.log_text()[-3000:]}\n--- b\n{b.log_text()[-3000:]}"  # noqa: E731
    try:
        h.wait_until(a.assigned, 60, "a to join the group", logs)
        h.queue_jobs(settings, [first])
        h.wait_until(a.busy, 30, "a to start the job", logs)
        b.start()
        h.wait_until(lambda: "job.partition_revoked" in a.log_text(), 60, "the rebalance to revoke a's job", logs)
        b.stop()  # SIGTERM: b leaves at once (cancelling the job if it had taken it); a gets all back

        def done() -> bool:
            return any(r["job_id"] == first["job_id"] and r["outcome"] == "complete"
                       for _, r in h.read_topic(settings, JOB_COMPLETED, timeout_s=10))

        # An 8-s job (long enough to be in flight when b joins); paused, it would never run.
        h.wait_until(done, 90, "the job to complete", logs)
        assert "job.complete" in a.log_text()
        assert a.alive()
    finally:
        a.stop()
        b.stop()
