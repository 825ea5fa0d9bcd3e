"""Effects on plain numpy frames: untouched outside mask+margin+feather, working inside."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gpu_consumers.engine.effects import (
    chroma_alpha,
    distance_to_mask,
    MODES,
    apply_blur,
    apply_effect,
    apply_fill,
    apply_pixelate,
    soft_alpha,
)
from gpu_consumers.engine.errors import UnsupportedMode

FRAME_MODES = [m for m in MODES if m != "erase"]  # erase is rendered by engine.render

H, W = 120, 200
MARGIN, FEATHER = 8, 6


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (70, 60), (25, 15), 30, 0, 360, 255, -1)
    m[20:30, 150:160] = 255  # a second, separate blob
    return m


def _distance_to_mask(mask: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


@pytest.mark.parametrize("mode", FRAME_MODES)
def test_pixels_outside_reach_are_bit_identical(mode, frame, mask):
    before = frame.copy()
    out = apply_effect(mode, frame, mask, margin_px=MARGIN, feather_px=FEATHER, blur_kernel=99)
    assert np.array_equal(frame, before), "the input frame must not be modified"
    far = _distance_to_mask(mask) > MARGIN + FEATHER + 2
    assert far.sum() > 0.5 * H * W
    assert np.array_equal(out[far], frame[far])
    inside = mask > 0
    assert np.abs(out[inside].astype(int) - frame[inside]).mean() > 20


def test_touching_the_frame_edge_is_fine(frame):
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (2, H - 3), 20, 255, -1)
    out = apply_blur(frame, mask, margin_px=MARGIN, feather_px=FEATHER)
    far = _distance_to_mask(mask) > MARGIN + FEATHER + 2
    assert np.array_equal(out[far], frame[far])
    assert not np.array_equal(out[mask > 0], frame[mask > 0])


def test_blur_on_region_equals_blur_of_whole_frame_inside_the_mask(frame, mask):
    out = apply_blur(frame, mask, kernel=31, margin_px=MARGIN, feather_px=FEATHER)
    full = cv2.GaussianBlur(frame, (31, 31), 0)
    inside = mask > 0
    assert np.abs(out[inside].astype(int) - full[inside]).max() <= 1
    lap_in = cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[inside].var()
    lap_out = cv2.Laplacian(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[inside].var()
    assert lap_out < 0.05 * lap_in


def test_feather_blends_between_margin_and_outside(frame, mask):
    alpha, (rows, cols) = soft_alpha(mask, MARGIN, FEATHER)
    dist = _distance_to_mask(mask)[rows, cols]
    assert (alpha[mask[rows, cols] > 0] == 1).all()
    ring = (dist > MARGIN + 1) & (dist < MARGIN + FEATHER - 1)
    assert ring.any() and ((alpha[ring] > 0) & (alpha[ring] < 1)).all()
    assert (alpha[dist > MARGIN + FEATHER + 2] == 0).all()


@pytest.mark.parametrize("margin", [0, 1, 5, 8, 13])
def test_margin_covers_at_least_a_disc_dilation_and_nothing_past_the_reach(mask, margin):
    # The margin is a distance to the mask; it must never cover less than dilating by
    # OpenCV's elliptic disc of that radius (what the effect did before), and the feather
    # must end by margin + feather + 1.
    alpha, region = soft_alpha(mask, margin, FEATHER)
    full = np.zeros(mask.shape, np.float32)
    full[region] = alpha
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    dilated = cv2.dilate((mask > 0).astype(np.uint8), disc) > 0
    assert (full[dilated] == 1).all()
    assert (full[_distance_to_mask(mask) >= margin + FEATHER + 1] == 0).all()
    hard, hard_region = soft_alpha(mask, margin, 0)  # no feather: the grown mask itself
    core = np.zeros(mask.shape, bool)
    core[hard_region] = hard == 1
    assert np.array_equal(core, full == 1)


def test_distances_and_alpha_are_exact_and_the_same_on_every_call(mask):
    # A resumed job must render the very pixels an uninterrupted one does: the feather's
    # weights may not move between calls (OpenCV's precise transform alone differs by ~1e-5).
    first = distance_to_mask(mask)
    assert all(np.array_equal(first, distance_to_mask(mask)) for _ in range(20))
    small = mask[::4, ::4]  # exact against brute force: the root of min(dx^2 + dy^2)
    ys, xs = np.nonzero(small)
    gy, gx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    d2 = ((gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2).min(axis=-1)
    assert np.array_equal(distance_to_mask(small), np.sqrt(d2.astype(np.float32)))
    alphas = [soft_alpha(mask, MARGIN, FEATHER)[0] for _ in range(20)]
    assert all(np.array_equal(alphas[0], a) for a in alphas)


def test_fill_is_exact_inside_and_pixelate_makes_blocks(frame, mask):
    filled = apply_fill(frame, mask, color_bgr=(10, 200, 30), margin_px=MARGIN, feather_px=FEATHER)
    assert (filled[mask > 0] == (10, 200, 30)).all()

    pixelated = apply_pixelate(frame, mask, block_px=16, margin_px=MARGIN, feather_px=FEATHER)
    inside = mask > 0
    # Random noise has ~every value; 16x16 block means collapse it to a few dozen colours.
    assert len(np.unique(pixelated[inside].reshape(-1, 3), axis=0)) < len(np.unique(frame[inside].reshape(-1, 3), axis=0)) / 10


def test_empty_mask_changes_nothing(frame):
    empty = np.zeros((H, W), np.uint8)
    for mode in FRAME_MODES:
        assert np.array_equal(apply_effect(mode, frame, empty), frame)


@pytest.mark.parametrize("mode", ["erase", "sparkle", ""])  # erase needs neighbouring frames
def test_unsupported_modes(mode, frame, mask):
    with pytest.raises(UnsupportedMode) as info:
        apply_effect(mode, frame, mask)
    assert "blur" in str(info.value)


def test_large_kernel_blur_matches_the_full_size_gaussian_and_hides_detail():
    """A 99x99 kernel is computed on a downscaled crop: it must still be that Gaussian
    (within 2 grey levels away from the frame's edges), leave a checkerboard object
    unrecognisable, and keep every pixel beyond margin + feather bit-identical."""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.where(((xx // 6) + (yy // 6)) % 2 == 0, 230, 20).astype(np.uint8)
    frame = np.dstack([frame, 255 - frame, frame // 2]).copy()
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (160, 120), 40, 255, -1)
    out = apply_blur(frame, mask, kernel=99, margin_px=MARGIN, feather_px=FEATHER)
    exact = cv2.GaussianBlur(frame.astype(np.float32), (99, 99), 0)
    inside = mask > 0
    assert np.abs(out[inside].astype(np.float32) - exact[inside]).max() <= 2.0
    # Unrecognisable: the checkerboard's contrast is gone inside the mask.
    assert out[inside].astype(np.float32).std(axis=0).max() < 3.0
    assert frame[inside].astype(np.float32).std(axis=0).max() > 80
    far = _distance_to_mask(mask) > MARGIN + FEATHER + 1
    assert np.array_equal(out[far], frame[far])


def _yuv_of(frame_bgr: np.ndarray):
    from gpu_consumers.engine.yuv import Yuv420

    flat = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    ys, cs = H * W, (H // 2) * (W // 2)
    return Yuv420(flat[:ys].reshape(H, W).copy(), flat[ys:ys + cs].reshape(H // 2, W // 2).copy(),
                  flat[ys + cs:].reshape(H // 2, W // 2).copy())


@pytest.mark.parametrize("mode", FRAME_MODES)
def test_effects_on_the_videos_own_planes_touch_only_the_reach(mode, frame, mask):
    """apply_effect_yuv: luma beyond the reach bit-identical, chroma 2 px further out too,
    and the object's pixels changed in luma and colour."""
    from gpu_consumers.engine.effects import apply_effect_yuv

    smooth = cv2.GaussianBlur(frame, (0, 0), 3)  # chroma subsampling of pure noise says little
    picture = _yuv_of(smooth)
    before = picture.copy()
    out = apply_effect_yuv(mode, picture, mask, margin_px=MARGIN, feather_px=FEATHER, blur_kernel=99,
                           fill_color_bgr=(0, 0, 255))
    assert out is picture  # in place: the renderer's own decoded copy
    dist = _distance_to_mask(mask)
    far = dist > MARGIN + FEATHER + 1
    assert np.array_equal(out.y[far], before.y[far])
    far_c = cv2.resize((dist > MARGIN + FEATHER + 3).astype(np.uint8), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST) > 0
    assert np.array_equal(out.u[far_c], before.u[far_c]) and np.array_equal(out.v[far_c], before.v[far_c])
    inside = mask > 0
    changed = np.abs(out.to_bgr()[inside].astype(int) - before.to_bgr()[inside]).mean()
    assert changed > 2


def test_blur_on_planes_looks_like_the_bgr_blur(frame, mask):
    """A Gaussian commutes with the colour conversion: blurring the planes (chroma at half
    scale) gives the BGR blur's picture to within a few levels inside the object."""
    from gpu_consumers.engine.effects import apply_effect_yuv

    smooth = cv2.GaussianBlur(frame, (0, 0), 2)
    picture = _yuv_of(smooth)
    via_planes = apply_effect_yuv("blur", picture, mask, margin_px=MARGIN, feather_px=FEATHER).to_bgr()
    via_bgr = _yuv_of(apply_effect("blur", smooth, mask, margin_px=MARGIN, feather_px=FEATHER)).to_bgr()
    inside = mask > 0
    assert np.abs(via_planes[inside].astype(int) - via_bgr[inside]).mean() < 3


@pytest.mark.parametrize("y, x, h, w", [(0, 0, 8, 8), (3, 5, 7, 9), (1, 1, 1, 1), (10, 3, 6, 13), (4, 2, 8, 14)])
def test_chroma_alpha_is_the_max_of_each_2x2_block(y: int, x: int, h: int, w: int) -> None:
    """Each chroma sample takes the largest luma weight of the 2x2 pixels it covers (0 outside
    the luma region), over exactly the chroma samples those pixels fall in."""
    shape = (18, 18)
    alpha = np.random.default_rng(y * 31 + x).random((h, w)).astype(np.float32)
    full = np.zeros(shape, np.float32)
    full[y:y + h, x:x + w] = alpha
    half, (rows, cols) = chroma_alpha(alpha, (slice(y, y + h), slice(x, x + w)), shape)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (y // 2, -(-(y + h) // 2), x // 2, -(-(x + w) // 2))
    want = np.array([[full[2 * r:2 * r + 2, 2 * c:2 * c + 2].max() for c in range(cols.start, cols.stop)]
                     for r in range(rows.start, rows.stop)], np.float32)
    assert np.array_equal(half, want)
