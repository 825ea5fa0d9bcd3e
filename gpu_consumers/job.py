"""Running one queued job: download → engine → upload → completion event.

Output keys derive from the job id alone, so a redelivered job overwrites its own output
instead of leaving a twin. Progress goes out at least every ``progress_interval_s``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gpu_consumers.engine.errors import EngineError, JobCancelled
from gpu_consumers.engine.pipeline import process_video
from gpu_consumers.engine.prompts import Box, Point, Prompt
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS
from tapmask.events import EventProducer, envelope, job_failed
from tapmask.settings import Settings

log = structlog.get_logger()


def output_key(job_id: str) -> str:
    """Where a job's video goes: derived from the job id only (idempotent redelivery)."""
    return f"outputs/{job_id}/output.mp4"


def prompt_of(spec: dict[str, Any]) -> Prompt:
    """The engine prompt for a job spec."""
    points = [Point(x=p["x"], y=p["y"], frame=int(p["frame"]), label=int(p["label"])) for p in spec["points"]]
    b = spec.get("box")
    box = Box(x0=b["x0"], y0=b["y0"], x1=b["x1"], y1=b["y1"], frame=int(b["frame"])) if b else None
    return Prompt(points=points, box=box)


class JobRunner:
    """Runs job specs with one engine, S3 client and producer."""

    def __init__(self, settings: Settings, s3: Any, producer: EventProducer, worker_id: str) -> None:
        self.settings, self.s3, self.producer, self.worker_id = settings, s3, producer, worker_id

    def _progress_reporter(self, spec: dict[str, Any]) -> Callable[[str, int, int], None]:
        last = [0.0]

        def report(stage: str, done: int, total: int, force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - last[0] < self.settings.progress_interval_s:
                return
            last[0] = now
            percent = 100.0 * done / total if total else 0.0
            self.producer.publish(JOB_PROGRESS, spec["job_id"], envelope(spec.get("correlation_id")) | {
                "job_id": spec["job_id"], "attempt": spec["attempt"], "state": stage, "percent": min(percent, 99.9),
                "frames_done": done, "frames_total": total, "worker_id": self.worker_id, "message": None,
            })

        return report

    def run(self, spec: dict[str, Any], cancelled: threading.Event) -> dict[str, Any]:
        """Run the job; returns the completion event, already acknowledged by the broker.

        Raises JobCancelled when ``cancelled`` is set mid-job (nothing is published then).
        """
        report = self._progress_reporter(spec)
        timings: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix=f"tapmask-{spec['job_id'][:8]}-", dir=self.settings.work_dir) as tmp:
            src, dst = Path(tmp) / "source", Path(tmp) / "output.mp4"
            t0 = time.monotonic()
            report("extracting", 0, spec["video"]["frame_count"], force=True)
            self.s3.download_file(spec["s3_bucket"], spec["video_key"], str(src))
            timings["download_s"] = time.monotonic() - t0
            try:
                result = process_video(
                    src, dst, prompt_of(spec), spec["mode"],
                    margin_px=spec["options"]["margin_px"], blur_kernel=spec["options"]["blur_kernel"],
                    progress=report, should_cancel=cancelled.is_set,
                )
            except JobCancelled:
                raise
            except EngineError as exc:  # the video or prompt is at fault: retrying cannot help
                event = job_failed(spec, "engine_error", str(exc), spec["attempt"])
                self.producer.publish(JOB_COMPLETED, spec["job_id"], event)
                return event
            timings["process_s"] = time.monotonic() - t0 - timings["download_s"]
            if cancelled.is_set():
                raise JobCancelled("cancelled before upload")
            report("encoding", result.frames, result.frames, force=True)
            t1 = time.monotonic()
            key = output_key(spec["job_id"])
            self.s3.upload_file(str(dst), spec["s3_bucket"], key, ExtraArgs={"ContentType": "video/mp4"})
            timings["upload_s"] = time.monotonic() - t1
        event = envelope(spec.get("correlation_id")) | {
            "job_id": spec["job_id"], "video_id": spec["video_id"], "owner_id": spec["owner_id"],
            "attempt": spec["attempt"], "outcome": "complete", "error_code": None, "error": None,
            "output_bucket": spec["s3_bucket"], "output_key": key, "masks_key": None,
            "frames": result.frames, "timings": timings,
        }
        self.producer.publish(JOB_COMPLETED, spec["job_id"], event)
        log.info("job.complete", job_id=spec["job_id"], frames=result.frames, **timings)
        return event
