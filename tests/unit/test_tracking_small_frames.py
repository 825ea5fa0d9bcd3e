"""The tracker's store of small frames (`tracking._SmallFrames`) past its raw budget.

Frames beyond the budget are kept JPEG-compressed for passes that come back to them, but
the pass that is decoding them must track the frames as decoded: a JPEG round trip on every
frame of a long video cost an encode and a decode each (0.4 + 0.4 ms a frame at 320x180)
and fed the tracker blockier pictures (more ECC refinements, lower quality).
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

from gpu_consumers.engine.tracking import _SmallFrames
from gpu_consumers.engine.video_io import DecodedFrame

W, H, N = 64, 48, 30


def _frames(seed: int = 0) -> list[np.ndarray]:
    """Smooth pictures (JPEG keeps them close), each different."""
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
            for _ in range(N)]


def _store(images: list[np.ndarray], raw_frames: int) -> _SmallFrames:
    decoded = (DecodedFrame(i, img, i, Fraction(1, 25)) for i, img in enumerate(images))
    frame_bytes = H * W * 3
    # Raw while the store holds less than half the budget; the expected count does not fit.
    return _SmallFrames(decoded, N, 2 * raw_frames * frame_bytes, 90, None, lambda n: None, None)


def test_frames_past_the_raw_budget_are_compressed_but_tracked_as_decoded() -> None:
    images = _frames()
    store = _store(images, raw_frames=5)
    for i in range(N):
        assert store.have(i)
        # The forward pass reads frame i, then keeps it as the previous frame for i + 1.
        assert np.array_equal(store.load(i), images[i]), f"frame {i} is not the decoded picture"
        if i:
            assert np.array_equal(store.load(i - 1), images[i - 1])
    assert not store.have(N)
    kinds = [type(x) for x in store._store]
    assert kinds[:5] == [np.ndarray] * 5 and set(kinds[5:]) == {bytes}, "the budget was not applied"


def test_a_later_pass_reads_old_frames_back_from_their_jpeg() -> None:
    images = _frames(1)
    store = _store(images, raw_frames=5)
    store.decode_all()
    # Long gone from the cache of decoded frames: the JPEG copy, close to the frame but not it.
    old = store.load(10)
    assert old.shape == images[10].shape
    assert not np.array_equal(old, images[10])
    assert np.abs(old.astype(int) - images[10]).mean() < 3 < np.abs(old.astype(int) - images[11]).mean()
    # Raw frames stay exact whenever they are read.
    assert np.array_equal(store.load(2), images[2])
    # A frame read back twice is decoded once (the cache), and is the same picture.
    assert store.load(10) is old
