"""One job end to end: probe, validate the prompt, track (pass 1), render + encode (pass 2).

`process_video` is the composition of the two public passes, which a resumable job can
also drive chunk by chunk (see `render`):

1. `track_video` -> `MaskTrack` (all frames' masks, confidences, lost frames), stage
   ``"tracking"`` (`STAGE_TRACKING`);
2. `render.render_video` -> segments of `render.plan_chunks(chunk_frames)` joined with the
   input's audio, stage ``"processing"`` (`STAGE_PROCESSING`), whose `done` counts frames
   rendered and encoded.

`process_video` runs the two at once: the tracker works in a child process (`trackchild`;
a thread for short videos and for trackers that cannot) and publishes each frame's mask, and
for erase the camera's motion, once it is final (`livetrack.LiveTrack`), and rendering
follows it frame by frame; the frames are the same as rendering after tracking. A child
also hands the frames it decodes to the renderer (`framering`; blur, pixelate and fill), so
the video is decoded once.

Progress is reported at the start of each stage (0), at most every `PROGRESS_INTERVAL_S`,
and at its end with ``done == total``. Frames are decoded and encoded one at a time; only
small frames (tracking) and compact masks are kept for the whole video.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import cv2

from .effects import DEFAULT_FEATHER_PX, check_mode
from .errors import EngineError, InvalidPrompt, PromptOutOfRange
from .framering import FrameRing
from .livetrack import LiveTrack, LiveTrackFailed
from .masks import MaskProvider
from .masktrack import MaskTrack
from .prompts import Prompt, prompt_to_coded
from .render import DEFAULT_CHUNK_FRAMES, EffectOptions, render_video
from .trackchild import TrackingChild, worth_a_child
from .trackchild import context as tracking_context
from .tracking import STAGE_TRACKING, ClassicTracker, ProviderTracker, VideoTracker, track_accepts
from .video_io import VideoInfo, probe

STAGE_PROCESSING = "processing"
PROGRESS_INTERVAL_S = 0.5
#: Render while tracking runs (every mode; erase also waits for its neighbours' masks and
#: motions); see `process_video`. False: track, then render (same output).
OVERLAP = True
#: When overlapping, run a tracker that allows it (`VideoTracker.runs_in_child_process`) in
#: a child process rather than a thread: the two loops then no longer share one GIL
#: (`trackchild`: at 640x360 about 5 ms a frame instead of 7.4 in two threads). False: a thread.
TRACK_IN_CHILD = True
#: With the tracker in a child process, the renderer takes the frames the child decodes
#: (`framering`) instead of decoding the file a second time (blur, pixelate, fill).
SHARE_FRAMES = True

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What a finished job produced, and where its time went."""

    frames: int  # frames written; fewer than `probed_frames` when the input is cut short
    probed_frames: int
    width: int  # the source's coded size
    height: int
    fps: Fraction
    rotation: int
    audio: str  # "copy", "transcode" or "none"
    #: Seconds per stage: probe, track, render (decode + effect + encode), masks, total.
    seconds: dict[str, float] = field(default_factory=dict)
    #: Frames where the object was not found (occluded, out of view, or tracking failed).
    lost_frames: tuple[int, ...] = ()
    mean_confidence: float = 1.0
    #: The output's coded size: the source's, or smaller under `max_output_height`.
    output_width: int = 0
    output_height: int = 0


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


@contextlib.contextmanager
def _opencv_threads(count: int | None):
    """OpenCV's thread pool limited to `count` threads for the block (None: unchanged)."""
    if count is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class _Throttle:
    """Forwards progress at most every PROGRESS_INTERVAL_S, plus every start and end."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress, self.last = progress, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if done == 0 or done >= total or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.progress(stage, done, total)


def track_video(
    in_path: str | os.PathLike[str],
    prompt: Prompt,
    *,
    tracker: VideoTracker | None = None,
    info: VideoInfo | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    feed: LiveTrack | None = None,
) -> MaskTrack:
    """Pass 1: validate `prompt` (display coordinates) and track the object in every frame.

    `tracker` defaults to `ClassicTracker()`. Raises the `EngineError`s of `probe` and
    `validate_prompt`. The returned track can be saved (`MaskTrack.save`) and rendered later.
    `feed`: a `LiveTrack` the tracker publishes final masks to as it goes (see `livetrack`).
    """
    info = info if info is not None else probe(in_path)
    coded = validate_prompt(prompt, info)
    tracker = tracker if tracker is not None else ClassicTracker()
    if feed is None or not track_accepts(tracker, "feed"):  # else: published whole at the end
        return tracker.track(in_path, info, coded, progress=progress, should_cancel=should_cancel)
    return tracker.track(in_path, info, coded, progress=progress, should_cancel=should_cancel, feed=feed)


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
    tracker: VideoTracker | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    masks_out: str | os.PathLike[str] | None = None,
    track_out: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    max_output_height: int | None = None,
) -> ProcessResult:
    """Hide the prompted object in every frame of `in_path`; write the result to `out_path`.

    `prompt` is in display coordinates (as a player shows the video). `mode` is "blur",
    "pixelate", "fill" or "erase". The tracker is `tracker`, else `masker` (a streaming
    `MaskProvider`, wrapped by `ProviderTracker`), else `ClassicTracker()`. `masks_out`: a
    folder for one PNG per frame + masks.json (at the output's size); `track_out`: a file for
    the `MaskTrack`. `max_output_height` caps the output's shorter side (the free tier's
    export limit; `video_io.capped_size`): a larger source is scaled down after the effect.
    `should_cancel` is polled before each frame; when it returns True the partial output
    is deleted and `JobCancelled` raised. Every foreseen failure is an `EngineError`
    subclass with a readable message; on any error no output file is left behind.
    """
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    check_mode(mode)
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise EngineError("The output file must not be the input file.")
    info = probe(in_path)
    seconds["probe"] = time.perf_counter() - started
    if tracker is None and masker is not None:
        tracker = ProviderTracker(masker)
    if tracker is None:
        tracker = ClassicTracker(camera_motion=mode == "erase")
    report = _Throttle(progress)

    options = EffectOptions(mode=mode, margin_px=margin_px, feather_px=feather_px, blur_kernel=blur_kernel,
                            crf=crf, preset=preset, max_output_height=max_output_height)
    out_w, out_h = options.output_size(info)
    coded = validate_prompt(prompt, info)  # before any thread starts: a bad prompt fails at once
    # The tracker runs in a child process (or a thread) and publishes final masks, and for
    # erase the camera's motion, as it goes (`LiveTrack`), while this thread decodes,
    # renders and encodes the frames whose masks (and, for erase, neighbours) are final.
    # Either way the frames are the same as rendering after tracking.
    feed = LiveTrack(info.width, info.height) if OVERLAP else None
    child = ring = None
    if (feed is not None and TRACK_IN_CHILD and getattr(tracker, "runs_in_child_process", False)
            and worth_a_child(info.frame_count)):
        # The child's decoded frames are shared with the renderer (`framering`), except for
        # erase, which reads frames on both sides of the one it renders.
        if SHARE_FRAMES and mode != "erase" and track_accepts(tracker, "tap"):
            ring = FrameRing.create(tracking_context(), info.width, info.height)
        child = TrackingChild(tracker, in_path, info, coded, ring=ring).start()
        if child is None and ring is not None:
            ring.close()
            ring = None
    lock = threading.Lock()
    tracked = threading.Event()
    stop = threading.Event()
    box: dict[str, object] = {}
    done = [0]

    def report_locked(stage: str, d: int, total: int) -> None:
        with lock:
            report(stage, d, total)

    def cancelled() -> bool:
        # The caller's answer is asked until it first says True, then kept (`stop`): the
        # tracking relay polls on every message from the child, and a cancelled job must
        # not keep calling back (a callback may be a request to the job store).
        if stop.is_set():
            return True
        if should_cancel is not None and should_cancel():
            stop.set()
            return True
        return False

    def run_tracking() -> None:
        t0 = time.perf_counter()
        try:
            report_locked(STAGE_TRACKING, 0, info.frame_count)
            if child is not None:
                track = child.run(feed, progress=report_locked, should_cancel=cancelled)
            else:
                track = track_video(in_path, prompt, tracker=tracker, info=info, progress=report_locked,
                                    should_cancel=cancelled, feed=feed)
            box["track"] = track
            if feed is not None:
                feed.finish(track)
            report_locked(STAGE_TRACKING, len(track), len(track))
            with lock:  # processing is reported from here on (stages never interleave)
                tracked.set()
                report(STAGE_PROCESSING, 0, len(track))
                if done[0]:
                    report(STAGE_PROCESSING, min(done[0], len(track) - 1), len(track))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
            if feed is not None:
                feed.fail(exc)
        finally:
            seconds["track"] = time.perf_counter() - t0

    def on_frame(index: int) -> None:
        with lock:
            done[0] += 1
            if tracked.is_set():
                total = len(box["track"])
                report(STAGE_PROCESSING, min(done[0], total - 1), total)

    def tracking_error() -> BaseException:
        return box["error"]  # type: ignore[return-value]

    thread = threading.Thread(target=run_tracking, name="tapmask-tracking", daemon=True)
    t = time.perf_counter()
    # With tracking and rendering in two threads (plus the decoder's and x264's), OpenCV's
    # own pool only adds CPU on the small regions the engine works on (measured at 640x360:
    # blur took 1.24 instead of 1.59 CPU-seconds for the same wall time); erase keeps it
    # (its warps gain from it).
    thread.start()
    with _opencv_threads(1 if mode != "erase" else None):
        try:
            if feed is None:
                thread.join()
                if "error" in box:
                    raise tracking_error()
                track_for_render = box["track"]
            else:
                track_for_render = feed
            with tempfile.TemporaryDirectory(prefix="tapmask-seg-", dir=work_dir) as tmp:
                frames, audio_mode = render_video(in_path, out_path, track_for_render, options, tmp,
                                                  chunk_frames=chunk_frames, info=info,
                                                  should_cancel=cancelled, on_frame=on_frame,
                                                  shared_frames=ring)
            if ring is not None:
                ring.abandon()  # every frame is rendered: the child never waits for a slot
            thread.join()
            if "error" in box:
                raise tracking_error()
        except BaseException as exc:
            stop.set()
            if ring is not None:
                ring.abandon()
            thread.join()
            try:
                os.unlink(out_path)
            except FileNotFoundError:
                pass
            if isinstance(exc, LiveTrackFailed) and "error" in box:
                raise tracking_error() from None
            raise
        finally:
            if ring is not None:
                ring.close()
    track = box["track"]
    if track_out is not None:
        track.save(track_out)
    seconds["render"] = time.perf_counter() - t  # tracking included when they overlap
    report(STAGE_PROCESSING, frames, frames)
    if masks_out is not None:
        t = time.perf_counter()
        track.write_masks(masks_out, size=(out_w, out_h), rotation=info.rotation)
        seconds["masks"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    return ProcessResult(
        frames=frames,
        probed_frames=info.frame_count,
        width=info.width,
        height=info.height,
        fps=info.fps,
        rotation=info.rotation,
        audio=audio_mode,
        seconds=seconds,
        lost_frames=tuple(track.lost_frames()),
        mean_confidence=round(float(track.confidence.mean()), 4) if len(track) else 0.0,
        output_width=out_w,
        output_height=out_h,
    )
