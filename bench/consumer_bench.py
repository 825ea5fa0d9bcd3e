"""GPU consumer benchmarks (issue 3), on an embedded stack this script starts and stops.

1. Redelivery latency: two consumers; a long job (``sleep:60`` backend) starts on one; that
   consumer is SIGKILLed; the time until the job is running again on the other consumer
   (its ``job.start`` log line). Median of N trials (each on a fresh topic prefix and
   group). The same after SIGTERM (the consumer leaves the group at once) for comparison.
2. Runner overhead: one consumer with the ``noop`` backend (download, copy, upload,
   progress, completion, HEAD, commit; no video work) drains M queued jobs: jobs per second.

    python bench/consumer_bench.py                    # 10 kills, 5 SIGTERMs, 200 no-op jobs
    python bench/consumer_bench.py --kills 3 --terms 0 --jobs 50
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_consumers import harness as h  # noqa: E402
from tapmask.devstack import DevStack, pick_free_dev_ports  # noqa: E402
from tapmask.samples import make_sample_clip  # noqa: E402
from tapmask.settings import Settings  # noqa: E402

STAMP = re.compile(r"^(\S+Z) \[\w+\s*\] (\S+)")


def events(log: str, name: str) -> list[float]:
    """Epoch seconds of every ``name`` line of a consumer log."""
    out = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if m and m.group(2) == name:
            out.append(datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp())
    return out


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def handoff(base: Settings, source: dict, work: Path, sig: int, trial: int) -> float | None:
    """Seconds from the signal to the job's start on the other consumer."""
    s = h.isolated(base, f"bench-{signal.Signals(sig).name.lower()}-{trial}", consumer_backend="sleep:60",
                   consumer_idle_timeout_s=0.0)
    cons = [h.ConsumerProc(f"{signal.Signals(sig).name.lower()}{trial}-{n}", s, work / "logs").start() for n in "ab"]
    try:
        if not wait(lambda: all(c.assigned() for c in cons), 60):
            return None
        time.sleep(2.0)  # let the group settle after the second join
        h.queue_jobs(s, [h.job_spec(source, 10, 10)])
        if not wait(lambda: any(events(c.log_text(), "job.start") for c in cons), 60):
            return None
        first = next(c for c in cons if events(c.log_text(), "job.start"))
        other = next(c for c in cons if c is not first)
        time.sleep(0.5)
        t_sig = time.time()
        first.kill(sig)
        if not wait(lambda: events(other.log_text(), "job.start"), 60):
            return None
        return events(other.log_text(), "job.start")[0] - t_sig
    finally:
        for c in cons:
            c.kill(signal.SIGKILL)
            c.wait(5)


def overhead(base: Settings, source: dict, work: Path, jobs: int) -> tuple[float, float]:
    """(jobs per second, ms per job) of one consumer with the no-op backend."""
    s = h.isolated(base, "bench-noop", consumer_backend="noop", consumer_idle_timeout_s=0.0)
    c = h.ConsumerProc("noop", s, work / "logs").start()
    try:
        wait(c.assigned, 60)
        h.queue_jobs(s, [h.job_spec(source, 10, 10) for _ in range(jobs)])
        wait(lambda: len(events(c.log_text(), "job.committed")) >= jobs, 600)
        log = c.log_text()
        starts, commits = events(log, "job.start"), events(log, "job.committed")
        span = commits[jobs - 1] - starts[0]
        return (jobs - 1) / (commits[jobs - 1] - commits[0]), 1000 * span / jobs
    finally:
        c.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--terms", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--storage", default="s3", help="embedded broker engine: s3 (default, durable) or memory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tapmask-consumer-bench-"))
    ports = pick_free_dev_ports()
    base = Settings(home=work / "stack", broker_storage=args.storage, kafka_session_timeout_ms=6000,
                    kafka_bootstrap=f"127.0.0.1:{ports['dev_kafka_port']}",
                    s3_endpoint=f"http://127.0.0.1:{ports['dev_s3_port']}",
                    redis_url=f"redis://127.0.0.1:{ports['dev_valkey_port']}/0", **ports)
    stack = DevStack(base, reporter=lambda _m: None)
    stack.up([])
    try:
        clip = make_sample_clip(work / "clip.mp4", seconds=1.0, width=160, height=90, fps=25, audio=False)
        source = h.upload_clip(base, clip)
        print(f"broker storage: {args.storage}; session.timeout.ms={base.kafka_session_timeout_ms}; "
              f"heartbeat.interval.ms={base.kafka_heartbeat_interval_ms}")
        for name, sig, n in (("SIGKILL", signal.SIGKILL, args.kills), ("SIGTERM", signal.SIGTERM, args.terms)):
            if n <= 0:
                continue
            got = [handoff(base, source, work, sig, i) for i in range(n)]
            ok = [g for g in got if g is not None]
            print(f"redelivery after {name}: median {statistics.median(ok):.2f} s "
                  f"(min {min(ok):.2f}, max {max(ok):.2f}, n={len(ok)}/{n}): {', '.join(f'{g:.2f}' for g in ok)}")
        if args.jobs > 1:
            rate, ms = overhead(base, source, work, args.jobs)
            print(f"runner overhead, no-op backend, 1 consumer: {rate:.1f} jobs/s ({ms:.0f} ms per job, "
                  f"{args.jobs} jobs of a {clip.stat().st_size // 1024} KiB clip)")
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
