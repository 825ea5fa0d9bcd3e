"""Tracking in a child process (`engine.trackchild`): the same masks and frames as in a
thread, the child's errors raised in the caller, cancellation honoured, no child left."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import av
import numpy as np
import pytest

from gpu_consumers.engine import ClassicTracker, EngineError, JobCancelled, Point, Prompt, pipeline, process_video, trackchild
from gpu_consumers.engine.livetrack import LiveTrack
from gpu_consumers.engine.video_io import probe
from tapmask.synthetic import make_gt_clip


class BrokenTracker(ClassicTracker):
    """Decodes nothing, announces 10 frames, then fails (module level: it must pickle)."""

    def track(self, *args, feed=None, **kwargs):
        feed.start([None] * 10)
        raise EngineError("tracker broke")


@pytest.fixture
def occlusion(tmp_path):
    return make_gt_clip(tmp_path / "occ.mp4", "occlusion", 160, 96, 40)


@pytest.fixture
def always_child(monkeypatch):
    monkeypatch.setattr(trackchild, "MIN_FRAMES_TO_START_SERVER", 0)


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def test_the_child_publishes_the_masks_a_thread_computes(occlusion):
    info = probe(occlusion.path)
    x, y, f = occlusion.click
    prompt = Prompt([Point(x, y, f)])
    here = ClassicTracker(camera_motion=False).track(occlusion.path, info, prompt)
    feed = LiveTrack(info.width, info.height)
    seen: list[tuple[str, int, int]] = []
    child = trackchild.TrackingChild(ClassicTracker(camera_motion=False), occlusion.path, info, prompt).start()
    assert child is not None
    proc = child.proc
    there = child.run(feed, progress=lambda *a: seen.append(a))
    assert not proc.is_alive()
    assert here.lost_frames() and there.lost_frames() == here.lost_frames()
    assert np.array_equal(there.confidence, here.confidence)
    for i in range(len(here)):
        assert np.array_equal(feed.full_mask(i), here.full_mask(i)), f"frame {i}"
    assert seen and seen[-1][0] == "tracking"


def test_process_video_gives_the_same_output_with_a_child_or_a_thread(occlusion, tmp_path, always_child, monkeypatch,
                                                                      encoded_pictures):
    x, y, f = occlusion.click
    encoded = encoded_pictures  # the pictures, not the packets (see the fixture)
    outs = {}
    for in_child in (True, False):
        monkeypatch.setattr(pipeline, "TRACK_IN_CHILD", in_child)
        encoded.clear()
        process_video(occlusion.path, tmp_path / f"out-{in_child}.mp4", Prompt([Point(x, y, f)]), "blur")
        outs[in_child] = list(encoded)
        assert len(_frames(tmp_path / f"out-{in_child}.mp4")) == 40
    a, b = outs[True], outs[False]
    assert len(a) == len(b) == 40
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_erase_overlapped_with_tracking_gives_the_frames_of_erase_after_tracking(tmp_path, always_child, monkeypatch,
                                                                                 encoded_pictures):
    """Erase follows the tracker too (masks and camera motion published as they are final):
    on a panning clip, in a child and in a thread, the frames are those of rendering after.

    The pictures handed to the encoder are compared, not the encoded files: x264 does not
    always give the same packets for the same pictures (bench/README.md, session 7)."""
    clip = make_gt_clip(tmp_path / "pan.mp4", "late_click", 160, 96, 30)
    x, y, f = clip.click
    encoded = encoded_pictures
    outs = {}
    for name, overlap, in_child in (("child", True, True), ("thread", True, False), ("after", False, False)):
        monkeypatch.setattr(pipeline, "OVERLAP", overlap)
        monkeypatch.setattr(pipeline, "TRACK_IN_CHILD", in_child)
        encoded.clear()
        process_video(clip.path, tmp_path / f"{name}.mp4", Prompt([Point(x, y, f)]), "erase")
        outs[name] = list(encoded)
    assert len(outs["after"]) == 30
    for name in ("child", "thread"):
        assert len(outs[name]) == 30
        assert all(np.array_equal(p, q) for p, q in zip(outs[name], outs["after"])), name


def test_a_failure_in_the_child_is_raised_and_leaves_no_output(occlusion, tmp_path, always_child):
    out = tmp_path / "out.mp4"
    x, y, f = occlusion.click
    with pytest.raises(EngineError, match="tracker broke"):
        process_video(occlusion.path, out, Prompt([Point(x, y, f)]), "blur", tracker=BrokenTracker())
    assert not out.exists()
    assert not [p for p in mp.active_children() if p.name == "tapmask-tracker"]


def test_cancelling_stops_the_child(occlusion, tmp_path, always_child):
    out = tmp_path / "out.mp4"
    x, y, f = occlusion.click
    calls = [0]

    def cancel() -> bool:
        calls[0] += 1
        return calls[0] > 3

    with pytest.raises(JobCancelled):
        process_video(occlusion.path, out, Prompt([Point(x, y, f)]), "blur", should_cancel=cancel)
    assert not out.exists()
    assert not [p for p in mp.active_children() if p.name == "tapmask-tracker"]


def test_an_unpicklable_tracker_is_not_sent_to_a_child(occlusion):
    class Local(ClassicTracker):  # defined in a function: does not pickle
        pass

    info = probe(occlusion.path)
    x, y, f = occlusion.click
    assert trackchild.TrackingChild(Local(), occlusion.path, info, Prompt([Point(x, y, f)])).start() is None


def test_masks_cross_the_pipe_as_their_boxes_bits_and_progress_is_thinned():
    rng = np.random.default_rng(3)
    blob = np.zeros((37, 53), np.uint8)
    blob[30:37, 40:53] = rng.integers(0, 3, (7, 13))  # touches two edges; 0/1/2 values
    corner = np.zeros((37, 53), bool)
    corner[0, 0] = True
    masks = [rng.random((37, 53)) > 0.5, np.zeros((37, 53), bool), np.full((37, 53), 255, np.uint8), blob,
             corner, np.asfortranarray(blob)]
    packed = trackchild.pack_masks(masks)
    back = trackchild.unpack_masks(packed)
    for m, b in zip(masks, back):
        full = b.full()
        assert full.dtype == np.uint8 and full.shape == (37, 53)
        assert np.array_equal(full, np.where(np.asarray(m) > 0, 255, 0)), "a mask changed on its way"
    # Only the box's bits travel: a small object's mask is a fraction of the whole mask's bits.
    assert len(packed[1][3][4]) == -(-7 * 13 // 8) and len(packed[1][1][4]) == 0
    assert len(pickle.dumps(packed[1][3])) < 0.5 * len(np.packbits(blob.reshape(-1) > 0).tobytes())
    # A live track fed the crops answers exactly as one fed the arrays.
    crops, arrays = LiveTrack(106, 74), LiveTrack(106, 74)
    crops.publish(len(back), back)
    arrays.publish(len(masks), masks)
    assert (crops.mask_width, crops.mask_height) == (53, 37)
    for i in range(len(masks)):
        assert np.array_equal(crops.full_mask(i), arrays.full_mask(i))

    class _Conn:
        def __init__(self) -> None:
            self.sent: list = []

        def send(self, msg) -> None:
            self.sent.append(msg)

    conn = _Conn()
    feed = trackchild._PipeFeed(conn)
    for done in range(500):  # far faster than PROGRESS_EVERY_S
        feed.progress("tracking", done, 1000)
    feed.progress("tracking", 1000, 1000)
    feed.progress("processing", 0, 10)
    steps = [m[1:] for m in conn.sent]
    assert steps[0] == ("tracking", 0, 1000)  # a stage's first report and its last always go
    assert ("tracking", 1000, 1000) in steps and steps[-1] == ("processing", 0, 10)
    assert len(steps) < 20
