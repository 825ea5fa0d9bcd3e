"""Streaming video input and output with PyAV: probe, decode to BGR, encode to H.264 mp4.

Nothing here holds more than a few frames in memory: `VideoReader` yields decoded frames
(and audio packets) one at a time in file order, `VideoWriter` encodes and muxes them as
they come.

Output contract (`VideoWriter`):

* mp4, libx264, CRF 18, preset "veryfast" by default, ``+faststart`` so browsers can play
  it while it downloads;
* the same width and height as the input (frames of a stream that changes size mid-way are
  scaled to the first frame's size), unless an output `size` is given (the free tier's cap:
  `capped_size`), when every frame is scaled to it (area averaging) as it is converted to
  YUV. H.264 4:2:0 cannot code odd dimensions (its
  chroma is subsampled by two and its cropping works in 2-pixel units), so an input with an
  odd width or height is encoded as yuv444p (High 4:4:4) instead of yuv420p, keeping the
  exact size. Some browsers do not play High 4:4:4; even-sized inputs, the norm, are
  always yuv420p;
* the same frame rate and time base, and each frame keeps its input pts (so variable frame
  rate survives). A frame without a pts gets one from its index; a pts that does not
  increase is bumped by one tick (the muxer rejects it otherwise);
* colour: the input's matrix, range, primaries and transfer are used for the YUV<->BGR
  conversions and written as tags, so colours round-trip; 10-bit input becomes 8-bit;
* rotation: the input's display rotation (a display matrix on the stream, which PyAV only
  exposes on decoded frames) is written back with `set_display_rotation`, quarter turns
  only; frames are stored un-rotated, exactly as in the input;
* audio: the first audio stream is copied packet for packet when its codec is in
  `REMUX_AUDIO_CODECS`, otherwise decoded and re-encoded to AAC. Other streams (subtitles,
  data, further audio tracks) are dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import cv2
import numpy as np

from .errors import EmptyVideo, EngineError, NoVideoStream, UndecodableVideo
from .prompts import display_size
from .yuv import Yuv420

#: Audio codecs copied into the mp4 unchanged. FFmpeg's mp4 muxer also accepts flac, alac,
#: ac3, eac3 and mp2, but browsers play those unevenly, so they are re-encoded to AAC.
REMUX_AUDIO_CODECS = frozenset({"aac", "mp3", "opus"})

_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What `probe` learned about a file. Sizes are coded (stored) sizes, before rotation."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration_s: float
    codec: str
    pix_fmt: str
    rotation: int
    time_base: Fraction
    has_audio: bool
    audio_codec: str | None
    colorspace: int = 2  # AVCOL_SPC_UNSPECIFIED
    color_range: int = 0  # AVCOL_RANGE_UNSPECIFIED
    color_primaries: int = 2
    color_trc: int = 2

    @property
    def display_width(self) -> int:
        """Width of the picture as players show it (after rotation)."""
        return display_size(self.width, self.height, self.rotation)[0]

    @property
    def display_height(self) -> int:
        """Height of the picture as players show it (after rotation)."""
        return display_size(self.width, self.height, self.rotation)[1]


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One decoded video frame: `image` is BGR uint8 HxWx3 in coded orientation, or its own
    4:2:0 planes (`Yuv420`) from a reader opened with ``yuv=True``."""

    index: int
    image: np.ndarray | Yuv420
    pts: int | None
    time_base: Fraction
    #: The full-size 4:2:0 planes a scaled `image` was made from, when they were asked for
    #: (`VideoReader.video_frames(keep_planes=True)`) and the frame has them; else None.
    #: Read-only views of the decoder's picture (`Yuv420.view_of`): copy what is kept.
    planes: Yuv420 | None = None


def _open_input(path: Path) -> av.container.InputContainer:
    """Open `path` for reading, turning every failure into an `EngineError`."""
    if not path.exists():
        raise UndecodableVideo(f"The file {path.name!r} does not exist.")
    if path.is_dir():
        raise UndecodableVideo(f"{path.name!r} is a folder, not a video file.")
    if path.stat().st_size == 0:
        raise EmptyVideo(f"The file {path.name!r} is empty (0 bytes).")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UndecodableVideo(
            f"The file {path.name!r} is not a video we can read (it may be damaged or not a "
            "video at all)."
        ) from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        what = "audio only" if container.streams.audio else "no video"
        raise NoVideoStream(f"The file {path.name!r} has no video stream ({what}).")
    return container.streams.video[0]


def _first_frame(container: av.container.InputContainer, stream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except (av.error.FFmpegError, ValueError) as exc:  # ValueError: e.g. no decoder for it
        raise UndecodableVideo(f"The video in {path.name!r} cannot be decoded.") from exc
    raise EmptyVideo(f"The video in {path.name!r} has no frames.")


def _count_packets(path: Path) -> int:
    """Count video packets by demuxing (no decoding); for containers without a frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Inspect a file and decode its first frame.

    Raises `UndecodableVideo`, `EmptyVideo` or `NoVideoStream` with a readable message. The
    frame count comes from the container when it records one, else from counting packets;
    it can differ from the number of frames finally decoded in damaged files.
    """
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        frame_count = int(stream.frames or 0)
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        time_base = stream.time_base
        if container.duration:
            duration_s = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        cc = stream.codec_context
        info = dict(
            path=path,
            width=first.width,
            height=first.height,
            codec=cc.codec.canonical_name if cc.codec else "unknown",
            pix_fmt=first.format.name,
            rotation=int(round(first.rotation or 0)),
            has_audio=audio is not None,
            audio_codec=audio.codec_context.codec.canonical_name if audio is not None else None,
            colorspace=int(first.colorspace),
            color_range=int(first.color_range),
            color_primaries=int(cc.color_primaries),
            color_trc=int(cc.color_trc),
        )
    if frame_count <= 0:
        try:
            frame_count = _count_packets(path)
        except av.error.FFmpegError as exc:
            raise UndecodableVideo(f"The file {path.name!r} is damaged: it cannot be read to the end.") from exc
    if frame_count <= 0:
        raise EmptyVideo(f"The video in {path.name!r} has no frames.")
    if not fps:
        if duration_s <= 0:
            raise UndecodableVideo(f"The frame rate of {path.name!r} cannot be determined.")
        fps = Fraction(frame_count / duration_s).limit_denominator(1001)
    if not time_base:
        time_base = 1 / Fraction(fps)
    if duration_s <= 0:
        duration_s = float(frame_count / fps)
    return VideoInfo(fps=Fraction(fps), frame_count=frame_count, duration_s=duration_s,
                     time_base=Fraction(time_base), **info)


def capped_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """The output size of a `width` x `height` video under a cap on its *shorter* side.

    The cap is the job spec's ``max_output_height`` (the free tier's export limit, applied to
    the shorter side so portrait video is treated alike, see ``processors/quota.py``
    `output_cap`; the shorter side is the same in coded and display orientation). When the
    shorter side is within the cap (or there is none) the size is unchanged. Otherwise the
    picture is scaled down keeping its aspect ratio, the shorter side to the cap (rounded
    down to even) and the longer side to the nearest even number, since H.264 4:2:0 needs
    even dimensions: 160x96 capped at 64 -> 106x64, 1080x1920 capped at 720 -> 720x1280.
    """
    if max_short_side is None or min(width, height) <= max_short_side:
        return width, height
    if max_short_side < 2:
        raise ValueError("max_short_side must be >= 2")
    short, long_ = min(width, height), max(width, height)
    new_short = max_short_side - max_short_side % 2
    new_long = max(new_short, 2 * round(long_ * new_short / short / 2))
    return (new_long, new_short) if width >= height else (new_short, new_long)


def scaled_bgr(frame: av.VideoFrame, size: tuple[int, int], planes: Yuv420 | None) -> np.ndarray:
    """`frame` as a BGR picture of `size` (width, height), as tracking takes it: from its
    4:2:0 `planes` (`Yuv420.view_of`, or None) the Y, U and V planes are scaled (area
    averaging, no full-size colour conversion) and the small picture converted (BT.601
    maths: close enough to the true colours for tracking, and much cheaper); other frames go
    through FFmpeg's converter."""
    if planes is not None:
        small = [p if (p.shape[1], p.shape[0]) == size else cv2.resize(p, size, interpolation=cv2.INTER_AREA)
                 for p in (planes.y, planes.u, planes.v)]  # (chroma is often the size already)
        return cv2.cvtColor(cv2.merge(small), cv2.COLOR_YUV2BGR)
    return frame.to_ndarray(format="bgr24", width=size[0], height=size[1], src_colorspace=int(frame.colorspace),
                            src_color_range=int(frame.color_range), interpolation="AREA")


class VideoReader:
    """Decodes one file in a single pass; iterate to get `DecodedFrame`s and audio packets.

    Items come in file order: a `DecodedFrame` for each video frame (presentation order,
    BGR), and the raw `av.Packet` of the first audio stream, to hand to
    `VideoWriter.write_audio`. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], info: VideoInfo | None = None, *, yuv: bool = False) -> None:
        """`yuv`: full-size frames that are 8-bit 4:2:0 at the video's size come as their
        planes (`Yuv420`, no colour conversion); other frames are BGR as usual."""
        self.path = Path(path)
        self.yuv = yuv
        self.info = info if info is not None else probe(self.path)
        self._container = _open_input(self.path)
        try:
            self.video_stream = _video_stream(self._container, self.path)
        except EngineError:
            self._container.close()
            raise
        self.video_stream.thread_type = "AUTO"
        audio = self._container.streams.audio
        self.audio_stream: av.audio.stream.AudioStream | None = audio[0] if audio else None

    def __iter__(self) -> Iterator[DecodedFrame | av.Packet]:
        streams = [self.video_stream] + ([self.audio_stream] if self.audio_stream else [])
        index = 0
        try:
            for packet in self._container.demux(*streams):
                if packet.stream is not self.video_stream:
                    if packet.dts is not None and packet.size > 0:  # skip flush packets
                        yield packet
                    continue
                for frame in packet.decode():
                    # A stream that changes size mid-way is scaled back to its first frame's size.
                    yield self._decoded(frame, index)
                    index += 1
        except av.error.FFmpegError as exc:
            raise UndecodableVideo(
                f"The video in {self.path.name!r} cannot be decoded past frame {index}."
            ) from exc

    def video_frames(self, start: int = 0, pts: list[int | None] | None = None,
                     size: tuple[int, int] | None = None, keep_planes: bool = False) -> Iterator[DecodedFrame]:
        """Decoded video frames from index `start` on (no audio).

        `size` (width, height): frames scaled to that size by the decoder's converter
        (area averaging), much cheaper than converting at full size and then resizing;
        `keep_planes`: each scaled frame also carries the full-size planes it was made from
        (`DecodedFrame.planes`, when the frame is 8-bit 4:2:0 at the video's size).

        With `pts` (the frames' pts as a first pass saw them, at least up to `start`) and
        `start > 0`, it seeks to the key frame before frame `start` instead of decoding from
        the beginning; when the
        pts are missing or not unique, or the seek lands past `start`, it decodes from frame 0.
        Indices are the same as a plain pass would give.
        """
        index_of = None
        if start > 0 and pts is not None and start < len(pts) and None not in pts and len(set(pts)) == len(pts):
            index_of = {p: i for i, p in enumerate(pts)}
        if index_of is not None:
            try:
                self._container.seek(pts[start], stream=self.video_stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                index_of = None
        if index_of is not None:
            first, missed, index = True, False, None
            try:
                for frame in self._container.decode(self.video_stream):
                    # Frames come in presentation order: one whose pts is not in `pts` (a
                    # live track's list ends at the frames published so far) follows the last.
                    known = index_of.get(frame.pts)
                    index = known if known is not None else (None if index is None else index + 1)
                    if first:
                        first = False
                        if index is None or index > start:
                            missed = True  # the seek missed: fall back to a full pass
                            break
                    if index is not None and index >= start:
                        yield self._decoded(frame, index, size, keep_planes)
            except av.error.FFmpegError as exc:
                raise UndecodableVideo(f"The video in {self.path.name!r} cannot be decoded.") from exc
            if not missed:
                return
            self._container.seek(0, stream=self.video_stream, backward=True, any_frame=False)
        index = 0
        try:
            for frame in self._container.decode(self.video_stream):
                if index >= start:
                    yield self._decoded(frame, index, size, keep_planes)
                index += 1
        except av.error.FFmpegError as exc:
            raise UndecodableVideo(f"The video in {self.path.name!r} cannot be decoded past frame {index}.") from exc

    def _decoded(self, frame: av.VideoFrame, index: int, size: tuple[int, int] | None = None,
                 keep_planes: bool = False) -> DecodedFrame:
        width, height = size if size is not None else (self.info.width, self.info.height)
        time_base = Fraction(frame.time_base or self.info.time_base)
        # The frame's own 4:2:0 planes, when it has them at the video's size: a copy to render
        # on, or, to scale down (and hand on with `keep_planes`), views of the decoder's.
        native = (frame.width, frame.height) == (self.info.width, self.info.height)
        planes = None
        if native and size is not None:
            planes = Yuv420.view_of(frame)
        elif native and self.yuv:
            planes = Yuv420.from_frame(frame)
        if planes is not None and size is None:
            return DecodedFrame(index, planes, frame.pts, time_base)
        if size is not None:
            return DecodedFrame(index, scaled_bgr(frame, size, planes), frame.pts, time_base,
                                planes if keep_planes else None)
        image = frame.to_ndarray(format="bgr24", width=width, height=height,
                                 src_colorspace=int(frame.colorspace), src_color_range=int(frame.color_range))
        return DecodedFrame(index, image, frame.pts, time_base)

    def close(self) -> None:
        """Release the input file."""
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encodes BGR frames to an mp4 that matches the input (see the module docstring).

    Use as a context manager: a clean exit flushes the encoders and finishes the file; an
    exception deletes the partial file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        info: VideoInfo,
        audio_stream: av.audio.stream.AudioStream | None = None,
        *,
        crf: int = 18,
        preset: str = "veryfast",
        x264_params: str | None = None,
        video_template: av.video.stream.VideoStream | None = None,
        size: tuple[int, int] | None = None,
        faststart: bool = True,
    ) -> None:
        """`size` (width, height): encode at that size, scaling every frame (default: the
        input's size). With `video_template` the template's size is kept. `faststart`: the
        index goes before the media (a file played while it downloads); False for a file
        that is only joined later (moving the index rewrites the whole file on close)."""
        self.path = Path(path)
        self.width, self.height = size if size is not None else (info.width, info.height)
        self._remux = video_template is not None
        self.info = info
        self._last_pts: int | None = None
        self._closed = False
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4",
                                      options={"movflags": "+faststart"} if faststart else {})
        except (av.error.FFmpegError, OSError) as exc:
            raise EngineError(f"Cannot create the output file {self.path.name!r}: {exc}") from exc
        try:
            if video_template is not None:  # remux already-encoded packets (joining segments)
                self._video = self._container.add_stream_from_template(video_template)
                if info.rotation % 360:
                    self._video.set_display_rotation(info.rotation)
            else:
                self._setup_video(crf, preset, x264_params)
            self._setup_audio(audio_stream)
        except BaseException:
            self.abort()
            raise

    def _setup_video(self, crf: int, preset: str, x264_params: str | None) -> None:
        info = self.info
        even = self.width % 2 == 0 and self.height % 2 == 0
        self.pix_fmt = "yuv420p" if even else "yuv444p"
        options = {"crf": str(crf), "preset": preset}
        if x264_params:
            options["x264-params"] = x264_params
        stream = self._container.add_stream("libx264", rate=info.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        stream.time_base = info.time_base
        cc = stream.codec_context
        cc.time_base = info.time_base
        # PyAV's default (sliced) threads. x264 frame threads were tried: 1-2 % faster here,
        # but a resumed job's output then differed from an uninterrupted run's under load
        # (tests/integration/test_consumer_resume.py), and outputs must be reproducible.
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(cc, name, getattr(info, name))
        if info.rotation % 360:
            stream.set_display_rotation(info.rotation)
        self._video = stream

    def _setup_audio(self, audio_stream: av.audio.stream.AudioStream | None) -> None:
        self._audio_in = audio_stream
        self._audio_out = None
        self.audio_mode = "none"
        if audio_stream is None:
            return
        if audio_stream.codec_context.codec.canonical_name in REMUX_AUDIO_CODECS:
            self._audio_out = self._container.add_stream_from_template(audio_stream)
            self.audio_mode = "copy"
            return
        rate = audio_stream.rate if audio_stream.rate in _AAC_RATES else 48000
        layout = _AAC_LAYOUTS.get(audio_stream.codec_context.channels, "stereo")
        self._audio_out = self._container.add_stream("aac", rate=rate, layout=layout)
        self.audio_mode = "transcode"

    def write_frame(self, image: np.ndarray | Yuv420, pts: int | None, index: int) -> None:
        """Encode one BGR frame (or `Yuv420` planes), with the input frame's `pts` (in the
        input time base).

        A frame whose size differs from the writer's is scaled to it (area averaging).
        Planes of the writer's size and format go to the encoder as they are (they carry the
        input's colour space and range, which the output declares too)."""
        if pts is None:
            pts = round(index / (self.info.fps * self.info.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        if isinstance(image, Yuv420):
            frame = image.to_frame()
            scale = (frame.width, frame.height) != (self.width, self.height)
            if scale or self.pix_fmt != "yuv420p":
                frame = frame.reformat(width=self.width, height=self.height, format=self.pix_fmt,
                                       interpolation="AREA" if scale else None)
            self._encode(frame, pts, index)
            return
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        scale = (frame.width, frame.height) != (self.width, self.height)
        frame = frame.reformat(
            width=self.width,
            height=self.height,
            format=self.pix_fmt,
            dst_colorspace=self.info.colorspace,
            dst_color_range=self.info.color_range,
            interpolation="AREA" if scale else None,
        )
        self._encode(frame, pts, index)

    def _encode(self, frame: av.VideoFrame, pts: int, index: int) -> None:
        frame.pts = pts
        frame.time_base = self.info.time_base
        try:
            packets = self._video.encode(frame)
        except av.error.FFmpegError as exc:
            raise EngineError(f"Encoding frame {index} of the output video failed: {exc}") from exc
        self._mux(packets)

    def write_video_packet(self, packet: av.Packet) -> None:
        """Remux one encoded video packet (only with `video_template`)."""
        packet.stream = self._video
        self._mux(packet)

    def write_audio(self, packet: av.Packet) -> None:
        """Copy or transcode one packet of the input audio stream given to the constructor."""
        if self._audio_out is None:
            return
        if self.audio_mode == "copy":
            packet.stream = self._audio_out
            self._mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return  # a damaged audio packet must not lose the video; drop it
        for frame in frames:
            try:
                packets = self._audio_out.encode(frame)
            except av.error.FFmpegError as exc:
                raise EngineError(f"Re-encoding the audio to AAC failed: {exc}") from exc
            self._mux(packets)

    def _mux(self, packets: av.Packet | list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as exc:
            raise EngineError(f"Writing the output video failed: {exc}") from exc

    def close(self) -> None:
        """Flush the encoders and finish the file (again: no-op)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._remux:
                self._mux(self._video.encode(None))
            if self.audio_mode == "transcode":
                self._mux(self._audio_out.encode(None))
            self._container.close()
        except av.error.FFmpegError as exc:
            raise EngineError(f"Finishing the output video failed: {exc}") from exc

    def abort(self) -> None:
        """Close without finishing and delete the partial file."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise
