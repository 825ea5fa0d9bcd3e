"""Tracking in a child process that feeds a `LiveTrack` in this one.

Why a process and not a thread: the tracker and the renderer are both Python loops around
OpenCV and numpy calls, and in two threads of one process they take turns at the GIL. At
640x360 (blur, 2 cores) tracking alone took 3.2-3.6 ms a frame and rendering 4.1-4.9 ms; in
two threads together 7.4-7.9 ms a frame (hardly better than one after the other, 7.8-9.2 ms),
in two processes 4.9-5.1 ms (bench/README.md, engine section).

Protocol, child -> parent, over one `multiprocessing` pipe:

* ``("publish", first, masks, motions, pts)`` - tracking-resolution masks (and the camera's
  motions, or None, and the pts, or None) of frames ``first ..`` are final
  (`LiveTrack.publish`); each is sent once;
* ``("start", pts)`` - the tracker decoded every frame (`LiveTrack.start`), before or after
  its first masks;
* with a `FrameRing` (blur, pixelate, fill): ``("frame", index, pts, time_base, format)`` -
  frame `index`'s full-size planes are in the ring's next slot; ``("handover", index, pts)``
  - no more frames are shared, the renderer decodes from `index` on (`framering`);
* ``("progress", stage, done, total)``;
* ``("done", track)`` - the finished `MaskTrack`; or ``("error", exc)``.

Parent -> child: one `multiprocessing.Event`, set to cancel (the child's `should_cancel`);
with a ring, also its semaphore of free slots and its "abandoned" event.

Start method: ``forkserver``. Its server is a clean, single-threaded process that imports
the engine once (about 0.7 s, the first time in a process); each tracking child is then
forked from it in tens of milliseconds. A plain ``fork`` of the caller is not safe: OpenCV's
worker threads (not Python threads) may hold its pool's lock, and the child hung in
``cv2.setNumThreads``. So a short video, in a process that has not started the server yet,
is tracked in a thread instead (`worth_a_child`), and so is any video when the program's
main script has no ``__main__`` guard (the child would run it again). Only trackers that declare
``runs_in_child_process`` (the CPU-only `ClassicTracker`) and pickle are run this way; a
learned model stays in the caller's process.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from . import framearena
from .errors import EngineError
from .framearena import ArenaHandle
from .framering import FrameRing, RingHandle
from .livetrack import LiveTrack
from .masks import CroppedMask
from .masktrack import MaskTrack
from .prompts import Prompt
from .video_io import VideoInfo

ProgressFn = Callable[[str, int, int], None]
#: How often the parent checks for cancellation while it waits for the child (seconds).
POLL_S = 0.1
#: How long a cancelled or orphaned child gets to stop before it is killed (seconds).
STOP_GRACE_S = 5.0


#: The child sends progress at most this often (seconds), and always a stage's first and last.
PROGRESS_EVERY_S = 0.1


class _PipeFeed:
    """The child's stand-in for `LiveTrack`: sends what the tracker publishes to the parent.

    Masks travel as their bounding box's bits (`pack_masks`): a tracked object's 320x180
    mask is ~1 KB instead of a 57 KB bool array (7 KB as the whole mask's bits, which kept
    the child waiting on a full pipe while the parent's relay thread waited for the GIL)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.sent = conn, 0
        self._last_progress: tuple[str, float] | None = None

    def start(self, pts: list[int | None]) -> None:
        self.conn.send(("start", list(pts)))

    def publish(self, upto: int, masks: list, motions: list | None = None, pts: list | None = None) -> None:
        if upto <= self.sent:
            return
        new = pack_masks([masks[i] for i in range(self.sent, upto)])
        moved = None if motions is None else [np.asarray(motions[i]) for i in range(self.sent, upto)]
        stamps = None if pts is None else [pts[i] for i in range(self.sent, upto)]
        self.conn.send(("publish", self.sent, new, moved, stamps))
        self.sent = upto

    def progress(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        last = self._last_progress
        if last is not None and last[0] == stage and done < total and now - last[1] < PROGRESS_EVERY_S:
            return  # the parent reports at most a few times a second anyway (`pipeline._Throttle`)
        self._last_progress = (stage, now)
        self.conn.send(("progress", stage, done, total))


def pack_masks(masks: list) -> tuple[tuple[int, int], list[tuple[int, int, int, int, bytes]]]:
    """Masks of one size (bool or 0/non-zero arrays) as ``((height, width), [(x, y, w, h,
    bits), ...])``: each one's bounding box and the bits of what is inside it (a tracked
    object's mask is ~100 bytes to 2 KB this way, 7 KB as the whole mask's bits)."""
    shape = np.asarray(masks[0]).shape[:2]
    out = []
    for m in masks:
        a = np.asarray(m)
        on = np.ascontiguousarray(a if a.dtype == np.bool_ else a > 0)
        x, y, w, h = cv2.boundingRect(on.view(np.uint8))
        out.append((x, y, w, h, np.packbits(on[y:y + h, x:x + w].reshape(-1)).tobytes()))
    return (int(shape[0]), int(shape[1])), out


def unpack_masks(packed: tuple[tuple[int, int], list[tuple[int, int, int, int, bytes]]]) -> list[CroppedMask]:
    """The inverse of `pack_masks`: `CroppedMask`s (0/255)."""
    shape, boxes = packed
    out = []
    for x, y, w, h, bits in boxes:
        crop = np.unpackbits(np.frombuffer(bits, np.uint8), count=w * h).reshape(h, w)
        out.append(CroppedMask(shape, x, y, np.multiply(crop, 255, out=crop)))
    return out


def _child_main(conn: Any, stop: Any, tracker: Any, in_path: str, info: VideoInfo, prompt: Prompt,
                ring: RingHandle | None = None, arena: ArenaHandle | None = None) -> None:
    """The child process: track, sending masks as they become final, then the track; with
    `ring`, also share each decoded frame with the renderer (`framering`); with `arena`,
    keep the small frames in the parent's memory file (`framearena`)."""
    cv2.setNumThreads(1)  # the parent renders on the other core(s)
    feed = _PipeFeed(conn)
    writer = None
    mapped = arena.open() if arena is not None else None
    try:
        extra: dict[str, Any] = {}
        if ring is not None:
            writer = extra["tap"] = ring.writer(conn, lambda: feed.sent, stop)
        if mapped is not None:
            extra["arena"] = mapped
        track = tracker.track(in_path, info, prompt, progress=feed.progress, should_cancel=stop.is_set, feed=feed,
                              **extra)
        conn.send(("done", track))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            conn.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", EngineError(f"Tracking failed: {exc}")))
    finally:
        if writer is not None:
            writer.close()
        if mapped is not None:
            mapped.close()
        conn.close()


#: Below this many frames a thread is used unless the fork server already runs: its first
#: start (~0.7 s) would cost more than the child saves (~2.4 ms a frame at 640x360).
MIN_FRAMES_TO_START_SERVER = 300
_server_started = False


def worth_a_child(frame_count: int) -> bool:
    """Whether tracking `frame_count` frames in a child process pays for itself (and is safe)."""
    return (_server_started or frame_count >= MIN_FRAMES_TO_START_SERVER) and _main_is_safe()


@functools.lru_cache(maxsize=1)
def _main_is_safe() -> bool:
    """Whether a forkserver child may import this program's main module: it runs a main
    *script* again as ``__mp_main__`` (multiprocessing's rule), so a script without an
    ``if __name__ == "__main__"`` guard would redo its work in the child. `python -m`
    modules are not re-run, and a script that names ``__main__`` is taken as guarded."""
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    if path is None:
        return True  # interactive: nothing to re-run
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "__main__" in fh.read()
    except OSError:
        return False


def context() -> mp.context.BaseContext:
    """The multiprocessing context tracking children start in (for their shared objects)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["gpu_consumers.engine.tracking"])
    return ctx


class TrackingChild:
    """One tracking pass in a child process: `start` it, then `run` (in the thread that feeds
    the renderer) waits for it."""

    def __init__(self, tracker: Any, in_path: str | os.PathLike[str], info: VideoInfo, prompt: Prompt,
                 ring: FrameRing | None = None) -> None:
        """`prompt` validated, in coded coordinates (as `VideoTracker.track` takes it).
        `ring`: share the decoded frames through it (the tracker must take a ``tap``); the
        caller closes it once rendering is over."""
        self.args = (tracker, os.fspath(in_path), info, prompt)
        self.ring = ring
        self.proc: Any = None

    def start(self) -> TrackingChild | None:
        """Start the child process (it begins tracking at once); None when it cannot be
        started that way (a tracker that does not pickle: the fork server receives it pickled)."""
        global _server_started
        ctx = context()
        try:
            pickle.dumps(self.args)
        except Exception:  # noqa: BLE001 - e.g. a tracker class defined inside a function
            return None
        self._conn, child_end = ctx.Pipe(duplex=False)
        self._stop = ctx.Event()
        ring = self.ring.handle if self.ring is not None else None
        # The small frames go into a memory file lent for the job (`framearena`), returned
        # to the pool once the child is gone (`close`).
        self._leases = contextlib.ExitStack()
        tracker, _, info, _ = self.args
        wanted = getattr(tracker, "arena_bytes", None)  # a tracker that takes ``arena=``
        arena = self._leases.enter_context(framearena.lease(wanted(info))) if wanted is not None else None
        self.proc = ctx.Process(target=_child_main, args=(child_end, self._stop, *self.args, ring, arena),
                                name="tapmask-tracker", daemon=True)
        try:
            self.proc.start()
        except BaseException:
            self._leases.close()
            raise
        _server_started = True
        child_end.close()  # ours is only the reading end: EOF once the child is gone
        return self

    def run(self, feed: LiveTrack, *, progress: ProgressFn | None = None,
            should_cancel: Callable[[], bool] | None = None) -> MaskTrack:
        """Wait for the started child: publish its final masks to `feed` as they come and
        forward its progress; return its `MaskTrack` or raise its error (`JobCancelled` once
        `should_cancel` turned True). The child never outlives this call."""
        conn, proc, ring = self._conn, self.proc, self.ring
        try:
            while True:
                if should_cancel is not None and should_cancel():
                    self._stop.set()
                if not conn.poll(POLL_S):
                    if not proc.is_alive() and not conn.poll(0):
                        raise EngineError(f"The tracking process ended unexpectedly (exit code {proc.exitcode}).")
                    continue
                try:
                    msg = conn.recv()
                except EOFError:
                    proc.join(STOP_GRACE_S)
                    raise EngineError(f"The tracking process ended unexpectedly (exit code {proc.exitcode}).") from None
                kind = msg[0]
                if kind == "publish":
                    first, masks, motions, pts = msg[1], unpack_masks(msg[2]), msg[3], msg[4]
                    feed.publish(first + len(masks), _Offset(first, masks),
                                 None if motions is None else _Offset(first, motions),
                                 None if pts is None else _Offset(first, pts))
                elif kind == "frame":
                    ring.on_frame(msg[1], msg[2], msg[3], msg[4])
                elif kind == "progress":
                    if progress is not None:
                        progress(msg[1], msg[2], msg[3])
                elif kind == "start":
                    feed.start(msg[1])
                    if ring is not None:
                        ring.on_end(len(msg[1]))
                elif kind == "handover":
                    ring.on_handover(msg[1], msg[2])
                elif kind == "done":
                    return msg[1]
                elif kind == "error":
                    raise msg[1]
        except BaseException as exc:
            if ring is not None:
                ring.fail(exc)  # a renderer waiting for a frame stops too
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child if it still runs (cancel, then kill after `STOP_GRACE_S`)."""
        if self.proc is None:
            return
        self._stop.set()
        self.proc.join(STOP_GRACE_S)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()
        self._leases.close()  # the child is gone: its memory file may be lent again
        self.proc = None


class _Offset:
    """``masks[i]`` for i >= `first`, from a list that starts at frame `first`."""

    def __init__(self, first: int, masks: list[np.ndarray]) -> None:
        self.first, self.masks = first, masks

    def __getitem__(self, index: int) -> np.ndarray:
        return self.masks[index - self.first]
