"""Chaos: 24 jobs through 3 GPU consumer processes (real broker, real S3, real engine) while
consumers are SIGKILLed at random moments (8 kills; a consumer in the middle of a job is
preferred, killed at a random point of it) and restarted.

Then: every job is ``complete`` (its events folded with the status agent's rules), each has
exactly one output object, and no offset was ever committed before its output existed:
each commit the consumers made was preceded (in their audit log) by a HEAD that found the
output, and by the broker's copy of the job's completion event, and the output's final
LastModified (1 s resolution in SeaweedFS) is not after the last commit of its job.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from gpu_consumers import harness as h
from gpu_consumers.engine.video_io import probe
from gpu_consumers.job import output_key
from schemas.topics import JOB_COMPLETED, JOB_QUEUED
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration
JOBS, CONSUMERS, KILLS = 24, 3, 8


def test_sigkill_chaos_loses_nothing_and_duplicates_nothing(stack, stack_settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    settings = h.isolated(stack_settings, "chaos", consumer_idle_timeout_s=0.0, progress_interval_s=0.5,
                          kafka_session_timeout_ms=6000, consumer_chunk_frames=25,
                          consumer_commit_log=str(tmp_path / "commits.jsonl"))
    clip = make_sample_clip(tmp_path / "clip.mp4", seconds=2.0, width=160, height=96, fps=25, audio=False)
    source = h.upload_clip(settings, clip)
    x, y = sample_object_center(0, 160, 96, 25)
    specs = [h.job_spec(source, x, y) for _ in range(JOBS)]
    ids = {s["job_id"] for s in specs}
    consumers = [h.ConsumerProc(f"c{i}", settings, tmp_path / "logs").start() for i in range(CONSUMERS)]
    kills: list[str] = []
    try:
        t0 = time.monotonic()
        h.queue_jobs(settings, specs[:12])
        h.queue_jobs(settings, specs[12:])  # two batches: two producers' worth of keys
        restart_at: dict[str, float] = {}
        while len(kills) < KILLS:
            assert time.monotonic() - t0 < 120, f"only {len(kills)} kills in 120 s"
            # Prefer a consumer in the middle of a job; wait up to 8 s for one, else any.
            deadline = time.monotonic() + 8.0
            busy: list[h.ConsumerProc] = []
            while not busy and time.monotonic() < deadline:
                for c in consumers:
                    if not c.alive() and time.monotonic() >= restart_at.get(c.name, 0):
                        c.start()
                busy = [c for c in consumers if c.alive() and c.busy()]
                time.sleep(0.1)
            victim = rng.choice(busy or [c for c in consumers if c.alive()] or consumers)
            time.sleep(rng.uniform(0.0, 0.8))  # a random moment: download, track, render, upload, commit
            victim.kill()
            victim.wait(5)
            restart_at[victim.name] = time.monotonic() + rng.uniform(0.5, 2.0)
            kills.append(f"{time.monotonic() - t0:.1f}s {victim.name}{' (busy)' if busy else ''}")
        for c in consumers:
            if not c.alive():
                c.start()

        # Generous: 8 kills each cost a session timeout plus a rejoin, on 2 shared cores.
        # Wait for both ends: every job complete in the status topic AND every queued offset
        # committed. A consumer killed after its completion was acked but before its commit
        # leaves a job that is already `complete` while its redelivery (which finds the output
        # and commits as `already_done`) is still on its way.
        states: dict = {}
        ends = {m.partition(): m.offset() + 1 for m, _ in h.read_topic(settings, JOB_QUEUED, timeout_s=30)}
        assert len(ends) and sum(ends.values()) == JOBS, ends  # every queued job was read back
        committed: dict[int, int] = {}
        while time.monotonic() - t0 < 400:
            states = h.job_states(settings)
            if all(states.get(j, {}).get("state") == "complete" for j in ids):
                committed = h.committed_offsets(settings)
                if all(committed.get(p) == end for p, end in ends.items()):
                    break
                print(f"{time.monotonic() - t0:.0f}s all complete, commits behind:",
                      {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p) != end})
            time.sleep(2)
    finally:
        for c in consumers:
            c.stop()
    print("kills:", kills)
    print("states:", Counter((s["state"], s["attempt"]) for j, s in states.items() if j in ids))

    # 1. every job complete
    assert {j: states.get(j, {}).get("state") for j in ids} == dict.fromkeys(ids, "complete")
    assert any(states[j]["attempt"] > 1 for j in ids), "no job was ever redelivered: the kills missed"

    # 2. exactly one output each, a playable video of the clip's length
    s3 = s3_client(settings)
    for job_id in ids:
        listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"outputs/{job_id}/").get("Contents", [])
        assert [o["Key"] for o in listed] == [output_key(job_id)]
        assert not s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"work/{job_id}/").get("Contents")
    one = tmp_path / "one.mp4"
    s3.download_file(settings.s3_bucket, output_key(next(iter(ids))), str(one))
    assert probe(one).frame_count == 50

    # 3. no offset committed before its output existed
    commits = [json.loads(line) for line in (tmp_path / "commits.jsonl").read_text().splitlines()]
    completions: dict[str, int] = {}
    for msg, rec in h.read_topic(settings, JOB_COMPLETED):
        if rec["outcome"] == "complete":
            completions[rec["job_id"]] = min(completions.get(rec["job_id"], 1 << 62), msg.timestamp()[1])
    last_commit: dict[str, int] = {}
    for c in commits:
        job_id = c["job_id"]
        assert job_id in ids and c["outcome"] in ("complete", "already_done"), c
        assert c["output"] and c["output"]["size"] > 0, f"commit without output: {c}"
        assert completions[job_id] <= c["commit_started_ms"], f"commit before the completion was acked: {c}"
        last_commit[job_id] = max(last_commit.get(job_id, 0), c["commit_started_ms"])
    assert set(last_commit) == ids
    for job_id, at in last_commit.items():
        modified = s3.head_object(Bucket=settings.s3_bucket, Key=output_key(job_id))["LastModified"]
        assert int(modified.timestamp() * 1000) <= at
    # every queued job's offset is committed (nothing left behind), none twice by design
    assert all(committed.get(p) == end for p, end in ends.items()), (committed, ends)
    print("commits:", Counter(c["outcome"] for c in commits), "jobs redelivered:",
          sum(states[j]["attempt"] > 1 for j in ids))
