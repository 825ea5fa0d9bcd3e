"""Errors the video engine raises.

Every failure the engine can foresee is an `EngineError` with a message a person can read
(it is shown to the uploader as is), so callers never have to catch PyAV or OpenCV errors.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: `message` is a human-readable sentence, safe to show to the user."""

    #: Short machine-readable code (stable across releases) for APIs and metrics.
    code: str = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UndecodableVideo(EngineError):
    """The file is missing, not a media file, or its video cannot be decoded."""

    code = "undecodable_video"


class NoVideoStream(EngineError):
    """The file is a valid media file but has no video stream (e.g. audio only)."""

    code = "no_video_stream"


class EmptyVideo(EngineError):
    """The file is zero bytes long, or its video stream has no frames."""

    code = "empty_video"


class InvalidPrompt(EngineError):
    """The prompt cannot be used (e.g. it has neither a positive point nor a box)."""

    code = "invalid_prompt"


class PromptOutOfRange(InvalidPrompt):
    """A point or box lies outside the frame, or its frame index is past the end."""

    code = "prompt_out_of_range"


class UnsupportedMode(EngineError):
    """The requested effect mode does not exist or is not implemented yet."""

    code = "unsupported_mode"


class JobCancelled(EngineError):
    """The caller asked to stop (its `should_cancel` returned True)."""

    code = "job_cancelled"
