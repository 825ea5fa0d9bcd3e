"""`yuv.Yuv420`: planes held as views of the frame the encoder gets."""

from __future__ import annotations

import av
import numpy as np
import pytest

from gpu_consumers.engine.yuv import Yuv420


def _decoded_like(width: int, height: int, fmt: str = "yuv420p") -> av.VideoFrame:
    rng = np.random.default_rng(width * height)
    flat = rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(flat, format="yuv420p")
    return frame if fmt == "yuv420p" else frame.reformat(format=fmt)


@pytest.mark.parametrize("size", [(64, 48), (854, 480), (38, 22)])  # 854 and 38: rows padded for alignment
def test_from_frame_copies_the_samples_and_to_frame_gives_them_back(size):
    width, height = size
    src = _decoded_like(width, height)
    planes = Yuv420.from_frame(src)
    assert planes is not None and planes.shape == (height, width)
    np.testing.assert_array_equal(planes.to_array(), src.to_ndarray())
    out = planes.to_frame()
    assert out is planes.frame and (out.width, out.height, out.format.name) == (width, height, "yuv420p")
    np.testing.assert_array_equal(out.to_ndarray(), src.to_ndarray())
    # The planes are the frame's own samples: a change made through them is what gets encoded.
    planes.y[1, 2] ^= 0xFF
    planes.v[-1, -1] ^= 0xFF
    changed = out.to_ndarray()
    assert changed[1, 2] == src.to_ndarray()[1, 2] ^ 0xFF and changed[-1, -1] == src.to_ndarray()[-1, -1] ^ 0xFF
    # ... and not the decoder's: the source frame is untouched.
    np.testing.assert_array_equal(src.to_ndarray(), _decoded_like(width, height).to_ndarray())


def test_blank_planes_fill_the_frame_and_copies_are_independent():
    planes = Yuv420.blank(32, 16, "yuvj420p")
    planes.y[:] = 7
    planes.u[:] = 100
    planes.v[:] = 200
    frame = planes.to_frame()
    flat = frame.to_ndarray()
    assert planes.format == "yuvj420p" and (flat[:16] == 7).all() and (flat[16:] != 7).all()
    copy = planes.copy()
    copy.y[:] = 9
    assert copy.frame is None and (planes.y == 7).all()
    np.testing.assert_array_equal(copy.to_frame().to_ndarray()[16:], flat[16:])


def test_other_formats_have_no_planes():
    assert Yuv420.from_frame(_decoded_like(32, 16, "yuv444p")) is None
    assert Yuv420.from_frame(av.VideoFrame(33, 16, "yuv420p")) is None  # odd width


def test_views_of_a_decoded_frame_are_read_only_and_exact():
    src = _decoded_like(854, 480)
    seen = Yuv420.view_of(src)
    assert seen is not None and seen.frame is None
    np.testing.assert_array_equal(seen.to_array(), src.to_ndarray())
    with pytest.raises(ValueError):
        seen.y[0, 0] = 1  # the decoder may still predict from these samples
    assert Yuv420.view_of(_decoded_like(32, 16, "yuv444p")) is None
