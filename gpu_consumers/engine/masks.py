"""Where the object is on each frame: the `MaskProvider` interface and a stand-in.

A mask provider is prepared once per video with the video's geometry and the prompt, then
asked for one frame at a time, in frame order, as the pipeline streams through the video:
it never sees the whole video at once. `tracking.ProviderTracker` adapts it to the
two-pass `tracking.VideoTracker` interface, which the real trackers implement (they need
frames before the prompt frame too).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import cv2
import numpy as np

from .errors import InvalidPrompt
from .prompts import Prompt
from .video_io import VideoInfo


def mask_u8(mask: np.ndarray, *, invert: bool = False) -> np.ndarray:
    """A new uint8 mask: 255 where `mask` (bool, or any integer type) is non-zero, else 0
    (the other way round with `invert`).

    The same values as ``np.where(mask > 0, 255, 0).astype(np.uint8)``, which builds an int64
    array first: that took ~58 us on a 320x180 mask, this ~2 us, and it runs on every frame.
    """
    mask = np.asarray(mask)
    on = mask if mask.dtype == np.bool_ else mask > 0
    if invert:
        on = ~on
    return on.view(np.uint8) * np.uint8(255)


class CroppedMask:
    """A mask kept as its bounding box's contents: ``crop`` (uint8 0/255, `height` x `width`
    of the box) placed at (`x`, `y`) in a mask of `shape` (h, w), zero elsewhere.

    Tracked objects cover a small part of the frame: a 320x180 mask is 57 KB as an array
    and usually 1-2 KB as its box. `trackchild` sends masks this way and `LiveTrack` keeps
    them so (a 60-s video's masks: ~3 MB instead of 86)."""

    __slots__ = ("shape", "x", "y", "crop")

    def __init__(self, shape: tuple[int, int], x: int, y: int, crop: np.ndarray) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.x, self.y, self.crop = int(x), int(y), crop

    def full(self) -> np.ndarray:
        """The whole mask (a new uint8 array of `shape`)."""
        out = np.zeros(self.shape, np.uint8)
        h, w = self.crop.shape[:2]
        out[self.y:self.y + h, self.x:self.x + w] = self.crop
        return out


class MaskProvider(ABC):
    """Yields, per frame, a uint8 HxW mask (255 = object, 0 = not) and a confidence in [0, 1].

    Callers treat returned masks as read-only (a provider may hand out the same array).
    """

    @abstractmethod
    def prepare(self, info: VideoInfo, prompt: Prompt) -> None:
        """Get ready for one video. `prompt` is already validated, in coded-frame coordinates."""

    @abstractmethod
    def mask_for(self, frame_index: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """Mask and confidence for frame `frame_index` (called in increasing order)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most providers need nothing
        """Release resources (models, GPU memory). Called once, even after an error."""


class FixedRegionMasker(MaskProvider):
    """Walking-skeleton STAND-IN, not a tracker: a fixed disc around the click, every frame.

    The mask is a filled circle of `radius_px` around the first positive point (clipped to
    the frame), or, when the prompt has only a box, the filled box. It is the same on every
    frame whatever the object does. `confidence` is reported for every frame as given: the
    stand-in has no real measure of it.
    """

    def __init__(self, radius_px: int = 48, confidence: float = 1.0) -> None:
        if radius_px < 1:
            raise ValueError("radius_px must be at least 1")
        self.radius_px = radius_px
        self.confidence = confidence
        self._mask: np.ndarray | None = None

    def prepare(self, info: VideoInfo, prompt: Prompt) -> None:
        mask = np.zeros((info.height, info.width), dtype=np.uint8)
        if prompt.positive_points:
            p = prompt.positive_points[0]
            cv2.circle(mask, (int(p.x), int(p.y)), self.radius_px, 255, thickness=-1)
        elif prompt.box is not None:
            b = prompt.box
            cv2.rectangle(mask, (int(b.x0), int(b.y0)), (int(b.x1), int(b.y1)), 255, thickness=-1)
        else:
            raise InvalidPrompt("Click on the object (a positive point) or draw a box around it.")
        mask.flags.writeable = False  # handed out on every frame: nobody may change it
        self._mask = mask

    def mask_for(self, frame_index: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        if self._mask is None:
            raise RuntimeError("prepare() must be called before mask_for()")
        return self._mask, self.confidence
