"""Deterministic sample clips for tests and demos.

`make_sample_clip` writes a short, high-quality H.264 clip: a textured background that pans
slowly (smooth colour gradients plus a faint noise texture) and a bright, finely
checkered disc (radius 30 px) that moves across it. `sample_object_center` says where the
disc's centre is on any frame, so a test or a demo can "click" on it.

The disc is full of fine detail on purpose: blurring it removes most of its high
frequencies, which makes "was it blurred?" easy to measure.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Radius of the moving disc in pixels.
OBJECT_RADIUS = 30
_AUDIO_RATE = 48000
_TONE_HZ = 440.0


def sample_object_center(frame_index: int, width: int, height: int, fps: float) -> tuple[float, float]:
    """Centre (x, y) of the disc on frame `frame_index`, in pixel coordinates.

    The disc goes back and forth between 20 % and 80 % of the width at 15 % of the width
    per second, bobbing up and down around mid-height. It does not depend on the clip's
    length, so the same call works for any `seconds`.
    """
    t = frame_index / float(fps)
    lo, span = 0.2 * width, 0.6 * width
    travel = (0.15 * width * t) % (2 * span)
    x = lo + (travel if travel <= span else 2 * span - travel)
    y = 0.5 * height + 0.12 * height * math.sin(2 * math.pi * t / 2.5)
    return x, y


def sample_object_mask(frame_index: int, width: int, height: int, fps: float) -> np.ndarray:
    """Where the disc is on frame `frame_index` (bool, height x width, coded orientation):
    exactly the pixels the clip paints with it (the ground truth tests compare masks with)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return _disc(*sample_object_center(frame_index, width, height, fps), xx, yy)


def _disc(cx: float, cy: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= OBJECT_RADIUS**2


def _noise_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth low-amplitude noise (about +-6 levels), float32 HxW, wrapping at the edges."""
    coarse = rng.standard_normal((height // 4 + 2, width // 4 + 2)).astype(np.float32)
    # Bilinear upsampling by 4 keeps the texture soft enough for H.264 to keep it well.
    ys = np.arange(height, dtype=np.float32) / 4
    xs = np.arange(width, dtype=np.float32) / 4
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    tex = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    return 6.0 * tex / max(float(tex.std()), 1e-6)


def _render_frame(index: int, width: int, height: int, fps: int, texture: np.ndarray,
                  yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """One RGB frame of the sample clip."""
    t = index / fps
    shift = index // 2  # the texture pans half a pixel per frame
    tex = np.roll(texture, (shift, shift), axis=(0, 1))
    u, v = xx / width, yy / height
    r = 70 + 60 * u + 20 * np.sin(2 * np.pi * (v + 0.05 * t))
    g = 90 + 50 * v + 15 * np.sin(2 * np.pi * (u - 0.04 * t))
    b = 120 + 40 * (1 - u) * v
    img = np.stack([r + tex, g + tex, b + tex], axis=-1)

    cx, cy = sample_object_center(index, width, height, fps)
    inside = _disc(cx, cy, xx, yy)
    checker = ((np.floor((xx - cx) / 4) + np.floor((yy - cy) / 4)) % 2).astype(np.float32)
    disc = np.stack([225 + 30 * checker, 200 + 55 * checker, 40 + 200 * checker], axis=-1)
    img = np.where(inside[..., None], disc, img)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_tone(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                start: int, stop: int) -> int:
    """Encode the sine tone's samples [start, stop) in 1024-sample frames; return `stop`."""
    for s0 in range(start, stop, 1024):
        n = min(1024, stop - s0)
        t = np.arange(s0, s0 + n, dtype=np.float64) / _AUDIO_RATE
        wave = (0.2 * np.sin(2 * np.pi * _TONE_HZ * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = s0
        frame.time_base = Fraction(1, _AUDIO_RATE)
        container.mux(stream.encode(frame))
    return max(start, stop)


def make_sample_clip(
    path: str | os.PathLike[str],
    seconds: float = 3.0,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    audio: bool = True,
    seed: int = 0,
    *,
    audio_codec: str = "aac",
    rotation: int = 0,
) -> Path:
    """Write the sample clip to `path` and return it as a `Path`.

    H.264 at CRF 18 (yuv420p; yuv444p when a dimension is odd, which 4:2:0 cannot code),
    `round(seconds * fps)` frames with pts 0, 1, 2... in a 1/fps time base (the muxer may
    rescale it). With `audio`, a 440 Hz sine tone of the same length (48 kHz stereo,
    `audio_codec`: "aac", "libopus", "mp3", "flac", "pcm_s16le" for .mkv...). `rotation`
    (counter-clockwise degrees) is written as display-matrix metadata only; pixels are not
    rotated. The container follows the file suffix (.mp4, .mkv, .mov). Same arguments,
    same decoded pixels.
    """
    path = Path(path)
    n_frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    texture = _noise_texture(height, width, rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy += 0.5  # sample at pixel centres
    xx += 0.5

    with av.open(str(path), mode="w") as container:
        # mbtree=0: with it, this libx264 build gives slightly different bytes run to run.
        video = container.add_stream(
            "libx264", rate=fps, options={"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        )
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        video.codec_context.time_base = Fraction(1, fps)
        if rotation % 360:
            video.set_display_rotation(rotation)
        tone = None
        if audio:
            tone = container.add_stream(audio_codec, rate=_AUDIO_RATE, layout="stereo")

        total_samples = int(round(n_frames / fps * _AUDIO_RATE))
        written = 0  # audio samples written so far; audio is interleaved with the video
        for i in range(n_frames):
            rgb = _render_frame(i, width, height, fps, texture, yy, xx)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=video.pix_fmt)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
            if tone is not None:
                written = _write_tone(container, tone, written, min(total_samples, int((i + 1) / fps * _AUDIO_RATE)))
        container.mux(video.encode(None))
        if tone is not None:
            _write_tone(container, tone, written, total_samples)
            container.mux(tone.encode(None))
    return path
