"""TapMask video engine: given a video and a click on an object, hide that object everywhere.

Public entry point: `process_video`. Pieces, one job per module:

* `prompts`  - `Point`, `Box`, `Prompt`, display <-> coded coordinate mapping;
* `video_io` - `probe`, streaming `VideoReader` / `VideoWriter` (PyAV);
* `masks`    - the `MaskProvider` interface and the `FixedRegionMasker` stand-in;
* `effects`  - blur / pixelate / fill inside a mask, untouched elsewhere;
* `pipeline` - `process_video`, wiring them together;
* `errors`   - `EngineError` and its subclasses, each with a readable message.
"""

from .effects import MODES, apply_blur, apply_effect, apply_fill, apply_pixelate
from .errors import (
    EmptyVideo,
    EngineError,
    InvalidPrompt,
    JobCancelled,
    NoVideoStream,
    PromptOutOfRange,
    UndecodableVideo,
    UnsupportedMode,
)
from .masks import FixedRegionMasker, MaskProvider
from .pipeline import STAGE_PROCESSING, ProcessResult, process_video, validate_prompt
from .prompts import Box, Point, Prompt
from .video_io import VideoInfo, probe

__all__ = [
    "MODES",
    "STAGE_PROCESSING",
    "Box",
    "EmptyVideo",
    "EngineError",
    "FixedRegionMasker",
    "InvalidPrompt",
    "JobCancelled",
    "MaskProvider",
    "NoVideoStream",
    "Point",
    "ProcessResult",
    "Prompt",
    "PromptOutOfRange",
    "UndecodableVideo",
    "UnsupportedMode",
    "VideoInfo",
    "apply_blur",
    "apply_effect",
    "apply_fill",
    "apply_pixelate",
    "probe",
    "process_video",
    "validate_prompt",
]
