"""Memory files lent to tracking children for their small frames (`engine.framearena`): one
per job in flight, reused by the next job with its pages, handed to a real child process
through the fork server, and the same tracks whether the frames are kept there or not."""

from __future__ import annotations

import mmap
import os
from fractions import Fraction

import numpy as np
import pytest

from gpu_consumers.engine import ClassicTracker, Point, Prompt, framearena, trackchild
from gpu_consumers.engine.livetrack import LiveTrack
from gpu_consumers.engine.tracking import _SmallFrames
from gpu_consumers.engine.video_io import DecodedFrame, probe
from tapmask.synthetic import make_gt_clip


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    """Each test starts with no file in the pool (and leaves its own files closed)."""
    monkeypatch.setattr(framearena, "_free", [])
    yield
    for fd, _ in framearena._free:
        os.close(fd)


def _mapped(fd: int, size: int) -> np.ndarray:
    return np.frombuffer(mmap.mmap(fd, size), np.uint8)


def _write_pattern(handle: framearena.ArenaHandle, value: int) -> None:
    """In a child process: fill the lent file through `Arena.take`, as the tracker does."""
    arena = handle.open()
    part = arena.take((handle.size,))
    part[:] = value
    assert arena.take((1,)) is None  # full
    del part
    arena.close()


def test_a_lease_is_a_memory_file_of_the_size_asked_capped_and_kept_for_the_next_job(monkeypatch) -> None:
    monkeypatch.setattr(framearena, "ARENA_BYTES", 1 << 20)
    with framearena.lease(4096) as a:
        assert a is not None and a.size == 4096 and os.fstat(a.fd).st_size == 4096
        with framearena.lease(10 << 20) as b:  # a second job at once: another file, capped
            assert b is not None and b.fd != a.fd and b.size == 1 << 20
        fd_a, fd_b = a.fd, b.fd
    assert sorted(fd for fd, _ in framearena._free) == sorted([fd_a, fd_b])
    with framearena.lease(8192) as c:  # the next job: a file from the pool, grown if need be
        assert c.fd in (fd_a, fd_b) and os.fstat(c.fd).st_size >= 8192 and c.size == 8192
    with framearena.lease(0) as none:
        assert none is None


def test_nothing_is_lent_when_the_arena_is_switched_off(monkeypatch) -> None:
    monkeypatch.setattr(framearena, "ARENA_BYTES", 0)
    with framearena.lease(1 << 20) as a:
        assert a is None
    assert framearena._free == []


def test_without_memfd_nothing_is_lent_and_nothing_is_kept(monkeypatch) -> None:
    def refuse(*args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "memfd_create", refuse)
    with framearena.lease(1 << 20) as a:
        assert a is None
    assert framearena._free == []


def test_a_child_process_writes_the_lent_file_and_its_pages_stay_for_the_next_job() -> None:
    ctx = trackchild.context()
    with framearena.lease(3 * 4096) as handle:
        proc = ctx.Process(target=_write_pattern, args=(handle, 7))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert (_mapped(handle.fd, handle.size) == 7).all()
    # The file outlived the child, pages and all: the next job's child finds them.
    with framearena.lease(3 * 4096) as again:
        assert again.fd == handle.fd
        assert (_mapped(again.fd, again.size) == 7).all()


def test_small_frames_go_into_the_arena_while_it_has_room_then_into_new_arrays() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(6)]
    mm = mmap.mmap(-1, 4 * images[0].nbytes)
    whole = np.frombuffer(mm, np.uint8)
    decoded = (DecodedFrame(i, img, i, Fraction(1, 25)) for i, img in enumerate(images))
    store = _SmallFrames(decoded, len(images), 1 << 20, 90, None, lambda n: None, None, framearena.Arena(mm))
    store.decode_all()
    for i, img in enumerate(images):
        assert np.array_equal(store.load(i), img), f"frame {i}"
        assert np.shares_memory(store.load(i), whole) == (i < 4), f"frame {i}"
    assert whole.tobytes() == b"".join(img.tobytes() for img in images[:4])


def test_the_child_tracks_the_same_with_its_frames_in_the_arena_and_returns_the_file(tmp_path, monkeypatch) -> None:
    clip = make_gt_clip(tmp_path / "occ.mp4", "occlusion", 160, 96, 30)
    info = probe(clip.path)
    x, y, f = clip.click
    prompt = Prompt([Point(x, y, f)])
    here = ClassicTracker(camera_motion=False).track(clip.path, info, prompt)  # no arena
    tracker = ClassicTracker(camera_motion=False)
    assert tracker.arena_bytes(info) == info.frame_count * 160 * 96 * 4  # frames and masks
    for _ in range(2):  # the second job reuses the first one's file
        feed = LiveTrack(info.width, info.height)
        child = trackchild.TrackingChild(tracker, clip.path, info, prompt).start()
        assert child is not None
        assert framearena._free == []  # lent out while the child runs
        there = child.run(feed)
        assert len(framearena._free) == 1  # back once the child is gone
        fd, size = framearena._free[0]
        assert _mapped(fd, size)[: 160 * 96 * 3].any(), "the child did not keep its frames in the file"
        assert np.array_equal(there.confidence, here.confidence)
        for i in range(len(here)):
            assert np.array_equal(feed.full_mask(i), here.full_mask(i)), f"frame {i}"


def test_keep_copies_one_byte_arrays_into_the_arena_with_their_dtype_and_leaves_the_rest() -> None:
    mm = mmap.mmap(-1, 100)
    arena = framearena.Arena(mm)
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:6] = True
    kept = arena.keep(mask)
    assert kept.dtype == np.bool_ and np.array_equal(kept, mask)
    assert np.shares_memory(kept, np.frombuffer(mm, np.uint8)) and not np.shares_memory(kept, mask)
    wide = np.ones((2, 2), np.float32)
    assert arena.keep(wide) is wide  # not one byte a sample: kept as it is
    too_big = np.zeros((10, 10), np.uint8)
    assert arena.keep(too_big) is too_big  # 48 + 100 > 100 bytes: no room left
