"""Probing an uploaded video for the validation agent, reading only what it needs.

PyAV reads the container through a seekable file object; over S3 that object fetches byte
ranges, so probing a large video downloads its headers and first frames, not the file.
"""

from __future__ import annotations

from fractions import Fraction
from typing import IO, Any

import av

from producers.formats import SUPPORTED


class ProbeRejected(ValueError):
    """The file is not a video TapMask can process; the message says why, for a person."""


def _rotation(frame: Any) -> int:
    """Display rotation in degrees, 0/90/180/270. PyAV exposes the stream's display matrix
    only on decoded frames (``VideoFrame.rotation``, counter-clockwise degrees), as the
    engine's ``gpu_consumers.engine.video_io.probe`` reads it too."""
    try:
        return int(round(float(frame.rotation or 0))) % 360
    except (AttributeError, TypeError, ValueError):
        return 0


def _count_packets(source: IO[bytes] | str) -> int:
    """Count video packets by demuxing (no decoding), for containers without a frame count
    (webm, some avi): the one case where the probe reads the whole file."""
    if hasattr(source, "seek"):
        source.seek(0)
    with av.open(source, mode="r") as container:
        return sum(1 for packet in container.demux(video=0) if packet.size > 0)


def probe_video(source: IO[bytes] | str, container_hint: str) -> dict[str, Any]:
    """Metadata of a video (the VideoMetadata Avro record), or ProbeRejected with the reason."""
    if container_hint not in SUPPORTED:
        raise ProbeRejected(f"unsupported container {container_hint!r} (TapMask takes {', '.join(sorted(SUPPORTED))})")
    if getattr(source, "size", None) == 0:
        raise ProbeRejected("the file is empty (0 bytes)")
    try:
        container = av.open(source, mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise ProbeRejected(f"the file could not be read as a video ({exc.__class__.__name__})") from exc
    with container:
        if not container.streams.video:
            raise ProbeRejected("the file has no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.base_rate or vs.guessed_rate
        if not rate or rate <= 0:
            raise ProbeRejected("the video stream has no frame rate")
        rate = Fraction(rate).limit_denominator(1_000_000)
        duration_s = 0.0
        if vs.duration is not None and vs.time_base is not None:
            duration_s = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        first = None
        try:
            for frame in container.decode(video=0):
                first = frame
                break
        except (av.error.FFmpegError, ValueError) as exc:
            raise ProbeRejected(f"the video stream could not be decoded ({exc.__class__.__name__})") from exc
        if first is None:
            raise ProbeRejected("the video has no frames")
        frames = int(vs.frames or 0)  # mp4/mov record it
        rotation = _rotation(first)
        audio = container.streams.audio[0] if container.streams.audio else None
        meta = {
            "container": container_hint,
            "codec": vs.codec_context.name,
            "width": int(first.width),
            "height": int(first.height),
            "fps_num": rate.numerator,
            "fps_den": rate.denominator,
            "frame_count": frames,
            "duration_s": duration_s,
            "rotation": rotation,
            "has_audio": audio is not None,
            "audio_codec": audio.codec_context.name if audio is not None else None,
        }
    if meta["frame_count"] <= 0:
        try:
            meta["frame_count"] = _count_packets(source)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise ProbeRejected(f"the video is damaged: it cannot be read to the end ({exc.__class__.__name__})") from exc
    if meta["frame_count"] <= 0:
        raise ProbeRejected("the video has no frames")
    if not meta["duration_s"]:
        meta["duration_s"] = meta["frame_count"] / float(rate)
    return meta
