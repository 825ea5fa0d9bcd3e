"""Driving GPU consumers from outside, for the integration tests and the benchmarks.

Each scenario gets its own topic prefix and consumer group on a running stack, so it never
competes with the stack's own consumer or other tests: create the topics, upload a clip,
queue job specs directly on ``job.queued`` (what the quota agent does), start consumer
processes (``python -m gpu_consumers``) with their own settings, and read the topics back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.status_fold import fold
from schemas import serde
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS, JOB_QUEUED, load_topic_specs, schema_by_topic
from tapmask.events import EventProducer, envelope, producer_config
from tapmask.settings import Settings
from tapmask.storage import s3_client
from tapmask.topics_admin import ensure_topics

REPO_ROOT = Path(__file__).resolve().parent.parent


def isolated(base: Settings, tag: str, **overrides: Any) -> Settings:
    """``base`` with a fresh topic prefix and consumer group; creates the prefixed topics."""
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(update={"topic_prefix": f"{run}.", "consumer_group": f"gpu-{run}", **overrides})
    ensure_topics(settings.kafka_bootstrap, load_topic_specs(), settings.topic_prefix)
    return settings


def env_of(settings: Settings, **extra: Any) -> dict[str, str]:
    """Environment for a child process that agrees with ``settings``."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"TAPMASK_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update({k: str(v) for k, v in extra.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def upload_clip(settings: Settings, path: Path, key: str | None = None) -> dict[str, Any]:
    """Upload ``path`` and return the spec fields that describe it (bucket, key, metadata)."""
    from gpu_consumers.engine.video_io import probe

    key = key or f"uploads/{uuid.uuid4().hex}/source"
    s3_client(settings).upload_file(str(path), settings.s3_bucket, key)
    info = probe(path)
    return {
        "s3_bucket": settings.s3_bucket, "video_key": key,
        "video": {
            "container": "mp4", "codec": "h264", "width": info.display_width, "height": info.display_height,
            "fps_num": info.fps.numerator, "fps_den": info.fps.denominator, "frame_count": info.frame_count,
            "duration_s": float(info.frame_count / info.fps), "rotation": 0, "has_audio": False, "audio_codec": None,
        },
    }


def job_spec(source: dict[str, Any], x: float, y: float, job_id: str | None = None, mode: str = "blur", **extra: Any) -> dict[str, Any]:
    """A JobSpec for ``source`` (from ``upload_clip``) with a click at (x, y) on frame 0."""
    return envelope() | source | {
        "job_id": job_id or uuid.uuid4().hex, "video_id": uuid.uuid4().hex, "owner_id": "chaos-user", "tier": "pro",
        "points": [{"x": x, "y": y, "frame": 0, "label": 1}], "box": None, "mode": mode,
        "options": {"margin_px": 4, "blur_kernel": 31, "export_masks": False},
        "max_output_height": None, "attempt": 1,
    } | extra


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str, context: Callable[[], str] = lambda: "",
               poll_s: float = 0.05) -> None:
    """Poll `cond` until it is true; fail the test with `what` and `context()` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{context()}"
        time.sleep(poll_s)


def queue_jobs(settings: Settings, specs: Iterable[dict[str, Any]], partition: int | None = None,
               raw: Iterable[bytes] = ()) -> None:
    """Produce job specs (and ``raw`` undecodable values) on ``job.queued``, acknowledged;
    all on ``partition`` when given (else by key)."""
    if partition is None and not raw:
        producer = EventProducer(settings)
        producer.publish_many([(JOB_QUEUED, s["job_id"], s) for s in specs])
        producer.close()
        return
    from confluent_kafka import Producer

    p = Producer(producer_config(settings))
    kw = {} if partition is None else {"partition": partition}
    for value in raw:
        p.produce(settings.topic(JOB_QUEUED), key=b"garbage", value=value, **kw)
    for s in specs:
        p.produce(settings.topic(JOB_QUEUED), key=s["job_id"].encode(), value=serde.encode("JobSpec", s), **kw)
    assert p.flush(30) == 0


class MetadataServer:
    """A local stand-in for the instance-metadata service: ``url(name)`` answers 404 until
    ``notify(name)``, then 200 with a spot ``instance-action`` notice."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.notices: dict[str, dict] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_PUT(self) -> None:  # noqa: N802 - IMDSv2 token
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"token")

            def do_GET(self) -> None:  # noqa: N802
                notice = outer.notices.get(self.path.split("/")[1])
                self.send_response(200 if notice else 404)
                self.end_headers()
                self.wfile.write(json.dumps(notice).encode() if notice else b"Not Found")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}/latest/meta-data/spot/instance-action"

    def notify(self, name: str) -> None:
        self.notices[name] = {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ConsumerProc:
    """A ``python -m gpu_consumers`` child process with its own log file."""

    name: str
    settings: Settings
    log_dir: Path
    extra_env: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    generation: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.generation}.log"

    def start(self) -> ConsumerProc:
        self.generation += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gpu_consumers"], cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT,
                env=env_of(self.settings, **self.extra_env), start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def worker_prefix(self) -> str:
        return f"-{self.pid}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def busy(self) -> bool:
        """True when its log shows a job started and not yet committed/cancelled."""
        text = self.log_text()
        last_start = text.rfind("job.start")
        return last_start >= 0 and max(text.rfind("job.committed"), text.rfind("job.cancelled")) < last_start

    def assigned(self) -> bool:
        return "consumer.assigned" in self.log_text()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL when it does not exit within 15 s (only our own process)."""
        if self.alive():
            self.kill(signal.SIGTERM)
            if self.wait(15) is None:
                self.kill(signal.SIGKILL)
                self.wait(5)


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[tuple[Any, dict[str, Any]]]:
    """Every (message, decoded record) on ``topic`` now (end offsets read first)."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        name = settings.topic(topic)
        meta = c.list_topics(name, timeout=10).topics[name]
        ends = {}
        for p in meta.partitions:
            _lo, hi = c.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            ends[p] = hi
        c.assign([TopicPartition(name, p, 0) for p, hi in ends.items() if hi > 0])
        want = {p: hi for p, hi in ends.items() if hi > 0}
        out: list[tuple[Any, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        schema = schema_by_topic()[topic]
        # Read past the high watermarks until a poll brings nothing: Tansu 0.6 reports the base
        # offset of a partition's last batch + 1 as its high watermark, short of the real end.
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                if not want:
                    break
                continue
            if msg.error():
                continue
            out.append((msg, serde.decode(schema, msg.value()) if msg.value() is not None else {}))
            if msg.offset() + 1 >= want.get(msg.partition(), 0):
                want.pop(msg.partition(), None)
        return out
    finally:
        c.close()


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offset per partition of ``job.queued`` (-1: none)."""
    name = settings.topic(JOB_QUEUED)
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.consumer_group,
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        got = c.committed([TopicPartition(name, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def job_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each job's status, folded from its progress and completion events with the status
    agent's own rules (processors.status_fold), in the order the broker holds them."""
    events = [("progress", m, r) for m, r in read_topic(settings, JOB_PROGRESS)]
    events += [("completed", m, r) for m, r in read_topic(settings, JOB_COMPLETED)]
    events.sort(key=lambda e: (e[1].timestamp()[1], e[2]["occurred_at"]))
    snaps: dict[str, dict[str, Any]] = {}
    for kind, _m, rec in events:
        new = fold(snaps.get(rec["job_id"]), kind, rec)
        if new is not None:
            snaps[rec["job_id"]] = new
    return snaps
