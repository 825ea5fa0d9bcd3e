"""`Yuv420`: a decoded picture kept in the video's own 8-bit 4:2:0 planes (no colour conversion).

Most videos are 8-bit yuv420p. Converting every frame to BGR and back costs more than
decoding it (measured at 640x360: 0.9 ms to decode into BGR vs 0.4 ms as decoded, and
~1.5 ms to convert BGR back for the encoder, whose whole decode + encode is 2.4 ms a frame).
Blur, pixelate and fill only change the pixels near the mask, so they work on the planes
as decoded (`effects.apply_effect_yuv`) and the encoder gets the same samples back: pixels
the effect does not reach are bit-identical to the input's, with no conversion rounding.

Erase warps its neighbours in BGR (each frame converted once) and writes only the region
it touches back into the planes (`erase.erase_frame_yuv`, yuv420p only); any other pixel
format stays on the BGR path.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np

#: Pixel formats whose samples a `Yuv420` holds as they are (yuvj420p: full range).
YUV420_FORMATS = ("yuv420p", "yuvj420p")


@dataclass(slots=True, eq=False)  # arrays: compare `to_array()`s
class Yuv420:
    """Writable Y (h x w), U and V (h/2 x w/2) planes of one picture; `format` is the decoded
    frame's pixel format name (kept for `to_frame`).

    `frame`: the `av.VideoFrame` (yuv420p) whose buffers the planes are views of (`blank`,
    `from_frame`), encoded as it is by `to_frame`; None for planes held in numpy arrays.
    Building the encoder's frame from numpy arrays took ~110 us of copies a 640x360 frame
    (`to_array` + `av.VideoFrame.from_ndarray`); a view of it, nothing."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    format: str = "yuv420p"
    frame: av.VideoFrame | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        return self.y.shape[0], self.y.shape[1]

    @classmethod
    def blank(cls, width: int, height: int, fmt: str = "yuv420p") -> Yuv420:
        """Planes to fill in (their samples are undefined): views of a new frame's buffers."""
        frame = av.VideoFrame(width, height, "yuv420p")
        return cls(*_plane_views(frame), fmt, frame)

    @classmethod
    def copy_of(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, fmt: str = "yuv420p") -> Yuv420:
        """A copy of the planes `y`, `u`, `v` (any views), in a new frame's buffers (`blank`)."""
        out = cls.blank(y.shape[1], y.shape[0], fmt)
        np.copyto(out.y, y)
        np.copyto(out.u, u)
        np.copyto(out.v, v)
        return out

    @classmethod
    def from_frame(cls, frame: av.VideoFrame) -> Yuv420 | None:
        """The planes of `frame` (copied: the decoder reuses its buffers), or None when the
        frame is not 8-bit 4:2:0 with an even width and height."""
        seen = cls.view_of(frame)
        return None if seen is None else cls.copy_of(seen.y, seen.u, seen.v, seen.format)

    @classmethod
    def view_of(cls, frame: av.VideoFrame) -> Yuv420 | None:
        """Read-only views of `frame`'s own planes (no copy; they keep the frame alive), or
        None as `from_frame`. For reading only: a decoder may still predict later pictures
        from these samples, so they are never written (writing raises)."""
        w, h = frame.width, frame.height
        if frame.format.name not in YUV420_FORMATS or w % 2 or h % 2 or len(frame.planes) != 3:
            return None
        planes = _plane_views(frame)
        for plane in planes:
            plane.flags.writeable = False
        return cls(*planes, frame.format.name)

    def to_array(self) -> np.ndarray:
        """The planes packed one after the other, (h * 3/2) x w (PyAV's yuv420p layout)."""
        h, w = self.shape
        return np.concatenate([self.y.reshape(-1), self.u.reshape(-1), self.v.reshape(-1)]).reshape(h * 3 // 2, w)

    def to_frame(self) -> av.VideoFrame:
        """An `av.VideoFrame` with these samples (format yuv420p; the writer sets the range):
        `frame` itself when the planes are its views, else a new one."""
        if self.frame is not None:
            return self.frame
        return av.VideoFrame.from_ndarray(self.to_array(), format="yuv420p")

    def to_bgr(self) -> np.ndarray:
        """A BGR picture (BT.601; for tests and previews, not for encoding)."""
        return cv2.cvtColor(self.to_array(), cv2.COLOR_YUV2BGR_I420)

    def copy(self) -> Yuv420:
        return Yuv420(self.y.copy(), self.u.copy(), self.v.copy(), self.format)


def _plane_views(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (h x w), U and V (h/2 x w/2) samples of a 4:2:0 `frame` (rows are
    `line_size` bytes apart, alignment padding included)."""
    w, h = frame.width, frame.height
    sizes = ((w, h), (w // 2, h // 2), (w // 2, h // 2))
    return tuple(np.frombuffer(plane, np.uint8, count=plane.line_size * ph).reshape(ph, plane.line_size)[:, :pw]
                 for plane, (pw, ph) in zip(frame.planes, sizes))  # type: ignore[return-value]


def bgr_to_yuv(color_bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (Y, U, V) of one BGR colour (BT.601 limited range, as OpenCV's I420 conversion)."""
    patch = np.empty((2, 2, 3), np.uint8)
    patch[...] = color_bgr
    i420 = cv2.cvtColor(patch, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    return int(i420[0]), int(i420[4]), int(i420[5])

