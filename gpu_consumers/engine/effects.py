"""Hide the masked region of a frame: blur, pixelate or fill, with a feathered edge.

Every effect works the same way: the mask is grown by `margin_px` (so the object's edge is
covered too), then faded out over `feather_px` more pixels. Pixels farther than
``margin_px + feather_px + 1`` from the mask are never touched: they are bit-identical to
the input. The work is done on the mask's bounding box (plus what the effect needs around
it), not on the whole frame.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .errors import UnsupportedMode
from .masks import mask_u8
from .yuv import Yuv420, bgr_to_yuv

#: Effect modes. "erase" needs neighbouring frames: it is rendered by `render`/`erase`,
#: not by `apply_effect`.
MODES = ("blur", "pixelate", "fill", "erase")
DEFAULT_FEATHER_PX = 6

_Region = tuple[slice, slice]


def check_mode(mode: str) -> None:
    """Raise `UnsupportedMode` unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise UnsupportedMode(f"Unknown mode {mode!r}; choose one of: {', '.join(MODES)}.")


#: A mask grown by r takes the pixels within r + DISC_SLACK of it (exact Euclidean distance):
#: a superset of the dilation by OpenCV's elliptic disc of radius r, which takes the pixels
#: with |dx| <= round(sqrt(r^2 - dy^2)), i.e. within r + 0.5. One distance transform costs a
#: fraction of a dilation by a disc that large (e.g. 0.16 against 0.04 ms at r = 16).
DISC_SLACK = 0.5


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """The exact Euclidean distance (float32) of every pixel to the nearest non-zero pixel of
    `mask` (bool or uint8), 0 on the mask; the same values on every call.

    OpenCV's precise transform is not reproducible (OpenCV 5.0: two calls on the same input
    differ by up to ~1e-5), and a job's pixels must not depend on the run (a resumed job's
    output must equal an uninterrupted one's). An exact distance is the root of an integer
    (dx^2 + dy^2), and the transform's error on its square stays far below 0.5 (at most 0.004
    measured), so snapping the square to that integer gives the exact, repeatable value.
    """
    dist = cv2.distanceTransform(mask_u8(mask, invert=True), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    np.multiply(dist, dist, out=dist)
    np.rint(dist, out=dist)
    return np.sqrt(dist, out=dist)


def grown(mask: np.ndarray, radius: float) -> np.ndarray:
    """`mask` grown by `radius` pixels (bool): the pixels within ``radius + DISC_SLACK`` of it."""
    return distance_to_mask(mask) <= radius + DISC_SLACK


def soft_alpha(mask: np.ndarray, margin_px: int, feather_px: int) -> tuple[np.ndarray, _Region] | None:
    """The blend weight of the effect, on the region of the frame it can touch.

    Returns ``(alpha, region)``: `alpha` float32 in [0, 1], 1 inside the mask grown by
    `margin_px` and falling linearly to 0 over `feather_px` pixels beyond it; `region`
    the (rows, cols) slices of the frame it covers. None when the mask is empty.
    """
    if margin_px < 0 or feather_px < 0:
        raise ValueError("margin_px and feather_px must be >= 0")
    if mask.dtype != np.uint8:
        mask = (mask > 0).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask))  # of the non-zero pixels
    if w == 0 or h == 0:
        return None
    grow = margin_px + feather_px + 1
    rows, cols = mask.shape[:2]
    region = (slice(max(0, y - grow), min(rows, y + h + grow)), slice(max(0, x - grow), min(cols, x + w + grow)))
    # One distance transform gives both: the mask grown by the margin (as `grown` takes it),
    # and the feather, falling to 0 at margin + feather + 1, the region's edge.
    dist = distance_to_mask(mask[region])
    if feather_px == 0:
        return (dist <= margin_px + DISC_SLACK).astype(np.float32), region
    ramp = grow - (margin_px + DISC_SLACK)  # weight 1 at margin + slack, 0 at the region's edge
    alpha = np.clip((grow - dist) / ramp, 0.0, 1.0, out=dist)
    return alpha, region


def _composite(frame: np.ndarray, region: _Region, alpha: np.ndarray, effect: np.ndarray,
               inplace: bool = False) -> np.ndarray:
    """Blend `effect` over `frame[region]` with weight `alpha`; a new frame (or `frame`
    itself when `inplace`), the rest untouched.

    ``src + (effect - src) * alpha`` in float32, rounded: where alpha is 0 that is `src`
    exactly (bit-identical), where it is 1 `effect` exactly.
    """
    out = frame if inplace else frame.copy()
    src = frame[region].astype(np.float32)
    diff = effect.astype(np.float32)
    cv2.subtract(diff, src, dst=diff)
    if diff.ndim == 3:
        a = cv2.merge([alpha] * diff.shape[2]) if diff.shape[2] > 1 else alpha[..., None]
    else:
        a = alpha
    cv2.multiply(diff, a, dst=diff)
    cv2.add(diff, src, dst=diff)
    out[region] = np.rint(diff).astype(frame.dtype)
    return out


def _blend_in_mask(frame: np.ndarray, mask: np.ndarray, margin_px: int, feather_px: int,
                   effect: Callable[[_Region], np.ndarray], inplace: bool = False) -> np.ndarray:
    """`frame` with ``effect(region)`` (the effect's picture of the region `soft_alpha` can
    touch) blended in by the feathered, grown mask; unchanged when the mask is empty (a
    copy, unless `inplace`)."""
    return _blend_alpha(frame, soft_alpha(mask, margin_px, feather_px), effect, inplace)


def _blend_alpha(frame: np.ndarray, found: tuple[np.ndarray, _Region] | None,
                 effect: Callable[[_Region], np.ndarray], inplace: bool) -> np.ndarray:
    if found is None:
        return frame if inplace else frame.copy()
    alpha, region = found
    return _composite(frame, region, alpha, effect(region), inplace)


def _padded(region: _Region, pad: int, shape: tuple[int, ...]) -> tuple[_Region, _Region]:
    """`region` grown by `pad` (clipped to `shape`), and `region` relative to the grown one."""
    r, c = region
    r0, c0 = max(0, r.start - pad), max(0, c.start - pad)
    r1, c1 = min(shape[0], r.stop + pad), min(shape[1], c.stop + pad)
    inner = (slice(r.start - r0, r.stop - r0), slice(c.start - c0, c.stop - c0))
    return (slice(r0, r1), slice(c0, c1)), inner


#: Kernels at least this large are blurred on a picture downscaled by ``kernel // this``
#: (then upscaled): the same Gaussian to within a grey level or two, at a fraction of the
#: cost (a 99x99 kernel: a 25x25 one on a quarter-size crop, ~15x cheaper). Smaller
#: kernels are blurred at full size, exactly.
BLUR_DOWNSCALE_FROM = 48


def gaussian_sigma(kernel: int) -> float:
    """The sigma OpenCV gives a `kernel` x `kernel` Gaussian when none is set."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def blur_region(image: np.ndarray, kernel: int, inner: _Region | None = None) -> np.ndarray:
    """`image` blurred by a `kernel` x `kernel` Gaussian (OpenCV's default sigma for it);
    with `inner`, only that part of the result (the rest of `image` is context it reads).

    Large kernels (>= `BLUR_DOWNSCALE_FROM`) work on a copy downscaled by a factor
    ``f = kernel // 24`` (area averaging), blurred with sigma' such that downscale + blur +
    bilinear upscale has the variance of the full-size Gaussian (area: f^2/12, bilinear:
    f^2/6), then upscaled - only over `inner`, with the sample positions a whole-picture
    resize would use. A Gaussian this wide keeps nothing finer than ~sigma, so the
    result is the full-size blur to within a couple of grey levels (tests/unit/
    test_engine_effects.py). Returns float32.
    """
    kernel = max(3, int(kernel) | 1)
    h, w = image.shape[:2]
    rows, cols = inner if inner is not None else (slice(0, h), slice(0, w))
    factor = kernel // 24 if kernel >= BLUR_DOWNSCALE_FROM else 1
    if factor <= 1 or min(h, w) < 2 * factor:
        # float32: OpenCV's bit-exact uint8 path is ~3x slower for large kernels.
        return cv2.GaussianBlur(image.astype(np.float32), (kernel, kernel), 0)[rows, cols]
    sigma = gaussian_sigma(kernel)
    small_sigma = float(np.sqrt(max(sigma * sigma - factor * factor / 4.0, 0.25))) / factor
    small_kernel = 2 * int(np.ceil(3 * small_sigma)) + 1
    sw, sh = -(-w // factor), -(-h // factor)
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    # float32: OpenCV's uint8 Gaussian on a picture this small is ~8x slower (its
    # bit-exact fixed-point path), and the unrounded result is closer to the true blur.
    small = cv2.GaussianBlur(small, (small_kernel, small_kernel), small_sigma)
    # Bilinear upscale of the inner part only: output pixel (x, y) samples the small picture
    # at ((x + 0.5) * sw / w - 0.5, ...) as `cv2.resize` does; edges replicated as it clamps.
    fx, fy = sw / w, sh / h
    to_small = np.array([[fx, 0, (cols.start + 0.5) * fx - 0.5], [0, fy, (rows.start + 0.5) * fy - 0.5]])
    return cv2.warpAffine(small, to_small, (cols.stop - cols.start, rows.stop - rows.start),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def apply_blur(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    kernel: int = 99,
    margin_px: int = 8,
    feather_px: int = DEFAULT_FEATHER_PX,
) -> np.ndarray:
    """Gaussian blur (`kernel` x `kernel`, made odd, at least 3) inside the grown mask.

    The blur reads up to ``kernel // 2`` pixels around the region so it looks the same as
    blurring the whole frame; it writes only inside the region. Large kernels are computed
    on a downscaled crop (`blur_region`).
    """
    return _blend_in_mask(frame_bgr, mask, margin_px, feather_px, _blurred(frame_bgr, kernel))


def _blurred(frame: np.ndarray, kernel: int) -> Callable[[_Region], np.ndarray]:
    kernel = max(3, int(kernel) | 1)

    def blurred(region: _Region) -> np.ndarray:
        outer, inner = _padded(region, kernel // 2, frame.shape)
        return blur_region(frame[outer], kernel, inner)

    return blurred


def _mosaic(frame: np.ndarray, block_px: int) -> Callable[[_Region], np.ndarray]:
    block_px = max(1, int(block_px))

    def mosaic(region: _Region) -> np.ndarray:
        src = frame[region]
        h, w = src.shape[:2]
        small = cv2.resize(src, (max(1, round(w / block_px)), max(1, round(h / block_px))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)

    return mosaic


def _solid(frame: np.ndarray, color) -> Callable[[_Region], np.ndarray]:  # type: ignore[no-untyped-def]
    def solid(region: _Region) -> np.ndarray:
        out = np.empty_like(frame[region])
        out[...] = color
        return out

    return solid


def apply_pixelate(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    block_px: int = 16,
    margin_px: int = 8,
    feather_px: int = DEFAULT_FEATHER_PX,
) -> np.ndarray:
    """Mosaic of `block_px`-sized blocks (each the mean of its pixels) inside the grown mask."""
    return _blend_in_mask(frame_bgr, mask, margin_px, feather_px, _mosaic(frame_bgr, block_px))


def apply_fill(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    color_bgr: tuple[int, int, int] = (0, 0, 0),
    margin_px: int = 8,
    feather_px: int = DEFAULT_FEATHER_PX,
) -> np.ndarray:
    """Solid `color_bgr` inside the grown mask."""
    return _blend_in_mask(frame_bgr, mask, margin_px, feather_px, _solid(frame_bgr, color_bgr))


def apply_effect(
    mode: str,
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    *,
    margin_px: int = 8,
    feather_px: int = DEFAULT_FEATHER_PX,
    blur_kernel: int = 99,
    block_px: int = 16,
    fill_color_bgr: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Apply effect `mode` ("blur" | "pixelate" | "fill"); raises `UnsupportedMode` otherwise.

    "erase" needs the neighbouring frames: see `gpu_consumers.engine.erase.erase_frame`.
    """
    _check_frame_mode(mode)
    effect = _effect_of(mode, frame_bgr, blur_kernel, block_px, fill_color_bgr)
    return _blend_in_mask(frame_bgr, mask, margin_px, feather_px, effect)


def _check_frame_mode(mode: str) -> None:
    check_mode(mode)
    if mode == "erase":
        raise UnsupportedMode("Erase needs neighbouring frames (engine.render); blur, pixelate and fill work frame by frame.")


def _effect_of(mode: str, picture: np.ndarray, blur_kernel: int, block_px: int, fill) -> Callable[[_Region], np.ndarray]:  # type: ignore[no-untyped-def]
    """The picture-of-a-region function of frame mode `mode` on `picture` (a frame or a plane)."""
    if mode == "blur":
        return _blurred(picture, blur_kernel)
    if mode == "pixelate":
        return _mosaic(picture, block_px)
    return _solid(picture, fill)


def apply_effect_yuv(
    mode: str,
    picture: Yuv420,
    mask: np.ndarray,
    *,
    margin_px: int = 8,
    feather_px: int = DEFAULT_FEATHER_PX,
    blur_kernel: int = 99,
    block_px: int = 16,
    fill_color_bgr: tuple[int, int, int] = (0, 0, 0),
) -> Yuv420:
    """`apply_effect` on a picture's own 4:2:0 planes (see `yuv`), *in place*; returns it.

    The luma plane gets exactly what `apply_effect` does to a one-channel picture. The
    chroma planes (half size) get the same effect at half scale - blur kernel and mosaic
    blocks halved, rounded down (a kernel then made odd) - blended by `chroma_alpha` (a sample takes the largest weight
    of the four pixels it covers), so the colour is hidden wherever the luma is. Pixels the
    luma effect does not reach keep their luma exactly; their chroma is kept too except
    within a pixel of that reach (a chroma sample spans 2x2 pixels).
    A Gaussian commutes with the (affine) colour conversion, so the blur looks like the BGR
    one (tests/unit/test_engine_effects.py compares them).
    """
    _check_frame_mode(mode)
    fill = bgr_to_yuv(fill_color_bgr)
    found = soft_alpha(mask, margin_px, feather_px)
    if found is None:
        return picture
    luma = _effect_of(mode, picture.y, blur_kernel, block_px, fill[0])
    _blend_alpha(picture.y, found, luma, True)
    half = chroma_alpha(*found, picture.shape)
    for plane, value in ((picture.u, fill[1]), (picture.v, fill[2])):
        chroma = _effect_of(mode, plane, int(blur_kernel) // 2, int(block_px) // 2, value)
        _blend_alpha(plane, half, chroma, True)
    return picture


def chroma_alpha(alpha: np.ndarray, region: _Region, shape: tuple[int, int]) -> tuple[np.ndarray, _Region]:
    """The blend weight of the chroma planes of a 4:2:0 picture of `shape` (h, w) from the
    luma's (`alpha` over `region`, as `soft_alpha` gives them): each chroma sample takes the
    largest weight of the 2x2 pixels it covers; returns it and its region of the half-size
    planes."""
    rows, cols = region
    r0, c0 = rows.start // 2 * 2, cols.start // 2 * 2
    r1, c1 = min(shape[0], -(-rows.stop // 2) * 2), min(shape[1], -(-cols.stop // 2) * 2)
    if (r0, r1, c0, c1) == (rows.start, rows.stop, cols.start, cols.stop):
        a = alpha
    else:  # zero-padded to even bounds (by hand: np.pad costs ~0.1 ms a call)
        a = np.zeros((r1 - r0, c1 - c0), alpha.dtype)
        a[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0] = alpha
    # The maximum of four strided views: the same values as ``reshape(h/2, 2, w/2, 2).max``,
    # which numpy reduces ~25x slower (0.3-0.5 ms a frame at 640x360).
    half = np.maximum(np.maximum(a[0::2, 0::2], a[0::2, 1::2]), np.maximum(a[1::2, 0::2], a[1::2, 1::2]))
    return half, (slice(r0 // 2, r1 // 2), slice(c0 // 2, c1 // 2))
