"""`masks.mask_u8`: the fast 0/255 mask every frame goes through."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gpu_consumers.engine.masks import mask_u8

_SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, _SHAPES, elements=st.sampled_from([0, 1, 3, 255])),
       st.sampled_from([np.bool_, np.uint8, np.int32, np.float32]), st.booleans(), st.booleans())
def test_mask_u8_matches_the_plain_numpy_expression(values: np.ndarray, dtype: type, invert: bool,
                                                    strided: bool) -> None:
    mask = values.astype(dtype)
    if strided:
        mask = mask[:, ::2]  # a non-contiguous view, as masks cut from a frame are
    expected = np.where(mask > 0, 0, 255) if invert else np.where(mask > 0, 255, 0)
    out = mask_u8(mask, invert=invert)
    assert out.dtype == np.uint8
    assert out.shape == mask.shape
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_mask_u8_returns_a_new_array() -> None:
    mask = np.zeros((4, 4), np.uint8)
    out = mask_u8(mask)
    out[0, 0] = 7
    assert mask[0, 0] == 0
