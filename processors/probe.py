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


def _rotation(stream: Any) -> int:
    """Display rotation in degrees from the stream's display matrix (0 when absent)."""
    try:
        frame_side = stream.side_data  # PyAV exposes the display matrix rotation here
        rot = frame_side.get("DISPLAYMATRIX") if hasattr(frame_side, "get") else None
        return int(round(float(rot))) % 360 if rot is not None else 0
    except Exception:
        return 0


def probe_video(source: IO[bytes] | str, container_hint: str) -> dict[str, Any]:
    """Metadata of a video (the VideoMetadata Avro record), or ProbeRejected with the reason."""
    if container_hint not in SUPPORTED:
        raise ProbeRejected(f"unsupported container {container_hint!r}")
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
        # mp4/mov know their frame count; others (webm) are estimated from the duration.
        frames = int(vs.frames or round(duration_s * float(rate)))
        if frames <= 0:
            raise ProbeRejected("the video has no frames")
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "container": container_hint,
            "codec": vs.codec_context.name,
            "width": int(first.width),
            "height": int(first.height),
            "fps_num": rate.numerator,
            "fps_den": rate.denominator,
            "frame_count": frames,
            "duration_s": duration_s or frames / float(rate),
            "rotation": _rotation(vs),
            "has_audio": audio is not None,
            "audio_codec": audio.codec_context.name if audio is not None else None,
        }
