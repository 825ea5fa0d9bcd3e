"""A job longer than ``max.poll.interval.ms`` keeps its consumer in the group.

The runner does not raise ``max.poll.interval.ms`` without bound: it pauses the partitions
and keeps polling while the job runs in a worker thread. Here the poll interval is set to
7 s and the job (``sleep:16`` backend) lasts more than twice that. A consumer that stopped
polling for the job would be dropped by librdkafka after 7 s (a revoke, then its commit
refused and the job run again); this one must run the job once, on attempt 1, keep its
partitions throughout and commit it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_consumers import harness as h
from schemas.topics import JOB_COMPLETED
from tapmask.samples import make_sample_clip
from tapmask.settings import Settings

pytestmark = pytest.mark.integration


def test_a_job_longer_than_the_poll_interval_keeps_group_membership(stack, stack_settings: Settings, tmp_path: Path) -> None:
    settings = h.isolated(stack_settings, "member", consumer_idle_timeout_s=0.0, progress_interval_s=0.5,
                          kafka_session_timeout_ms=6000, kafka_max_poll_interval_ms=7000,
                          consumer_backend="sleep:16")
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=0.4, width=64, height=48, fps=25, audio=False)
    spec = h.job_spec(h.upload_clip(settings, clip), 32, 24)
    c = h.ConsumerProc("m", settings, tmp_path / "logs").start()
    try:
        h.wait_until(c.assigned, 60, "the consumer to join the group", lambda: c.log_text()[-3000:])
        h.queue_jobs(settings, [spec])
        h.wait_until(lambda: "job.committed" in c.log_text(), 120, "the job to be committed",
                     lambda: c.log_text()[-3000:])
    finally:
        c.stop()
    log = c.log_text()
    assert log.count("job.start") == 1, log[-3000:]
    during = log.split("job.start", 1)[1].split("job.committed", 1)[0]  # (stop() revokes at the end)
    assert "consumer.revoked" not in during, "the group took the partitions mid-job"
    assert "consumer.commit_failed" not in log and "maximum poll interval" not in log
    (done,) = [r for _m, r in h.read_topic(settings, JOB_COMPLETED) if r["job_id"] == spec["job_id"]]
    assert (done["outcome"], done["attempt"]) == ("complete", 1)
    committed = h.committed_offsets(settings)
    assert sum(o for o in committed.values() if o > 0) == 1
