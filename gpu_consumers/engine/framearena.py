"""Memory for the tracking child's small frames and masks that outlives the child.

A tracking child (`trackchild`) is a fresh process for each job, and it keeps every frame it
decodes at tracking size for the whole pass (`tracking._SmallFrames`: 52 MB for a 12-s
640x360 clip). Fresh memory is not free: each new page is a page fault and a page of zeros,
and on virtual machines that hand freed memory back to the hypervisor (virtio-balloon free
page reporting, as on the machines these benchmarks run on) the host must back it again.
Measured here (16 pairs of 640x360 blur jobs in one process, 2 s apart, arena on and off in
turn): the child's CPU median 1.11 -> 0.99 s a job, its system time 0.12 -> 0.06 s, less in
13 of the 16 pairs (bench/README.md, "Session 16").

So the parent process keeps memory files (`os.memfd_create`) between jobs, one per job in
flight, and lends one to each tracking child (`lease`): the child maps it and keeps its small
frames and its masks there while they fit (`Arena.take`); past that, in ordinary arrays as
before. A file's pages stay allocated after the child exits, so the next job reuses them. A
file grows to what a job needs, up to `ARENA_BYTES`, and is never shrunk: a long-lived
consumer keeps at most that much per job it runs at once (`ARENA_BYTES = 0` disables it).

The file travels to the child as a file descriptor through the fork server, the way
`multiprocessing` passes its pipes (`multiprocessing.reduction.DupFd`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Iterator
from multiprocessing import reduction

import numpy as np

#: The most a memory file may hold: half of the tracker's raw budget (its small frames stay
#: raw at least that far, `ClassicTracker.RAW_CACHE_BYTES`), ~555 frames at 320x180.
ARENA_BYTES = 96 * 1024 * 1024

_free: list[tuple[int, int]] = []  # (fd, size) of the files not lent out
_lock = threading.Lock()


class ArenaHandle:
    """One lent memory file, `size` bytes of it to use; pickles into a child (with its fd)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # DupFd hands the descriptor to the process being started (fork server or spawn).
        return _rebuild, (reduction.DupFd(self.fd), self.size)

    def open(self) -> Arena | None:
        """Child side: the file mapped (the handle's descriptor, the child's copy, is closed),
        or None when it cannot be mapped."""
        try:
            # MAP_POPULATE: the pages are mapped in one call, not faulted in one by one.
            mm = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except (OSError, ValueError):
            return None
        finally:
            os.close(self.fd)
        return Arena(mm)


def _rebuild(dup: reduction.DupFd, size: int) -> ArenaHandle:
    return ArenaHandle(dup.detach(), size)


class Arena:
    """Child side: consecutive arrays carved from the mapped file (`take`)."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm, self._used = mm, 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """A new uint8 array of `shape` in the arena (its old contents: write all of it), or
        None when the arena has no room left."""
        nbytes = int(np.prod(shape))
        if self._used + nbytes > len(self._mm):
            return None
        out = np.frombuffer(self._mm, np.uint8, nbytes, self._used).reshape(shape)
        self._used += nbytes
        return out

    def keep(self, array: np.ndarray) -> np.ndarray:
        """`array` to keep for the whole pass: a copy in the arena while it has room (one-byte
        samples only: frames, masks), else `array` itself."""
        kept = self.take(array.shape) if array.itemsize == 1 else None
        if kept is None:
            return array
        kept = kept.view(array.dtype)
        np.copyto(kept, array)
        return kept

    def close(self) -> None:
        """Unmap the file, unless arrays taken from it are still alive (then at exit)."""
        with contextlib.suppress(BufferError):
            self._mm.close()


@contextlib.contextmanager
def lease(nbytes: int) -> Iterator[ArenaHandle | None]:
    """A memory file of at least ``min(nbytes, ARENA_BYTES)`` bytes for one job, returned to
    the pool after the block; None when there is nothing to lend (no need, no memfd)."""
    size = min(int(nbytes), ARENA_BYTES)
    if size <= 0:
        yield None
        return
    with _lock:
        fd, have = _free.pop() if _free else (-1, 0)
    try:
        if fd < 0:
            fd = os.memfd_create("tapmask-frames", getattr(os, "MFD_CLOEXEC", 0))
        if have < size:
            os.ftruncate(fd, size)
            have = size
    except (AttributeError, OSError):  # no memfd here, or no memory for it: ordinary arrays
        if fd >= 0:
            os.close(fd)
        fd = -1
    try:
        yield ArenaHandle(fd, size) if fd >= 0 else None
    finally:
        if fd >= 0:
            with _lock:
                _free.append((fd, have))
