"""Pass 2: render frames [start, end) with a `MaskTrack` into an encoded segment; join segments.

The output of a job is made of *segments*: frame ranges rendered and encoded independently
(`render_segment`), then joined with the input's audio into the final mp4
(`join_segments`). A frame's pixels depend only on the input video, the track and the
effect options, never on which segment it falls in (erase reads `ERASE_RADIUS` frames on
each side, decoded afresh for every segment), and every segment starts with a key frame and
has no B-frames, so its packets can be concatenated as they are. Hence rendering in one
segment or in many, in one process or across redeliveries, gives the same frames;
`process_video` uses the same `plan_chunks` so its output is what a resumed job produces.
(`render_video` writes a video of one chunk with its audio directly: the same video and
audio packets as that segment joined, without reading it back.)

Typical resumable use (issue 3)::

    track = MaskTrack.load(...)            # or track_video(...) then track.save(...)
    for k, (start, end) in enumerate(plan_chunks(len(track), chunk_frames)):
        if segment k is not in S3:
            render_segment(src, track, options, start, end, work / f"seg{k:05d}.mp4")
            upload it
    join_segments([segments...], src, out)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import av
import av.error
import numpy as np

from .effects import DEFAULT_FEATHER_PX, apply_effect, apply_effect_yuv, check_mode
from .erase import ERASE_RADIUS, erase_frame, erase_frame_yuv, grow_mask
from .errors import EngineError, JobCancelled
from .framering import FrameRing
from .masktrack import MaskTrack
from .video_io import DecodedFrame, VideoInfo, VideoReader, VideoWriter, capped_size, probe
from .yuv import Yuv420

#: Encoder settings of every segment. No B-frames: packets of independently encoded
#: segments then concatenate with monotonic timestamps and no decode-order overlap.
SEGMENT_X264_PARAMS = "bframes=0"
DEFAULT_CHUNK_FRAMES = 300


@dataclass(frozen=True, slots=True)
class EffectOptions:
    """How to hide the object: `mode` and its parameters (full-resolution pixels), and how
    to encode: `crf`, `preset`, `max_output_height` (a cap on the output's shorter side, the
    free tier's; None = the source size, see `video_io.capped_size`). Effects are always
    rendered at the source size; a capped output is scaled down after them, as it is encoded.
    """

    mode: str = "blur"
    margin_px: int = 8
    feather_px: int = DEFAULT_FEATHER_PX
    blur_kernel: int = 99
    block_px: int = 16
    fill_color_bgr: tuple[int, int, int] = (0, 0, 0)
    crf: int = 18
    preset: str = "veryfast"
    max_output_height: int | None = None

    def output_size(self, info: VideoInfo) -> tuple[int, int]:
        """The coded (width, height) of the output for a source described by `info`."""
        return capped_size(info.width, info.height, self.max_output_height)


#: How far, in tracking pixels, a tracked mask's edge may be off the object's: measured on
#: bench/engine_quality.py's clips, at most 3.5 at 640x360, 4.3 at 1280x720 (the low-contrast
#: clip's last frames) and 2.6 at 1920x1080; one more for what the clips do not show.
EDGE_UNCERTAINTY_TRACKING_PX = 5


def effective_margin(margin_px: int, track) -> int:
    """The safety margin the effect grows the mask by: `margin_px`, and never less than the
    tracker's edge uncertainty in output pixels (`EDGE_UNCERTAINTY_TRACKING_PX` tracking
    pixels: 10 px for a 640x360 video tracked at 320x180, 20 px at 1280x720, 30 px at 1080p).

    The ClassicTracker works at a fixed small size, so one of its pixels covers more output
    pixels the larger the video; a fixed margin let thin slivers of the object leak at 720p.
    A larger margin asked for is kept (privacy first: a margin can only grow the cover).
    `track` is a `MaskTrack` or `LiveTrack` (its `mask_width` / `mask_height`).
    """
    upscale = max(track.width / track.mask_width, track.height / track.mask_height)
    return max(int(margin_px), math.ceil(EDGE_UNCERTAINTY_TRACKING_PX * upscale - 1e-9))


def plan_chunks(frame_count: int, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> list[tuple[int, int]]:
    """Split ``[0, frame_count)`` into consecutive ``[start, end)`` ranges of `chunk_frames`."""
    return [(s, min(frame_count, s + chunk_frames)) for s in _chunk_starts(chunk_frames, lambda s: s < frame_count)]


def _chunk_starts(chunk_frames: int, has_frame: Callable[[int], bool]) -> Iterator[int]:
    """0, `chunk_frames`, 2 x `chunk_frames`, ... while `has_frame(start)`: the chunks'
    starts, also for a `LiveTrack`, whose length is known only once tracking has decoded
    every frame."""
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    start = 0
    while has_frame(start):
        yield start
        start += chunk_frames


def render_frame(options: EffectOptions, image: np.ndarray | Yuv420, mask: np.ndarray) -> np.ndarray | Yuv420:
    """Apply a per-frame effect (blur, pixelate, fill) inside `mask`: on a BGR picture (a new
    one) or on `Yuv420` planes (in place)."""
    apply = apply_effect_yuv if isinstance(image, Yuv420) else apply_effect
    return apply(options.mode, image, mask, margin_px=options.margin_px, feather_px=options.feather_px,
                 blur_kernel=options.blur_kernel, block_px=options.block_px, fill_color_bgr=options.fill_color_bgr)


def iter_rendered(
    in_path: str | os.PathLike[str],
    track: MaskTrack,
    options: EffectOptions,
    start: int,
    end: int,
    info: VideoInfo | None = None,
    should_cancel: Callable[[], bool] | None = None,
    shared_frames: FrameRing | None = None,
):
    """Yield ``(index, pts, rendered picture, mask)`` for frames ``[start, end)`` (those the
    track has), in order. `track` is a `MaskTrack` or a `LiveTrack` still being published.
    `shared_frames`: the tracking child's decoded frames (`framering`; not for erase), else
    the file is decoded here.

    This is the exact picture that gets encoded (tests compare it with the input to check
    that pixels beyond the safety margin are unchanged): the video's own 4:2:0 planes
    (`Yuv420`) on an 8-bit 4:2:0 video (no colour conversion, see `yuv`; erase: yuv420p
    only, not full-range yuvj420p, whose samples OpenCV's BT.601 conversion would clip),
    else BGR.
    """
    check_mode(options.mode)
    info = info if info is not None else probe(in_path)
    if not track.has_frame(start):
        return
    options = replace(options, margin_px=effective_margin(options.margin_px, track))
    erase = options.mode == "erase"
    radius = ERASE_RADIUS if erase else 0
    grow = options.margin_px + options.feather_px + 1
    first = max(0, start - radius)
    # (DecodedFrame, full mask, grown mask, BGR picture) for frames first .. current + radius.
    # Erase warps its neighbours in BGR, so each frame is converted once as it is read; on
    # 4:2:0 video it is then written back into the frame's own planes (`erase_frame_yuv`).
    window: deque = deque()
    with contextlib.ExitStack() as stack:
        def own_frames(begin: int, pts: list[int | None] | None) -> Iterator[DecodedFrame]:
            reader = stack.enter_context(VideoReader(in_path, info, yuv=not erase or info.pix_fmt == "yuv420p"))
            # The pts are needed to seek to `begin` only; a live track knows them up to there.
            return reader.video_frames(begin, pts if pts is not None else (track.pts if begin > 0 else None))

        if shared_frames is not None and not erase:
            frames = shared_frames.frames(first, own_frames)
        else:
            if shared_frames is not None:
                shared_frames.abandon()  # unread, its full slots would keep the child waiting
            frames = own_frames(first, None)
        exhausted = False
        for i in range(start, end):
            if should_cancel is not None and should_cancel():
                raise JobCancelled(f"The job was cancelled at frame {i}.")
            if not track.has_frame(i):
                break  # the track (the video) ends before `end`
            while not exhausted and (not window or window[-1][0].index < i + radius):
                item = next(frames, None)
                if item is None:
                    exhausted = True
                    break
                if not track.has_frame(item.index):
                    exhausted = True
                    break
                mask = track.full_mask(item.index)
                if erase:
                    bgr = item.image.to_bgr() if isinstance(item.image, Yuv420) else item.image
                    window.append((item, mask, grow_mask(mask, grow), bgr))
                else:
                    window.append((item, mask, None, None))
            while window and window[0][0].index < i - radius:
                window.popleft()
            current = next((w for w in window if w[0].index == i), None)
            if current is None:
                break  # the file ended early: fewer frames than tracked
            frame, mask = current[:2]
            if erase:
                pictures = {w[0].index: (w[3], w[1], w[2]) for w in window}
                if isinstance(frame.image, Yuv420):
                    image = erase_frame_yuv(i, frame.image, pictures, track, options.margin_px, options.feather_px)
                else:
                    image = erase_frame(i, pictures, track, options.margin_px, options.feather_px)
            else:
                image = render_frame(options, frame.image, mask)
            yield i, frame.pts, image, mask


def render_segment(
    in_path: str | os.PathLike[str],
    track: MaskTrack,
    options: EffectOptions,
    start: int,
    end: int,
    out_path: str | os.PathLike[str],
    *,
    info: VideoInfo | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_frame: Callable[[int], None] | None = None,
    shared_frames: FrameRing | None = None,
) -> int:
    """Render frames ``[start, end)`` and encode them (video only) into the mp4 `out_path`.

    Returns the number of frames written. The segment keeps the input's pts, so segments
    of one video can be joined by `join_segments`. It is `options.output_size(info)` large
    (frames scaled down after the effect when `options.max_output_height` caps it). `on_frame(index)` is called after each
    frame is encoded. Raises `JobCancelled` (partial file deleted) when `should_cancel`.
    `shared_frames`: see `iter_rendered`.
    """
    written, _ = _encode_segment(in_path, track, options, start, end, out_path, info, should_cancel, on_frame,
                                 shared_frames, with_audio=False)
    return written


def _encode_segment(in_path: str | os.PathLike[str], track: MaskTrack, options: EffectOptions, start: int, end: int,
                    out_path: str | os.PathLike[str], info: VideoInfo | None,
                    should_cancel: Callable[[], bool] | None, on_frame: Callable[[int], None] | None,
                    shared_frames: FrameRing | None, with_audio: bool) -> tuple[int, str | None]:
    """`render_segment`; `with_audio`: the input's audio is written beside the frames, and
    all of it when the segment turns out to be the video's last (the file is then the whole
    output, as `join_segments` of this one segment would make it). Returns (frames written,
    the audio mode when the file is complete, else None)."""
    info = info if info is not None else probe(in_path)
    written = 0
    tick = float(info.time_base)
    with contextlib.ExitStack() as stack:
        audio = stack.enter_context(_AudioPackets(in_path)) if with_audio else None
        writer = stack.enter_context(VideoWriter(
            out_path, info, audio.stream if audio is not None else None, crf=options.crf, preset=options.preset,
            x264_params=SEGMENT_X264_PARAMS, size=options.output_size(info), faststart=with_audio))
        for index, pts, image, _mask in iter_rendered(in_path, track, options, start, end, info, should_cancel,
                                                      shared_frames):
            if audio is not None and pts is not None:
                audio.write_until(writer, pts * tick)
            writer.write_frame(image, pts, index)
            written += 1
            if on_frame is not None:
                on_frame(index)
        if written == 0:
            raise EngineError(f"No frame in [{start}, {end}) could be decoded.")
        complete = audio is not None and not track.has_frame(start + written)
        if complete:
            audio.write_rest(writer)
    return written, writer.audio_mode if complete else None


class _AudioPackets:
    """The input's first audio stream, packet by packet, for a writer to interleave with its
    video in time order (`join_segments`, and a segment written with its audio)."""

    def __init__(self, in_path: str | os.PathLike[str]) -> None:
        self._container = av.open(str(in_path))
        audio = self._container.streams.audio
        self.stream = audio[0] if audio else None
        self._packets = self._container.demux(self.stream) if self.stream is not None else iter(())
        # Seconds a pts tick, as a float: Fraction arithmetic for every packet cost ~10 us.
        self._tick = float(self.stream.time_base) if self.stream is not None else 0.0
        self._pending = self._next()

    def _next(self) -> av.Packet | None:
        try:
            return next(self._packets, None)
        except av.error.FFmpegError as exc:
            raise EngineError(f"Reading the input's audio failed: {exc}") from exc

    def write_until(self, writer: VideoWriter, seconds: float) -> None:
        """Write the packets that start at or before `seconds` (a packet without a pts, and
        all after it, wait for `write_rest`)."""
        p = self._pending
        while p is not None and p.pts is not None and p.pts * self._tick <= seconds:
            if p.size > 0 and p.dts is not None:
                writer.write_audio(p)
            p = self._next()
        self._pending = p

    def write_rest(self, writer: VideoWriter) -> None:
        """Write every packet not written yet."""
        p = self._pending
        while p is not None:
            if p.size > 0 and p.dts is not None:
                writer.write_audio(p)
            p = self._next()
        self._pending = None

    def __enter__(self) -> _AudioPackets:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()


def join_segments(
    segments: Sequence[str | os.PathLike[str]],
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: VideoInfo | None = None,
) -> str:
    """Concatenate encoded segments (in order) and the input's audio into `out_path`.

    The audio stream is copied or transcoded exactly as `VideoWriter` does; rotation is
    kept. Returns the audio mode ("copy", "transcode" or "none").
    """
    if not segments:
        raise EngineError("There is no segment to join.")
    info = info if info is not None else probe(in_path)
    try:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(av.open(str(segments[0])))
            audio = stack.enter_context(_AudioPackets(in_path))
            writer = stack.enter_context(VideoWriter(out_path, info, audio.stream,
                                                     video_template=first.streams.video[0]))

            def copy_video(container: av.container.InputContainer) -> None:
                stream = container.streams.video[0]
                tick = float(stream.time_base)
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    if packet.pts is not None:
                        audio.write_until(writer, packet.pts * tick)
                    writer.write_video_packet(packet)

            copy_video(first)  # open already: its stream is the template
            for seg in segments[1:]:
                with av.open(str(seg)) as container:
                    copy_video(container)
            audio.write_rest(writer)
            mode = writer.audio_mode
    except av.error.FFmpegError as exc:
        raise EngineError(f"Joining the output segments failed: {exc}") from exc
    return mode


def render_video(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    track: MaskTrack,
    options: EffectOptions,
    work_dir: str | os.PathLike[str],
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    info: VideoInfo | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_frame: Callable[[int], None] | None = None,
    shared_frames: FrameRing | None = None,
) -> tuple[int, str]:
    """All of pass 2 in one call: every chunk of `plan_chunks`, then `join_segments`
    (`shared_frames`: see `iter_rendered`).

    Returns (frames written, audio mode). Segment files go to `work_dir` and are removed.
    """
    info = info if info is not None else probe(in_path)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    segments, written, mode = [], 0, None
    try:
        # The chunks of `plan_chunks(len(track), chunk_frames)`, planned as the track grows.
        # The first is written with the input's audio: when it is also the last (a video of
        # up to `chunk_frames` frames), it is the output as it is, and joining one segment
        # (~20 ms at 640x360, 2 % of a blur job) is skipped. The frames are the same.
        for k, start in enumerate(_chunk_starts(chunk_frames, track.has_frame)):
            seg = work / f"segment-{k:05d}.mp4"
            n, mode = _encode_segment(in_path, track, options, start, start + chunk_frames, seg, info, should_cancel,
                                      on_frame, shared_frames, with_audio=k == 0)
            written += n
            segments.append(seg)
        if len(segments) == 1 and mode is not None:
            shutil.move(segments[0], out_path)  # a rename, unless the work folder is on another disk
        else:
            mode = join_segments(segments, in_path, out_path, info)
    finally:
        for seg in segments:
            seg.unlink(missing_ok=True)
    return written, mode
