"""TapMask video engine: given a video and a click on an object, hide that object everywhere.

Public entry point: `process_video`. Pieces, one job per module:

* `prompts`  - `Point`, `Box`, `Prompt`, display <-> coded coordinate mapping;
* `video_io` - `probe`, streaming `VideoReader` / `VideoWriter` (PyAV);
* `tracking` - pass 1: the `VideoTracker` interface, `ClassicTracker` (default, CPU, no
               weights), `ProviderTracker` (wraps a streaming `MaskProvider`);
* `masktrack`- `MaskTrack`: every frame's mask + confidence + lost flag, compact, save/load;
* `livetrack`- `LiveTrack`: final masks published while tracking runs (render alongside);
* `trackchild`- `TrackingChild`: the tracking pass in a child process feeding a `LiveTrack`;
* `framering`- the child's decoded frames handed to the renderer (the video decoded once);
* `framearena`- memory files the parent lends its tracking children for their small frames;
* `render`   - pass 2: `render_segment` (frames [start, end) -> encoded segment),
               `join_segments` (+ audio), `plan_chunks`, `render_video`;
* `erase`    - background from neighbouring frames along the camera motion + inpainting;
* `masks`    - the streaming `MaskProvider` interface and the `FixedRegionMasker` stand-in;
* `effects`  - blur / pixelate / fill inside a mask, untouched elsewhere;
* `pipeline` - `track_video` and `process_video` (= track, render, join);
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
from .masktrack import MaskTrack
from .pipeline import STAGE_PROCESSING, ProcessResult, process_video, track_video, validate_prompt
from .render import EffectOptions, join_segments, plan_chunks, render_segment, render_video
from .tracking import STAGE_TRACKING, ClassicTracker, ProviderTracker, VideoTracker
from .prompts import Box, Point, Prompt
from .video_io import VideoInfo, probe

__all__ = [
    "MODES",
    "STAGE_PROCESSING",
    "STAGE_TRACKING",
    "ClassicTracker",
    "EffectOptions",
    "MaskTrack",
    "ProviderTracker",
    "VideoTracker",
    "join_segments",
    "plan_chunks",
    "render_segment",
    "render_video",
    "track_video",
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
