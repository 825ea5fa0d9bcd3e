"""What turns a downloaded source into an output file: the video engine, or a stand-in.

* ``video``        - the engine (``gpu_consumers.engine``), with chunk checkpoints when the
                     engine offers its two-pass API (see ``checkpoints.py``);
* ``noop``         - copies the input to the output: measures the runner's own overhead;
* ``sleep:SECONDS`` - a job that takes SECONDS, reporting progress and honouring cancellation,
                     then copies: redelivery benchmarks and tests that need a job to be
                     "mid-job" for a while without burning CPU.

Every backend has ``process(src, dst, job, progress, should_cancel) -> frames``, where
``job`` is the ``JobContext`` (spec, attempt, scale, checkpoints).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gpu_consumers.engine.errors import JobCancelled

ProgressFn = Callable[[str, int, int], None]


def masks_dir(dst: Path) -> Path:
    """Where a backend writes a job's per-frame masks (one PNG per frame + masks.json), when
    the job asks for them: beside the output, in the job's temp dir. The runner uploads
    whatever is there under ``outputs/{job_id}/masks/``; a backend that writes none (noop,
    sleep) leaves the job without masks."""
    return Path(dst).parent / "masks"


class Backend(Protocol):
    def process(self, src: Path, dst: Path, job: Any, progress: ProgressFn, should_cancel: Callable[[], bool]) -> int: ...


class NoopBackend:
    """Output = input."""

    def process(self, src: Path, dst: Path, job: Any, progress: ProgressFn, should_cancel: Callable[[], bool]) -> int:
        total = int(job.spec["video"]["frame_count"])
        shutil.copyfile(src, dst)
        progress("processing", total, total)
        return total


class SleepBackend:
    """Output = input, after ``seconds`` of cancellable waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, src: Path, dst: Path, job: Any, progress: ProgressFn, should_cancel: Callable[[], bool]) -> int:
        total = int(job.spec["video"]["frame_count"]) or 100
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self.seconds:
            if should_cancel():
                raise JobCancelled("The job was cancelled.")
            progress("processing", int(total * elapsed / self.seconds), total)
            time.sleep(0.05)
        shutil.copyfile(src, dst)
        progress("processing", total, total)
        return total


def make_backend(name: str, **kwargs: Any) -> Backend:
    """The backend for the ``consumer_backend`` setting."""
    name = name.strip().lower()
    if name == "noop":
        return NoopBackend()
    if name.startswith("sleep:"):
        return SleepBackend(float(name.split(":", 1)[1]))
    if name in ("video", "engine", ""):
        from gpu_consumers.checkpoints import VideoBackend

        return VideoBackend(**kwargs)
    raise ValueError(f"unknown consumer backend {name!r} (video | noop | sleep:SECONDS)")
