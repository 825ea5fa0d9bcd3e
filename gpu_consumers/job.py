"""Running one queued job: download → backend (engine) → upload → completion event, with
bounded retries.

* Output keys derive from the job id alone (``outputs/{job_id}/output.mp4``, and the
  per-frame masks under ``outputs/{job_id}/masks/``), so a redelivered job overwrites its
  own output instead of leaving a twin. Masks (when the backend wrote them, i.e. when
  ``options.export_masks``) are uploaded before the video, the video before the completion
  event (whose ``masks_key`` is then the masks prefix), and that before the commit.
* Every try takes a new ``attempt`` number from the ledger (Valkey): it grows on redelivery
  and on each retry, and goes on every progress and completion event.
* The completion event's id is derived from the job id (``stable_id(job, "job.completed")``):
  a job completed twice (its worker died between the completion and the commit) produces
  the same event id, and readers de-duplicate it; the status fold ignores it anyway
  (terminal states never change).
* Failures: permanent (``EngineError``: the video or prompt is at fault) → ``failed`` at
  once; retryable (anything else; out of memory halves the size of the next try) → wait
  2 s, 4 s (cancellable) and try again, up to ``consumer_retry_attempts`` tries counted
  across consumers; then ``failed`` with a readable reason. The caller dead-letters it.
* Progress: the engine's callbacks, plus a heartbeat that repeats the latest stage every
  ``progress_interval_s`` (≤ 2 s) while a step (download, tracking, upload) says nothing.
  The percent is overall and never goes backwards within an attempt.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gpu_consumers.backends import Backend, make_backend, masks_dir
from gpu_consumers.engine.errors import JobCancelled
from gpu_consumers.ledger import JobLedger
from gpu_consumers.retry import PermanentJobError, backoff_s, classify, describe, missing_object
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS
from tapmask.events import EventProducer, envelope, job_failed
from tapmask.settings import Settings

log = structlog.get_logger()

# Overall percent band of each stage: (start, end). "processing" starts after tracking when
# the engine tracks in a pass of its own, else right after the download.
STAGE_BANDS = {"extracting": (0.0, 5.0), "tracking": (5.0, 45.0), "processing": (45.0, 95.0), "encoding": (95.0, 99.9)}
MAX_PROGRESS_GAP_S = 2.0
MASK_UPLOAD_THREADS = 8  # below boto3's default pool of 10 connections


def output_key(job_id: str) -> str:
    """Where a job's video goes: derived from the job id only (idempotent redelivery)."""
    return f"outputs/{job_id}/output.mp4"


def masks_key_prefix(job_id: str) -> str:
    """Where a job's per-frame masks go (the API zips this prefix): from the job id only."""
    return f"outputs/{job_id}/masks/"


def upload_masks(s3: Any, bucket: str, folder: Path, prefix: str, cancelled: threading.Event,
                 threads: int = MASK_UPLOAD_THREADS) -> int:
    """Upload every file of ``folder`` under ``prefix`` (same names), a few at a time, each
    streamed from disk (one PUT per file: masks are small); returns how many. Raises the first failure (the job is retried) and
    ``JobCancelled`` when ``cancelled`` is set; files not yet started are then skipped."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    types = {".png": "image/png", ".json": "application/json"}

    def put(path: Path) -> None:
        if cancelled.is_set():
            return
        with path.open("rb") as body:
            s3.put_object(Bucket=bucket, Key=prefix + path.name, Body=body,
                          ContentType=types.get(path.suffix, "application/octet-stream"))

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="masks-upload") as pool:
        futures = [pool.submit(put, f) for f in files]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in done:
            f.result()  # re-raise the first failure
    if cancelled.is_set():
        raise JobCancelled("cancelled while uploading the masks")
    return len(files)


def stable_id(*parts: str) -> str:
    """Deterministic event id; the same formula as ``processors.app.stable_id``, so an event
    the consumer emits and the one the status agent derives for it share their id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "tapmask:" + ":".join(parts)).hex


@dataclass
class JobContext:
    """One delivery of a job as the runner sees it; ``attempt`` changes with each try."""

    spec: dict[str, Any]
    attempt: int = 0
    scale: float = 1.0  # < 1 after an out-of-memory failure: the backend runs smaller
    tries: int = 0  # tries made by this consumer for this delivery
    failures: int = 0  # retryable failures so far, all consumers
    error: str = ""  # the reason of a final failure
    completed: bool = True  # False when the job ended "failed" (it then has no output)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.spec["job_id"]


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended (cancellation raises JobCancelled instead)."""

    kind: str  # "complete" | "failed" | "already_done"
    event: dict[str, Any] | None
    dead_letter: str | None = None  # set for "failed": why, for the DLQ record


class ProgressReporter:
    """Publishes progress of one attempt: throttled callbacks plus a heartbeat thread."""

    def __init__(self, producer: EventProducer, job: JobContext, worker_id: str, interval_s: float) -> None:
        self.producer, self.job, self.worker_id = producer, job, worker_id
        self.interval_s = min(interval_s, MAX_PROGRESS_GAP_S)
        self.stage, self.done, self.total = "extracting", 0, int(job.spec["video"]["frame_count"])
        self.percent = 0.0
        self.tracked = False
        self.last_sent = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def overall(self, stage: str, done: int, total: int) -> float:
        if stage == "tracking":
            self.tracked = True
        lo, hi = STAGE_BANDS.get(stage, (0.0, 99.9))
        if stage == "processing" and not self.tracked:
            lo = STAGE_BANDS["tracking"][0]
        frac = min(1.0, done / total) if total else 0.0
        return round(min(99.9, lo + (hi - lo) * frac), 2)

    def __call__(self, stage: str, done: int, total: int, force: bool = False) -> None:
        with self._lock:
            self.stage, self.done, self.total = stage, done, total
            self.percent = max(self.percent, self.overall(stage, done, total))
            if not force and time.monotonic() - self.last_sent < self.interval_s:
                return
            self._send()

    def _send(self) -> None:
        self.last_sent = time.monotonic()
        try:
            self.producer.publish(JOB_PROGRESS, self.job.job_id, envelope(self.job.spec.get("correlation_id")) | {
                "job_id": self.job.job_id, "attempt": self.job.attempt, "state": self.stage, "percent": self.percent,
                "frames_done": self.done, "frames_total": self.total, "worker_id": self.worker_id, "message": None,
            }, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the completion is not
            log.warning("progress.publish_failed", job_id=self.job.job_id, error=str(exc))

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s / 4):
            with self._lock:
                if time.monotonic() - self.last_sent >= self.interval_s:
                    self._send()


class JobRunner:
    """Runs job deliveries with one backend, S3 client, producer and ledger."""

    def __init__(
        self, settings: Settings, s3: Any, producer: EventProducer, worker_id: str,
        ledger: JobLedger | None = None, backend: Backend | None = None,
    ) -> None:
        self.settings, self.s3, self.producer, self.worker_id = settings, s3, producer, worker_id
        self.ledger = ledger if ledger is not None else JobLedger(None)
        self.backend = backend if backend is not None else make_backend(
            settings.consumer_backend, s3=s3, settings=settings)

    # ---- one delivery, with retries ----------------------------------------------------
    def run(self, job: JobContext, cancelled: threading.Event) -> Outcome:
        """Run ``job`` until it completes or fails for good; every event it published is
        acknowledged when this returns. Raises JobCancelled when ``cancelled`` is set."""
        s = self.settings
        while True:
            counts = self.ledger.start(job.job_id)
            job.attempt, job.tries = max(int(job.spec.get("attempt") or 1), counts.starts), job.tries + 1
            job.failures, job.scale = counts.failures, 0.5 ** counts.ooms
            log.info("job.try", job_id=job.job_id, attempt=job.attempt, failures=counts.failures, crashes=counts.crashes)
            if counts.done:
                # Finished, then its worker died before the commit. The runner commits it after
                # checking its output is there (a failed job has none).
                log.info("job.already_done", job_id=job.job_id, outcome=counts.outcome)
                job.completed = counts.outcome != "failed"
                self._cleanup(job)  # it may have died between its completion and its clean-up
                if not job.completed:  # its dead-letter record may be missing: the runner writes it (again)
                    return Outcome("already_done", None, dead_letter=counts.last_error or "failed")
                return Outcome("already_done", None)
            if counts.failures >= s.consumer_retry_attempts:
                return self._fail(job, "retries_exhausted", counts.last_error or "Processing failed repeatedly.")
            if counts.crashes >= s.consumer_max_crashes:
                return self._fail(job, "worker_crashed", (
                    f"The job stopped its worker {counts.crashes} times without finishing; "
                    "it was given up so that it cannot block the queue."))
            try:
                return Outcome("complete", self._try(job, cancelled))
            except Exception as exc:  # noqa: BLE001 - classified below
                kind = classify(exc)
                if kind == "cancelled":
                    raise
                if kind == "permanent":
                    log.warning("job.permanent_failure", job_id=job.job_id, error=str(exc))
                    return self._fail(job, getattr(exc, "code", "engine_error"), describe(exc))
                counts = self.ledger.failed(job.job_id, describe(exc), oom=kind == "oom")
                job.failures = counts.failures
                log.warning("job.retryable_failure", job_id=job.job_id, attempt=job.attempt, kind=kind,
                            failures=counts.failures, error=f"{type(exc).__name__}: {exc}")
                if counts.failures >= s.consumer_retry_attempts:
                    return self._fail(job, "out_of_memory" if kind == "oom" else "retries_exhausted", describe(exc))
                delay = backoff_s(counts.failures, s.consumer_retry_backoff_s, s.consumer_retry_backoff_factor)
                if cancelled.wait(delay):
                    raise JobCancelled("cancelled while waiting to retry") from exc

    def _fail(self, job: JobContext, code: str, reason: str) -> Outcome:
        job.completed = False
        event = job_failed(job.spec, code, reason, job.attempt)
        event["event_id"] = stable_id(job.job_id, "job.completed")
        self.producer.publish(JOB_COMPLETED, job.job_id, event)
        self.ledger.finished(job.job_id, "failed", error=f"{code}: {reason}")
        self._cleanup(job)
        job.error = reason
        return Outcome("failed", event, dead_letter=f"{code}: {reason}")

    def _cleanup(self, job: JobContext) -> None:
        cleanup = getattr(self.backend, "cleanup", None)
        if cleanup is not None:
            cleanup(job)

    def _check_source_still_there(self, spec: dict[str, Any]) -> None:
        """The user may delete the video while its job runs: then upload nothing (the API has
        already removed the video's objects) and fail the job with that reason."""
        try:
            self.s3.head_object(Bucket=spec["s3_bucket"], Key=spec["video_key"])
        except Exception as exc:
            if missing_object(exc):
                raise PermanentJobError("source_missing", "The video was deleted while it was being "
                                        "processed, so no output was kept.") from exc
            raise

    # ---- one try ------------------------------------------------------------------------
    def _try(self, job: JobContext, cancelled: threading.Event) -> dict[str, Any]:
        spec = job.spec
        timings = job.timings
        timings.clear()
        with ProgressReporter(self.producer, job, self.worker_id, self.settings.progress_interval_s) as report, \
                tempfile.TemporaryDirectory(prefix=f"tapmask-{job.job_id[:8]}-", dir=self.settings.work_dir) as tmp:
            src, dst = Path(tmp) / "source", Path(tmp) / "output.mp4"
            t0 = time.monotonic()
            report("extracting", 0, int(spec["video"]["frame_count"]), force=True)
            try:
                self.s3.download_file(spec["s3_bucket"], spec["video_key"], str(src))
            except Exception as exc:
                if missing_object(exc):
                    raise PermanentJobError("source_missing", "The uploaded video is no longer available "
                                            "(it was deleted or has expired); upload it again.") from exc
                raise
            timings["download_s"] = time.monotonic() - t0
            if cancelled.is_set():
                raise JobCancelled("cancelled after download")
            frames = self.backend.process(src, dst, job, report, cancelled.is_set)
            timings["process_s"] = time.monotonic() - t0 - timings["download_s"]
            if cancelled.is_set():
                raise JobCancelled("cancelled before upload")
            report("encoding", frames, frames, force=True)
            self._check_source_still_there(spec)
            masks_key = None
            masks = masks_dir(dst)
            if masks.is_dir():
                t1 = time.monotonic()
                masks_key = masks_key_prefix(job.job_id)
                uploaded = upload_masks(self.s3, spec["s3_bucket"], masks, masks_key, cancelled)
                timings["masks_upload_s"] = time.monotonic() - t1
                log.info("job.masks_uploaded", job_id=job.job_id, files=uploaded, prefix=masks_key)
            t1 = time.monotonic()
            key = output_key(job.job_id)
            self.s3.upload_file(str(dst), spec["s3_bucket"], key, ExtraArgs={
                "ContentType": "video/mp4", "Metadata": {"attempt": str(job.attempt), "worker": self.worker_id}})
            timings["upload_s"] = time.monotonic() - t1
        event = envelope(spec.get("correlation_id")) | {
            "job_id": job.job_id, "video_id": spec["video_id"], "owner_id": spec["owner_id"],
            "attempt": job.attempt, "outcome": "complete", "error_code": None, "error": None,
            "output_bucket": spec["s3_bucket"], "output_key": key, "masks_key": masks_key,
            "frames": frames, "timings": timings,
        }
        event["event_id"] = stable_id(job.job_id, "job.completed")
        self.producer.publish(JOB_COMPLETED, job.job_id, event)
        self.ledger.finished(job.job_id)
        self._cleanup(job)
        log.info("job.complete", job_id=job.job_id, attempt=job.attempt, frames=frames, **timings)
        return event
