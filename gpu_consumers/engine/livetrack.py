"""`LiveTrack`: the masks of a tracking pass while it runs, so rendering can start before it ends.

A tracker that accepts a ``feed`` (`ClassicTracker`) calls `publish` whenever a longer
prefix of frames has *final* masks - masks that nothing later in the pass will change - with
their pts, and `start` once it has decoded every frame and knows their count (before or
after its first `publish`: the `ClassicTracker` decodes frames as it tracks them); then
`finish` (or `fail`). The renderer reads it like a `MaskTrack` (`has_frame`, `len`, `pts`,
`full_mask`, `width`, `height`): each call blocks until what it asks for is known, so the
renderer can start on frame 0 before the video's length is known. `full_mask(i)` is computed
exactly as `MaskTrack.full_mask` computes it from the finished track, so a frame rendered
from the live track is bit-identical to one rendered after tracking
(tests/unit/test_engine_pipeline.py checks it).

A tracker that estimates the camera's motion (erase) publishes each frame's motion with its
mask, and `motion_between` answers as `MaskTrack.motion_between` does (same function).

`process_video` uses it to run the tracker in a child process or a thread and render
(decode, effect, encode) in the caller's thread at the same time, in every mode.
"""

from __future__ import annotations

import threading

import numpy as np

from .masks import CroppedMask, mask_u8
from .masktrack import motion_product, upsample_mask


class LiveTrackFailed(RuntimeError):
    """The tracker stopped before publishing what was asked (its error is raised elsewhere)."""


class LiveTrack:
    """Final masks published by a running tracker (see the module docstring)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = int(width), int(height)
        self._cond = threading.Condition()
        self._count: int | None = None
        self._pts: list[int | None] = []
        self._small: list[np.ndarray | CroppedMask] = []
        self._ready = 0
        self._motion: list[np.ndarray] = []
        self._inverses: dict[int, np.ndarray] = {}
        self._failed: BaseException | None = None

    # -- tracker side ---------------------------------------------------------------------
    def start(self, pts: list[int | None]) -> None:
        """The pass has decoded every frame: their count and pts."""
        with self._cond:
            self._count = len(pts)
            self._pts = list(pts)
            self._cond.notify_all()

    def publish(self, upto: int, masks: list, motions: list | None = None, pts: list | None = None) -> None:
        """Frames ``[0, upto)`` have final masks; `masks[i]` is frame i's tracking-resolution
        mask (bool, uint8 0/255, or a `CroppedMask`, kept as it is); `motions[i]` (when the
        tracker estimates the camera's motion) its full-resolution 3x3 motion from frame
        i-1; `pts[i]` its pts (needed before `start` only). Only frames not published before
        are read."""
        with self._cond:
            for i in range(self._ready, upto):
                m = masks[i]
                self._small.append(m if isinstance(m, CroppedMask) else mask_u8(m))
                if motions is not None:
                    self._motion.append(np.asarray(motions[i], np.float32))
            if pts is not None and len(self._pts) < upto:
                self._pts.extend(pts[i] for i in range(len(self._pts), upto))
            self._ready = max(self._ready, upto)
            self._cond.notify_all()

    def finish(self, track) -> None:
        """The pass returned `track` (a `MaskTrack`): publish whatever is not yet (all of it
        for a tracker that ignored the feed)."""
        with self._cond:
            if self._count is None:
                self._count, self._pts = len(track), list(track.pts)
            if len(self._motion) < len(track):  # motions published for a prefix, or none
                self._motion = [np.asarray(m, np.float32) for m in track.motion]
        self.publish(len(track), _SmallMasks(track))

    def fail(self, exc: BaseException) -> None:
        """The pass ended with `exc`: wake every reader (they raise `LiveTrackFailed`)."""
        with self._cond:
            self._failed = exc
            self._cond.notify_all()

    # -- renderer side --------------------------------------------------------------------
    def _wait(self, ok) -> None:
        with self._cond:
            while not ok():
                if self._failed is not None:
                    raise LiveTrackFailed("tracking stopped") from self._failed
                self._cond.wait()

    def __len__(self) -> int:
        """The frame count (blocks until the tracker has decoded every frame)."""
        self._wait(lambda: self._count is not None)
        return int(self._count)

    def has_frame(self, index: int) -> bool:
        """Whether frame `index` exists (blocks until its mask is published or the count is known)."""
        self._wait(lambda: self._ready > index or self._count is not None)
        return 0 <= index < (self._count if self._count is not None else self._ready)

    @property
    def pts(self) -> list[int | None]:
        """The pts of the frames published so far (of every frame once the count is known),
        as the tracking pass decoded them."""
        with self._cond:
            return list(self._pts)

    @property
    def mask_width(self) -> int:
        """Width of the tracking-resolution masks (blocks until the first one is published)."""
        self._wait(lambda: self._ready > 0)
        return int(self._small[0].shape[1])

    @property
    def mask_height(self) -> int:
        """Height of the tracking-resolution masks (blocks until the first one is published)."""
        self._wait(lambda: self._ready > 0)
        return int(self._small[0].shape[0])

    def motion_between(self, src: int, dst: int) -> np.ndarray:
        """Homography from frame `src` to frame `dst` (full resolution), once both frames'
        motions are known (blocks: until the track is finished, for a tracker that does not
        publish motions)."""
        self._wait(lambda: len(self._motion) > max(src, dst))
        return motion_product(lambda k: self._motion[k], self._inverses, src, dst)

    def full_mask(self, index: int) -> np.ndarray:
        """Mask of frame `index` at the video's coded size, once it is final (blocks)."""
        self._wait(lambda: self._ready > index)
        small = self._small[index]
        return upsample_mask(small.full() if isinstance(small, CroppedMask) else small, self.width, self.height)


class _SmallMasks:
    """`track.small_mask(i)` by index (decoded only for the frames read)."""

    def __init__(self, track) -> None:
        self.track = track

    def __getitem__(self, index: int) -> np.ndarray:
        return self.track.small_mask(index)
