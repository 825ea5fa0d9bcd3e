"""Which failures are worth another try, and how long to wait before it.

* permanent - the video or the request is at fault (the engine raises ``EngineError`` with a
  sentence for the user): retrying cannot help, the job fails at once;
* out of memory - retryable, and the next try runs smaller (half the batch / resolution);
* everything else - retryable: S3 or broker hiccups, timeouts, and bugs we did not foresee
  (bounded, so a poison job still ends up ``failed`` and on the dead-letter topic).

Backoff: ``base * factor ** (n - 1)`` after the n-th failure: 2 s, 4 s with the defaults.
"""

from __future__ import annotations

from typing import Literal

from gpu_consumers.engine.errors import EngineError, JobCancelled

Kind = Literal["cancelled", "permanent", "oom", "retryable"]


class PermanentJobError(Exception):
    """A failure outside the engine that no retry can fix (e.g. the source was deleted)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return self.message


def missing_object(exc: BaseException) -> bool:
    """An S3 404 (NoSuchKey / Not Found)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.cuda.OutOfMemoryError and friends (matched by name: no torch import)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__.lower()
    return "outofmemory" in name or "out of memory" in str(exc).lower()[:200]


def classify(exc: BaseException) -> Kind:
    """How the runner treats ``exc`` raised by a try."""
    if isinstance(exc, JobCancelled):
        return "cancelled"
    if is_out_of_memory(exc):
        return "oom"
    if isinstance(exc, (EngineError, PermanentJobError)):
        return "permanent"
    return "retryable"


def backoff_s(failures: int, base: float = 2.0, factor: float = 2.0) -> float:
    """Seconds to wait after the ``failures``-th failure before trying again."""
    return base * factor ** max(0, failures - 1)


def describe(exc: BaseException) -> str:
    """A reason a person can read for a job that failed on ``exc``."""
    if isinstance(exc, (EngineError, PermanentJobError)):
        return str(exc)
    if is_out_of_memory(exc):
        return "The video needed more memory than the worker has, even at reduced size."
    text = str(exc).strip() or type(exc).__name__
    return f"Processing failed after repeated errors ({type(exc).__name__}: {text[:300]})."
