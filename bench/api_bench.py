"""API benchmark: the status view and the upload path on the real embedded servers.

    python bench/api_bench.py [--jobs 100000] [--rate 500] [--seconds 20] [--upload-mb 500] [--storage s3|memory]

Starts Tansu, SeaweedFS and Valkey on free ports in a temporary folder (no Faust, no GPU
consumer), then measures:

1. view rebuild: ``--jobs`` JobStatus records are produced to the status topic, and a fresh
   ``StatusView`` replays the topic from the beginning until ready (target < 5 s for 100,000);
2. GET /api/v1/status/{jobId} latency: the API runs as its own uvicorn process with that
   view; an open-loop generator (asyncio, keep-alive connections) sends ``--rate`` requests/s
   for ``--seconds`` to random jobs, each with its owner's JWT (so auth and the Valkey rate
   limiter are on the path). Latency is counted from each request's *scheduled* time, so a
   stall is not hidden by the generator waiting (target p99 < 10 ms);
3. a ``--upload-mb`` MB multipart upload streamed to S3 through the API: throughput, and the
   API process's peak RSS growth over its RSS just before the upload (target < 100 MB).

The generator and the server share this machine's cores; the figures include that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from confluent_kafka import Producer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.auth import mint_token  # noqa: E402
from api.view import StatusView  # noqa: E402
from schemas import serde  # noqa: E402
from schemas.topics import JOB_STATUS  # noqa: E402
from tapmask.devstack import DevStack, pick_free_dev_ports  # noqa: E402
from tapmask.devstack_proc import pick_free_port_pairs  # noqa: E402
from tapmask.samples import make_sample_clip  # noqa: E402
from tapmask.settings import Settings  # noqa: E402

MiB = 1024 * 1024


def produce_status(settings: Settings, n: int, owners: int) -> dict[str, str]:
    """n JobStatus snapshots (one per job) on the status topic; returns job id -> owner."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 200000, "enable.idempotence": True, "acks": "all"})
    topic = settings.topic(JOB_STATUS)
    jobs: dict[str, str] = {}
    now = int(time.time() * 1000)
    for i in range(n):
        job_id, owner = uuid.uuid4().hex, f"user-{i % owners}"
        jobs[job_id] = owner
        value = serde.encode("JobStatus", {
            "job_id": job_id, "video_id": uuid.uuid4().hex, "owner_id": owner, "state": "complete", "percent": 100.0,
            "frames_done": 75, "frames_total": 75, "attempt": 1, "mode": "blur", "error_code": None, "error": None,
            "output_bucket": settings.s3_bucket, "output_key": f"outputs/{job_id}/output.mp4", "masks_key": None,
            "created_at": now - i, "updated_at": now - i, "seen_event_ids": [uuid.uuid4().hex, uuid.uuid4().hex]})
        while True:
            try:
                producer.produce(topic, key=job_id.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    return jobs


def time_rebuild(settings: Settings) -> tuple[float, int]:
    view = StatusView(settings)
    t0 = time.perf_counter()
    view.start()
    view.wait_ready(600)
    took = time.perf_counter() - t0
    view.stop()
    return took, len(view.jobs)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], rate: float, conns: int) -> tuple[list[float], list[float], int, float]:
    """Open loop: request i is due at t0 + i/rate; ``conns`` workers (one keep-alive connection
    each) take the next due request. Returns latencies from due time and service times (ms)."""
    latencies: list[float] = []
    service: list[float] = []
    errors = 0
    nxt = 0
    t0 = time.perf_counter() + 0.2

    async def worker() -> None:
        nonlocal errors, nxt
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while nxt < len(requests):
            i = nxt
            nxt += 1
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            writer.write(requests[i])
            status = await _read_response(reader)
            done = time.perf_counter()
            if status != 200:
                errors += 1
            latencies.append((done - due) * 1000)
            service.append((done - sent) * 1000)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return latencies, service, errors, time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def upload_big(url: str, token: str, pid: int, head: bytes, size_mb: int) -> tuple[float, int, int]:
    boundary = "benchboundary"
    peak = [rss_kb(pid)]
    base = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.02)

    def body():  # type: ignore[no-untyped-def]
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\r\n").encode() + head
        chunk = os.urandom(MiB)
        sent = len(head)
        while sent < size_mb * MiB:
            yield chunk
            sent += len(chunk)
        yield f"\r\n--{boundary}--\r\n".encode()

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/api/v1/upload", content=body(), timeout=600,
                   headers={"Authorization": f"Bearer {token}", "content-type": f"multipart/form-data; boundary={boundary}"})
    took = time.perf_counter() - t0
    stop.set()
    t.join()
    r.raise_for_status()
    return took, base, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--owners", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--upload-mb", type=int, default=500)
    ap.add_argument("--storage", default="s3", choices=["s3", "memory"])
    args = ap.parse_args()
    try:
        import uvloop  # the API runs on uvloop too (uvicorn picks it when installed)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    home = Path(tempfile.mkdtemp(prefix="tapmask-api-bench-"))
    api_port = pick_free_port_pairs(1, low=23600, high=24400)[0]
    ports = pick_free_dev_ports()
    settings = Settings(home=home, api_port=api_port, broker_storage=args.storage, kafka_bootstrap=f"127.0.0.1:{ports['dev_kafka_port']}",
                        s3_endpoint=f"http://127.0.0.1:{ports['dev_s3_port']}", redis_url=f"redis://127.0.0.1:{ports['dev_valkey_port']}/0",
                        rate_limit_per_minute=10**9, log_level="WARNING", dev_start_timeout_s=120, **ports)
    stack = DevStack(settings, reporter=lambda _line: None)
    stack.up()
    api = None
    print(f"# api_bench: {os.cpu_count()} cores, broker storage {args.storage}; "
          f"command: python bench/api_bench.py --jobs {args.jobs} --rate {args.rate:g} --seconds {args.seconds:g} --upload-mb {args.upload_mb} --storage {args.storage}")
    try:
        t0 = time.perf_counter()
        jobs = produce_status(settings, args.jobs, args.owners)
        print(f"produced {len(jobs)} status records in {time.perf_counter() - t0:.1f}s")
        took, n = time_rebuild(settings)
        print(f"view rebuild: {n} jobs in {took:.2f}s ({n / took:,.0f} records/s)   target < 5 s: {'MET' if took < 5 else 'MISSED'}")

        env = stack.child_env() | {"TAPMASK_LOG_LEVEL": "WARNING"}
        t0 = time.perf_counter()
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(api_port),
                                "--no-access-log", "--log-level", "warning"], cwd=REPO, env=env)
        url = f"http://127.0.0.1:{api_port}"
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None:
                raise SystemExit("the API exited")
            time.sleep(0.1)
        print(f"API process start to ready (view caught up): {time.perf_counter() - t0:.2f}s, RSS {rss_kb(api.pid) / 1024:.0f} MB")

        tokens = {f"user-{i}": mint_token(settings, f"user-{i}", "pro", ttl_s=3600) for i in range(args.owners)}
        ids = list(jobs)
        rnd = random.Random(7)

        def req() -> bytes:
            job = rnd.choice(ids)
            return (f"GET /api/v1/status/{job} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {tokens[jobs[job]]}\r\n\r\n").encode()

        asyncio.run(load(api_port, [req() for _ in range(1000)], args.rate, args.conns))  # warm-up
        total = int(args.rate * args.seconds)
        lat, svc, errors, elapsed = asyncio.run(load(api_port, [req() for _ in range(total)], args.rate, args.conns))
        p99 = pct(lat, 99)
        print(f"GET status at {args.rate:g} req/s for {args.seconds:g}s ({total} requests, {args.jobs} jobs in view): achieved "
              f"{total / elapsed:.0f} req/s, errors {errors}; latency from scheduled time p50 {pct(lat, 50):.2f} ms, "
              f"p99 {p99:.2f} ms, p99.9 {pct(lat, 99.9):.2f} ms, max {max(lat):.1f} ms; service time p50 {pct(svc, 50):.2f} ms "
              f"p99 {pct(svc, 99):.2f} ms, mean {statistics.fmean(svc):.2f} ms   target p99 < 10 ms: {'MET' if p99 < 10 else 'MISSED'}")

        clip = make_sample_clip(home / "head.mp4", seconds=1.0, width=160, height=96, fps=10)
        head = clip.read_bytes()[:4096]
        took, base, peak = upload_big(url, tokens["user-0"], api.pid, head, args.upload_mb)
        growth = (peak - base) / 1024
        print(f"upload {args.upload_mb} MB: {took:.1f}s = {args.upload_mb / took:.0f} MB/s; API RSS before {base / 1024:.0f} MB, "
              f"peak {peak / 1024:.0f} MB, growth {growth:.0f} MB   target < 100 MB: {'MET' if growth < 100 else 'MISSED'}")
    finally:
        if api is not None:
            api.terminate()
            api.wait(20)
        stack.down()


if __name__ == "__main__":
    main()
