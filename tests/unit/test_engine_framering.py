"""The tracking child's decoded frames handed to the renderer (`engine.framering`): the
renderer encodes the pictures it would have decoded itself, hands over to its own decoder
where the ring cannot go on (a late click, an occlusion, a frame without 4:2:0 planes), the
child never waits for a renderer that waits for it, and no shared file is left behind."""

from __future__ import annotations

import multiprocessing as mp
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from gpu_consumers.engine import Point, Prompt, framering, pipeline, process_video, trackchild
from gpu_consumers.engine.livetrack import LiveTrackFailed
from gpu_consumers.engine.pipeline import track_video
from gpu_consumers.engine.render import EffectOptions, iter_rendered
from gpu_consumers.engine.video_io import DecodedFrame, probe
from gpu_consumers.engine.yuv import Yuv420
from tapmask.synthetic import make_gt_clip

#: A deadlock between the child and the renderer shows as a hang: fail it quickly instead.
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ring_dir(tmp_path, monkeypatch):
    """Tracking in a child for any length, the ring's file in a folder of the test's own."""
    monkeypatch.setattr(trackchild, "MIN_FRAMES_TO_START_SERVER", 0)
    folder = tmp_path / "shm"
    folder.mkdir()
    monkeypatch.setattr(framering, "SHM_DIR", str(folder))
    return folder


@pytest.fixture
def ring_log(monkeypatch):
    """What the parent's ring received: the indices of shared frames, and hand-overs."""
    log: dict[str, list] = {"frames": [], "handover": []}
    on_frame, on_handover = framering.FrameRing.on_frame, framering.FrameRing.on_handover

    def frame(self, index, *args):
        log["frames"].append(index)
        return on_frame(self, index, *args)

    def handover(self, index, pts):
        log["handover"].append(index)
        return on_handover(self, index, pts)

    monkeypatch.setattr(framering.FrameRing, "on_frame", frame)
    monkeypatch.setattr(framering.FrameRing, "on_handover", handover)
    return log


def _shared_and_own(monkeypatch, encoded, path, click) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The pictures encoded by blur `process_video` with the frames shared, then decoded twice
    (`encoded`: the `encoded_pictures` list)."""
    x, y, f = click
    outs = []
    for share in (True, False):
        monkeypatch.setattr(pipeline, "SHARE_FRAMES", share)
        encoded.clear()
        process_video(path, path.with_name(f"out-{share}.mp4"), Prompt([Point(x, y, f)]), "blur")
        outs.append(list(encoded))
    return outs[0], outs[1]


def _same(a: list[np.ndarray], b: list[np.ndarray], count: int) -> None:
    assert len(a) == len(b) == count
    for i, (p, q) in enumerate(zip(a, b)):
        assert np.array_equal(p, q), f"frame {i}"


def test_the_renderer_encodes_the_childs_frames_as_if_it_had_decoded_them(tmp_path, ring_dir, ring_log, monkeypatch,
                                                                          encoded_pictures):
    clip = make_gt_clip(tmp_path / "basic.mp4", "basic", 160, 96, 40)
    shared, own = _shared_and_own(monkeypatch, encoded_pictures, clip.path, clip.click)
    _same(shared, own, 40)
    assert ring_log["frames"] == list(range(40)) and ring_log["handover"] == []
    assert list(ring_dir.iterdir()) == []  # the shared file is gone


def test_a_late_click_hands_over_once_the_ring_is_full(tmp_path, ring_dir, ring_log, monkeypatch,
                                                       encoded_pictures):
    """Clicked on frame 22: no mask is final before the child has decoded frames 0-22, so it
    must not wait for a slot; the renderer decodes from the first frame not shared."""
    monkeypatch.setattr(framering, "RING_SLOTS", 4)
    clip = make_gt_clip(tmp_path / "late.mp4", "late_click", 160, 96, 30)
    assert clip.click[2] > 4
    shared, own = _shared_and_own(monkeypatch, encoded_pictures, clip.path, clip.click)
    _same(shared, own, 30)
    assert ring_log["frames"] == [0, 1, 2, 3] and ring_log["handover"] == [4]


def test_an_occlusion_hands_over_while_the_object_is_lost(tmp_path, ring_dir, ring_log, monkeypatch,
                                                          encoded_pictures):
    """Lost frames' masks are final only once the whole video is decoded: the child shares
    up to the loss plus the ring's slots, then hands over (it does not hang)."""
    monkeypatch.setattr(framering, "RING_SLOTS", 4)
    clip = make_gt_clip(tmp_path / "occ.mp4", "occlusion", 160, 96, 40)
    shared, own = _shared_and_own(monkeypatch, encoded_pictures, clip.path, clip.click)
    _same(shared, own, 40)
    assert len(ring_log["handover"]) == 1
    handed = ring_log["handover"][0]
    assert 4 <= handed < 40 and ring_log["frames"] == list(range(handed))


def test_frames_without_4_2_0_planes_are_decoded_by_the_renderer(tmp_path, ring_dir, ring_log, monkeypatch,
                                                                 encoded_pictures):
    path = tmp_path / "444.mp4"
    rng = np.random.default_rng(5)
    bg = rng.integers(0, 255, (96, 160, 3), np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv444p"
        for i in range(12):
            img = bg.copy()
            img[30:60, 20 + 4 * i:50 + 4 * i] = (20, 230, 240)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    shared, own = _shared_and_own(monkeypatch, encoded_pictures, path, (35, 45, 0))
    _same(shared, own, 12)
    assert ring_log["frames"] == [] and ring_log["handover"] == [0]


class _Conn:
    """The child's pipe, delivering straight to a parent-side ring (one process)."""

    def __init__(self) -> None:
        self.ring: framering.FrameRing | None = None
        self.sent: list[tuple] = []

    def send(self, msg: tuple) -> None:
        self.sent.append(msg)
        if msg[0] == "frame":
            self.ring.on_frame(*msg[1:])
        elif msg[0] == "handover":
            self.ring.on_handover(*msg[1:])


def _picture(i: int) -> Yuv420:
    y = np.full((8, 12), i, np.uint8)
    return Yuv420(y, np.full((4, 6), 100 + i, np.uint8), np.full((4, 6), 200 - i, np.uint8))


def _decoded(i: int) -> DecodedFrame:
    return DecodedFrame(i, np.zeros((2, 2, 3), np.uint8), 10 * i, Fraction(1, 25), _picture(i))


def _ring(monkeypatch, tmp_path, slots: int):
    monkeypatch.setattr(framering, "RING_SLOTS", slots)
    monkeypatch.setattr(framering, "SHM_DIR", str(tmp_path))
    ring = framering.FrameRing.create(mp.get_context("spawn"), 12, 8)
    assert ring is not None
    conn = _Conn()
    conn.ring = ring
    return ring, conn


def test_a_full_ring_hands_over_when_the_oldest_frame_has_no_final_mask(tmp_path, monkeypatch):
    ring, conn = _ring(monkeypatch, tmp_path, 2)
    stop = threading.Event()
    writer = ring.handle.writer(conn, lambda: 0, stop)  # no mask final yet
    try:
        for i in range(4):
            writer(_decoded(i))  # must not block
        assert [m[0] for m in conn.sent] == ["frame", "frame", "handover"]
        assert conn.sent[2][1:] == (2, [0, 10, 20])  # from frame 2, with the pts to seek by

        own_calls = []

        def own(first, pts):
            own_calls.append((first, pts))
            yield from (DecodedFrame(i, _picture(i), 10 * i, Fraction(1, 25)) for i in range(first, 4))

        got = list(ring.frames(0, own))
        assert [g.index for g in got] == [0, 1, 2, 3]
        assert own_calls == [(2, [0, 10, 20])]
        for g in got:
            assert np.array_equal(g.image.to_array(), _picture(g.index).to_array()) and g.pts == 10 * g.index
    finally:
        writer.close()
        ring.close()


def test_a_full_ring_waits_for_the_renderer_when_it_can_go_on(tmp_path, monkeypatch):
    ring, conn = _ring(monkeypatch, tmp_path, 2)
    writer = ring.handle.writer(conn, lambda: 3, threading.Event())  # frames 0-2 have masks
    pushed = threading.Thread(target=lambda: [writer(_decoded(i)) for i in range(5)])
    try:
        pushed.start()
        pushed.join(0.5)
        assert pushed.is_alive()  # 2 slots: it waits at frame 2 for the renderer
        got = []
        for item in ring.frames(0, lambda first, pts: iter(())):
            got.append(item)
            if item.index == 4:
                break
        pushed.join(5)
        assert not pushed.is_alive()
        assert [g.index for g in got] == [0, 1, 2, 3, 4]
        assert all(np.array_equal(g.image.y, _picture(g.index).y) for g in got)
        assert [m[0] for m in conn.sent] == ["frame"] * 5
    finally:
        writer.close()
        ring.close()


def test_a_renderer_waiting_for_a_frame_stops_when_tracking_fails(tmp_path, monkeypatch):
    ring, _conn = _ring(monkeypatch, tmp_path, 2)
    try:
        threading.Timer(0.2, ring.fail, args=(RuntimeError("tracker broke"),)).start()
        with pytest.raises(LiveTrackFailed):
            next(ring.frames(0, lambda first, pts: iter(())))
    finally:
        ring.close()


def test_a_ring_asked_for_another_frame_gives_way_to_the_renderers_decoder(tmp_path, monkeypatch):
    ring, conn = _ring(monkeypatch, tmp_path, 2)
    writer = ring.handle.writer(conn, lambda: 0, threading.Event())
    try:
        got = list(ring.frames(3, lambda first, pts: iter([DecodedFrame(first, _picture(first), None, Fraction(1))])))
        assert [g.index for g in got] == [3]
        assert ring.handle.abandoned.is_set()
        writer(_decoded(0))  # the child then shares nothing more
        assert [m[0] for m in conn.sent] == ["handover"]
    finally:
        writer.close()
        ring.close()
    assert list(tmp_path.iterdir()) == []



def test_erase_given_a_ring_abandons_it_and_decodes_the_file(tmp_path, ring_dir):
    """Erase reads neighbours, not the ring; a ring left unread would keep the child waiting
    for a free slot while the renderer waits for its masks."""
    clip = make_gt_clip(tmp_path / "basic.mp4", "basic", 160, 96, 12)
    info = probe(clip.path)
    x, y, f = clip.click
    track = track_video(clip.path, Prompt([Point(x, y, f)]))
    ring = framering.FrameRing.create(mp.get_context("spawn"), info.width, info.height)
    assert ring is not None
    try:
        rendered = iter_rendered(clip.path, track, EffectOptions(mode="erase"), 0, 12, info, shared_frames=ring)
        assert [r[0] for r in rendered] == list(range(12))
        assert ring.handle.abandoned.is_set()
    finally:
        ring.close()
