"""`FrameRing`: the tracking child's decoded frames handed to the renderer, so a job decodes
its video once.

The tracker (`trackchild`) decodes every frame anyway, ahead of the renderer (the renderer
waits for each frame's mask). Decoding it a second time in the renderer cost more than its
CPU suggests: at 640x360, blur's speed against a plain decode + encode went from a median
of 0.46 to 0.57 with the renderer's frames already decoded (bench/README.md, "Session 12").
So for blur, pixelate and fill the child copies each frame's full-size 4:2:0 planes into a
ring of slots in a shared file (in /dev/shm when it has room), and tells the parent over its
pipe; the renderer copies a frame out when it reaches it and frees the slot. The frames are
the ones the renderer's own decoder would give (same decoder, same file).

Back-pressure and the one deadlock to avoid: with every slot full the child waits for the
renderer, but the renderer takes frame j only once j's mask is final. While the object is
lost (an occlusion), masks become final only after the child has decoded the whole video,
so the child cannot wait then: when the oldest frame in the ring has no final mask yet, it
*hands over* instead - it stops sharing and sends the frame index from which the renderer
decodes the file itself (seeking with the pts it sends), as it did before this ring existed.
It also hands over at a frame without 4:2:0 planes at the video's size (another pixel
format, a size change). Erase reads frames on both sides of the one it renders and keeps
its own decoder.

Parent side: `FrameRing` (created per job, closed after rendering). Child side:
`RingHandle.writer` (the tracker's ``tap``, see `ClassicTracker.track`).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .livetrack import LiveTrackFailed
from .video_io import DecodedFrame
from .yuv import Yuv420

#: Slots in the ring: enough for the child to stay ahead of the renderer through the jitter
#: of a shared machine; at most `RING_BYTES` in all (1080p: 8 slots of 3 MB; 4K: 5).
RING_SLOTS = 8
RING_BYTES = 64 * 1024 * 1024
#: Where the shared file goes when it has room (memory, not disk); else the temp folder.
SHM_DIR = "/dev/shm"
#: How often a waiting child checks whether the job was cancelled or the ring abandoned.
POLL_S = 0.1

#: ``own(first, pts)``: the renderer's own decoder from frame `first` (`pts`: the frames'
#: pts to seek with, or None for the track's).
OwnFrames = Callable[[int, "list[int | None] | None"], Iterator[DecodedFrame]]


def _slot_bytes(width: int, height: int) -> int:
    return width * height * 3 // 2


def _planes(buf: Any, offset: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of one slot as Y (h x w), U and V (h/2 x w/2) planes."""
    ys, cs = width * height, (width // 2) * (height // 2)
    y = np.frombuffer(buf, np.uint8, ys, offset).reshape(height, width)
    u = np.frombuffer(buf, np.uint8, cs, offset + ys).reshape(height // 2, width // 2)
    v = np.frombuffer(buf, np.uint8, cs, offset + ys + cs).reshape(height // 2, width // 2)
    return y, u, v


@dataclass(frozen=True)
class RingHandle:
    """What the child needs to write into the ring (pickled into it when it starts)."""

    path: str
    slots: int
    width: int
    height: int
    free: Any  # multiprocessing Semaphore: slots the renderer has emptied
    abandoned: Any  # multiprocessing Event: the renderer no longer reads the ring

    def writer(self, conn: Any, published: Callable[[], int], stop: Any) -> RingWriter:
        """The child's tap: `conn` its pipe to the parent, `published()` how many frames
        have final masks so far, `stop` the job's cancel event."""
        return RingWriter(self, conn, published, stop)


class RingWriter:
    """Child side: copies each decoded frame into the next slot (see the module docstring)."""

    def __init__(self, handle: RingHandle, conn: Any, published: Callable[[], int], stop: Any) -> None:
        self.h, self.conn, self.published, self.stop = handle, conn, published, stop
        fd = os.open(handle.path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, handle.slots * _slot_bytes(handle.width, handle.height))
        finally:
            os.close(fd)
        self.pushed = 0  # frames 0 .. pushed-1 went into the ring
        self.off = False  # handed over (or abandoned): nothing more is shared
        self._pts: list[int | None] = []

    def __call__(self, item: DecodedFrame) -> None:
        if self.off:
            return
        self._pts.append(item.pts)
        h = self.h
        planes = item.planes
        if (planes is None or planes.shape != (h.height, h.width) or item.index != self.pushed
                or h.abandoned.is_set()):
            self._hand_over(item.index)
            return
        if not h.free.acquire(False):
            # Every slot is full. The renderer next takes frame pushed - slots, once its mask
            # is final; if it is not yet, only decoding on (not waiting) makes it final.
            if self.pushed - h.slots >= self.published():
                self._hand_over(item.index)
                return
            while not h.free.acquire(True, POLL_S):
                if self.stop.is_set() or h.abandoned.is_set():
                    self.off = True
                    return
        y, u, v = _planes(self._mm, (self.pushed % h.slots) * _slot_bytes(h.width, h.height), h.width, h.height)
        np.copyto(y, planes.y)
        np.copyto(u, planes.u)
        np.copyto(v, planes.v)
        tb = Fraction(item.time_base)
        self.conn.send(("frame", item.index, item.pts, (tb.numerator, tb.denominator), planes.format))
        self.pushed += 1

    def _hand_over(self, index: int) -> None:
        self.off = True
        self.conn.send(("handover", index, list(self._pts)))

    def close(self) -> None:
        """Unmap the ring (the parent owns the file)."""
        self._mm.close()


class FrameRing:
    """Parent side: frames the child shares, read by the renderer in order (`frames`)."""

    def __init__(self, path: str, mm: mmap.mmap, slots: int, width: int, height: int, free: Any,
                 abandoned: Any) -> None:
        self._path: str | None = path
        self._mm: mmap.mmap | None = mm
        self.handle = RingHandle(path, slots, width, height, free, abandoned)
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, int | None, Fraction, str]] = deque()
        self._read = 0  # frames copied out so far (the next one is in slot _read % slots)
        self._next = 0  # the frame the ring holds next (renderer thread only)
        self._handover: tuple[int, list[int | None]] | None = None
        self._count: int | None = None
        self._failed: BaseException | None = None

    @classmethod
    def create(cls, ctx: Any, width: int, height: int) -> FrameRing | None:
        """A ring for frames of `width` x `height` (`ctx`: the child's multiprocessing
        context), or None when the frames are not 4:2:0-shaped or no room was found for
        the shared file (the renderer then decodes the file itself)."""
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            return None
        slot = _slot_bytes(width, height)
        slots = min(RING_SLOTS, RING_BYTES // slot)
        if slots < 2:
            return None
        size = slots * slot
        for folder in (SHM_DIR, tempfile.gettempdir()):
            try:
                st = os.statvfs(folder)
                if st.f_bavail * st.f_frsize < 2 * size:
                    continue
                fd, path = tempfile.mkstemp(prefix="tapmask-frames-", dir=folder)
            except OSError:
                continue
            try:
                # Reserve the pages now: on a full tmpfs a write to a sparse mapping is a SIGBUS.
                os.posix_fallocate(fd, 0, size)
                mm = mmap.mmap(fd, size)
            except OSError:
                os.unlink(path)
                continue
            finally:
                os.close(fd)
            return cls(path, mm, slots, width, height, ctx.Semaphore(slots), ctx.Event())
        return None

    # -- messages from the child (the tracking relay thread) --------------------------------
    def on_frame(self, index: int, pts: int | None, time_base: tuple[int, int], fmt: str) -> None:
        """The child put frame `index` into the next slot."""
        self._unlink()  # the child has the file mapped: its name is no longer needed
        with self._cond:
            self._queue.append((index, pts, Fraction(*time_base), fmt))
            self._cond.notify_all()

    def on_handover(self, index: int, pts: list[int | None]) -> None:
        """The child stopped sharing: frames from `index` on come from the renderer's decoder."""
        with self._cond:
            self._handover = (index, pts)
            self._cond.notify_all()

    def on_end(self, count: int) -> None:
        """The child decoded all `count` frames."""
        with self._cond:
            self._count = count
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """Tracking stopped with `exc`: a renderer waiting for a frame raises `LiveTrackFailed`."""
        with self._cond:
            self._failed = exc
            self._cond.notify_all()

    # -- the renderer ------------------------------------------------------------------------
    def frames(self, first: int, own: OwnFrames) -> Iterator[DecodedFrame]:
        """Decoded frames from index `first` on, in order, like ``reader.video_frames(first)``:
        from the ring while the child shares them, then (after a hand-over, or when `first`
        is not the frame the ring holds next) from `own`."""
        if first != self._next or self.handle.abandoned.is_set():
            self.abandon()  # from here on the renderer decodes the file itself
            yield from own(first, None)
            return
        while True:
            with self._cond:
                while not self._queue and self._handover is None and self._failed is None and self._count is None:
                    self._cond.wait()
                if self._queue:
                    index, pts, time_base, fmt = self._queue.popleft()
                    slot = self._read % self.handle.slots
                    self._read += 1
                elif self._failed is not None:
                    raise LiveTrackFailed("tracking stopped") from self._failed
                elif self._handover is None and self._next >= self._count:
                    return  # every frame was read
                else:  # handed over (or, defensively, frames the ring never got)
                    known = self._handover[1] if self._handover is not None else None
                    break
            h = self.handle
            y, u, v = _planes(self._mm, slot * _slot_bytes(h.width, h.height), h.width, h.height)
            planes = Yuv420.copy_of(y, u, v, fmt)  # into the frame the encoder takes as it is
            del y, u, v  # no view may outlive the mapping (see `close`)
            h.free.release()
            self._next = index + 1
            yield DecodedFrame(index, planes, pts, time_base)
        self.abandon()
        yield from own(self._next, known)

    def abandon(self) -> None:
        """The renderer reads no more from the ring: the child stops sharing (never waits)."""
        self.handle.abandoned.set()

    def _unlink(self) -> None:
        path, self._path = self._path, None
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Abandon the ring and release the shared file."""
        self.abandon()
        self._unlink()
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a frame view still alive somewhere: the GC unmaps it
                pass
            self._mm = None
