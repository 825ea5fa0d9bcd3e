"""One job end to end: probe, validate the prompt, then stream decode -> mask -> effect -> encode.

Frames flow through one at a time, so memory does not grow with the video's length, and
encoding happens as frames are produced: there is a single progress stage,
``"processing"`` (`STAGE_PROCESSING`), whose `done` counts frames decoded, masked, hidden
and handed to the encoder. Progress is reported once at the start (0), then at most every
`PROGRESS_INTERVAL_S`, and once more when the output file is complete, with
``done == total ==`` the number of frames actually written (which can differ from the
probed count in damaged files).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from .effects import DEFAULT_FEATHER_PX, apply_effect, check_mode
from .errors import EmptyVideo, EngineError, InvalidPrompt, JobCancelled, PromptOutOfRange
from .masks import FixedRegionMasker, MaskProvider
from .prompts import Prompt, prompt_to_coded
from .video_io import DecodedFrame, VideoInfo, VideoReader, VideoWriter, probe

STAGE_PROCESSING = "processing"
PROGRESS_INTERVAL_S = 0.5

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What a finished job produced, and where its time went."""

    frames: int  # frames written; fewer than `probed_frames` when the input is cut short
    probed_frames: int
    width: int
    height: int
    fps: Fraction
    rotation: int
    audio: str  # "copy", "transcode" or "none"
    #: Seconds per stage: probe, decode, mask, effect, encode (audio included), total.
    seconds: dict[str, float] = field(default_factory=dict)


def validate_prompt(prompt: Prompt, info: VideoInfo) -> Prompt:
    """Check `prompt` (display coordinates) against the video; return it in coded coordinates.

    Raises `InvalidPrompt` when nothing designates the object, `PromptOutOfRange` when a
    point or box leaves the frame or names a frame past the end.
    """
    if not prompt.positive_points and prompt.box is None:
        raise InvalidPrompt("Click on the object (a positive point) or draw a box around it.")
    width, height, count = info.display_width, info.display_height, info.frame_count

    def check_frame(frame: int) -> None:
        if not 0 <= frame < count:
            raise PromptOutOfRange(
                f"Frame {frame} does not exist: the video has {count} frames (0 to {count - 1})."
            )

    for p in prompt.points:
        if p.label not in (0, 1):
            raise InvalidPrompt(f"A point's label must be 1 (object) or 0 (not the object), not {p.label}.")
        if not (math.isfinite(p.x) and math.isfinite(p.y) and 0 <= p.x < width and 0 <= p.y < height):
            raise PromptOutOfRange(
                f"The point ({p.x:g}, {p.y:g}) is outside the {width}x{height} picture."
            )
        check_frame(p.frame)
    if prompt.box is not None:
        b = prompt.box
        inside = all(math.isfinite(v) for v in (b.x0, b.y0, b.x1, b.y1)) and (
            0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height
        )
        if not inside:
            raise PromptOutOfRange(
                f"The box ({b.x0:g}, {b.y0:g})-({b.x1:g}, {b.y1:g}) is empty or leaves the "
                f"{width}x{height} picture."
            )
        check_frame(b.frame)
    return prompt_to_coded(prompt, info.rotation, info.width, info.height)


def process_video(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    prompt: Prompt,
    mode: str,
    *,
    margin_px: int = 8,
    blur_kernel: int = 99,
    feather_px: int = DEFAULT_FEATHER_PX,
    masker: MaskProvider | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    crf: int = 18,
    preset: str = "veryfast",
) -> ProcessResult:
    """Hide the prompted object in every frame of `in_path`; write the result to `out_path`.

    `prompt` is in display coordinates (as a player shows the video). `mode` is "blur",
    "pixelate" or "fill". `masker` defaults to the `FixedRegionMasker` stand-in.
    `should_cancel` is polled before each frame; when it returns True the partial output
    is deleted and `JobCancelled` raised. Every foreseen failure is an `EngineError`
    subclass with a readable message; on any error no output file is left behind.
    """
    started = time.perf_counter()
    seconds = dict.fromkeys(("probe", "decode", "mask", "effect", "encode"), 0.0)
    check_mode(mode)
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise EngineError("The output file must not be the input file.")
    info = probe(in_path)
    coded_prompt = validate_prompt(prompt, info)
    seconds["probe"] = time.perf_counter() - started

    masker = masker if masker is not None else FixedRegionMasker()
    total, done = info.frame_count, 0
    last_report = time.monotonic()
    if progress is not None:
        progress(STAGE_PROCESSING, 0, total)
    try:
        masker.prepare(info, coded_prompt)
        with VideoReader(in_path, info) as reader, VideoWriter(
            out_path, info, reader.audio_stream, crf=crf, preset=preset
        ) as writer:
            items = iter(reader)
            while True:
                t = time.perf_counter()
                item = next(items, None)
                seconds["decode"] += time.perf_counter() - t
                if item is None:
                    break
                if not isinstance(item, DecodedFrame):
                    t = time.perf_counter()
                    writer.write_audio(item)
                    seconds["encode"] += time.perf_counter() - t
                    continue
                if should_cancel is not None and should_cancel():
                    raise JobCancelled(f"The job was cancelled after {done} of {total} frames.")

                t = time.perf_counter()
                mask, _confidence = masker.mask_for(item.index, item.image)
                if mask.shape[:2] != item.image.shape[:2]:
                    raise EngineError(
                        f"The mask for frame {item.index} is {mask.shape[1]}x{mask.shape[0]}, "
                        f"the frame is {item.image.shape[1]}x{item.image.shape[0]}."
                    )
                seconds["mask"] += (t2 := time.perf_counter()) - t
                hidden = apply_effect(
                    mode, item.image, mask, margin_px=margin_px, feather_px=feather_px, blur_kernel=blur_kernel
                )
                seconds["effect"] += (t3 := time.perf_counter()) - t2
                writer.write_frame(hidden, item.pts, item.index)
                seconds["encode"] += time.perf_counter() - t3

                done += 1
                total = max(total, done)
                if progress is not None and time.monotonic() - last_report >= PROGRESS_INTERVAL_S:
                    progress(STAGE_PROCESSING, done, total)
                    last_report = time.monotonic()
            if done == 0:
                raise EmptyVideo(f"No frame of {info.path.name!r} could be decoded.")
            t = time.perf_counter()
            writer.close()
            seconds["encode"] += time.perf_counter() - t
            audio_mode = writer.audio_mode
    finally:
        masker.close()

    if progress is not None:
        progress(STAGE_PROCESSING, done, done)
    seconds["total"] = time.perf_counter() - started
    return ProcessResult(
        frames=done,
        probed_frames=info.frame_count,
        width=info.width,
        height=info.height,
        fps=info.fps,
        rotation=info.rotation,
        audio=audio_mode,
        seconds=seconds,
    )
