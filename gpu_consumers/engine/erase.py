"""Erase: replace the object with the background, borrowed from neighbouring frames.

For frame i, the region to fill is the mask grown by the safety margin and feathered (as
for blur). Each pixel of it is taken, nearest frame first (i+1, i-1, i+2, i-2, ... up to
`ERASE_RADIUS`), from a neighbouring frame j where that background point was visible
(outside j's grown mask), following the camera motion between j and i (the per-frame
homographies that tracking estimated from the optical flow of the background). Pixels
never visible within the window are filled by spatial inpainting (`cv2.inpaint`, Telea, on
a coarser grid: `inpaint_holes`). The result is blended in with the feathered edge; on a
yuv420p video, into the frame's own planes, so nothing beyond the region is converted.

It is temporally stable because the fill is real background that moves with the camera,
and deterministic per frame (it depends only on frames i-R .. i+R and their masks), so
rendering in chunks gives the same pictures.
"""

from __future__ import annotations

import cv2
import numpy as np

from .effects import _composite, _Region, chroma_alpha, grown, soft_alpha
from .masks import mask_u8
from .masktrack import MaskTrack
from .yuv import Yuv420

#: How many frames on each side of a frame erase may borrow background from.
ERASE_RADIUS = 12
INPAINT_RADIUS = 5
#: Holes are inpainted on a grid where their box (plus a ring) is at most this many px across.
INPAINT_MAX_SIDE = 48


def grow_mask(mask: np.ndarray, grow: int) -> np.ndarray:
    """`mask` (uint8, 0 and one value) grown by `grow` pixels (`effects.grown`: the same
    pixels `effects.soft_alpha` takes within its margin), computed on its bounding box only."""
    out = np.zeros_like(mask)
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return out
    rows, cols = mask.shape[:2]
    y0, x0 = max(0, y - grow), max(0, x - grow)
    y1, x1 = min(rows, y + h + grow), min(cols, x + w + grow)
    sub = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.where(grown(sub, grow), sub.max(), 0).astype(mask.dtype)
    return out


def _neighbour_order(i: int, available: set[int]) -> list[int]:
    order = []
    for d in range(1, ERASE_RADIUS + 1):
        for j in (i + d, i - d):
            if j in available:
                order.append(j)
    return order


def erase_fill(
    i: int,
    window: dict[int, tuple[np.ndarray, np.ndarray]],
    track: MaskTrack,
    margin_px: int,
    feather_px: int,
) -> tuple[np.ndarray, _Region, np.ndarray] | None:
    """What erase puts in frame `i`: ``(alpha, region, filled)``, or None when the mask is empty.

    `region` is the part of the frame the effect can touch (as `soft_alpha` gives it),
    `alpha` its blend weight, and `filled` the BGR picture of that region with the object
    replaced by background: borrowed from the neighbours where it was visible there,
    inpainted where it never was, the frame's own pixels where alpha is 0.

    `window` maps frame index -> (BGR image, full-resolution mask[, that mask grown by
    margin + feather + 1 as `grow_mask` makes it]) for frame `i` and its neighbours (any
    subset of i-R .. i+R; fewer near the ends of the video).
    """
    image, mask = window[i][:2]
    found = soft_alpha(mask, margin_px, feather_px)
    if found is None:
        return None
    alpha, region = found
    y0, x0 = region[0].start, region[1].start
    need = alpha > 0
    filled = image[region].copy()
    todo = need.copy()  # still to fill
    grow = margin_px + feather_px + 1
    for j in _neighbour_order(i, set(window) - {i}):
        src, src_mask = window[j][:2]
        grown = window[j][2] if len(window[j]) > 2 else grow_mask(src_mask, grow)
        # Only the box of what is still to fill is warped (frame j -> frame i, shifted to
        # the box); the (cheap, one-channel) visibility first, and the picture only when
        # this neighbour has something to give.
        bx, by, bw, bh = cv2.boundingRect(todo.view(np.uint8))
        m = np.array([[1, 0, -x0 - bx], [0, 1, -y0 - by], [0, 0, 1]], np.float64) @ track.motion_between(j, i)
        box = (slice(by, by + bh), slice(bx, bx + bw))
        blocked = cv2.warpPerspective(grown, m, (bw, bh), flags=cv2.INTER_NEAREST,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        take = todo[box] & (blocked == 0)
        if take.any():
            warped = cv2.warpPerspective(src, m, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            filled[box][take] = warped[take]
            todo[box] &= ~take
            if not todo.any():
                break
    if todo.any():
        # Inpaint from the known ring around the hole: original pixels outside `need`,
        # borrowed background inside it.
        inpaint_holes(filled, todo)
    return alpha, region, filled


def inpaint_holes(picture: np.ndarray, missing: np.ndarray) -> None:
    """Fill `picture`'s `missing` pixels (bool mask) in place by Telea inpainting.

    It works on the holes' bounding box plus a ring, downscaled so that the box is at most
    `INPAINT_MAX_SIDE` px across (area averaging; a small pixel is missing when any pixel
    it covers is), and writes the upscaled result into the missing pixels only. Telea's fill
    is a smooth interpolation from the ring, so the coarser grid loses little, and it costs
    a fraction: inpainting at full size was most of erase's time (e.g. ~3 of ~8 ms a frame
    at 640x360 for a 60-px object).
    """
    x, y, bw, bh = cv2.boundingRect(missing.astype(np.uint8))
    if bw == 0 or bh == 0:
        return
    pad = 2 * INPAINT_RADIUS
    rows, cols = picture.shape[:2]
    y0, x0, y1, x1 = max(0, y - pad), max(0, x - pad), min(rows, y + bh + pad), min(cols, x + bw + pad)
    crop, hole = picture[y0:y1, x0:x1], missing[y0:y1, x0:x1]
    factor = min(4, -(-max(y1 - y0, x1 - x0) // INPAINT_MAX_SIDE))
    hole8 = hole.astype(np.uint8) * 255
    if factor <= 1:
        painted = cv2.inpaint(crop, hole8, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    else:
        size = (-(-(x1 - x0) // factor), -(-(y1 - y0) // factor))
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        small_hole = mask_u8(cv2.resize(hole8, size, interpolation=cv2.INTER_AREA))
        small = cv2.inpaint(small, small_hole, max(2, INPAINT_RADIUS // factor + 1), cv2.INPAINT_TELEA)
        painted = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    crop[hole] = painted[hole]


def erase_frame(
    i: int,
    window: dict[int, tuple[np.ndarray, np.ndarray]],
    track: MaskTrack,
    margin_px: int,
    feather_px: int,
) -> np.ndarray:
    """Frame `i` (BGR) with its masked object erased; `window` as for `erase_fill`."""
    image = window[i][0]
    found = erase_fill(i, window, track, margin_px, feather_px)
    if found is None:
        return image.copy()
    alpha, region, filled = found
    return _composite(image, region, alpha, filled)


def erase_frame_yuv(
    i: int,
    planes: Yuv420,
    window: dict[int, tuple[np.ndarray, np.ndarray]],
    track: MaskTrack,
    margin_px: int,
    feather_px: int,
) -> Yuv420:
    """Frame `i`'s own 4:2:0 `planes` with its masked object erased, *in place*; returns them.

    `window` holds BGR pictures as for `erase_fill` (the neighbours' background is warped
    in BGR). Only the touched region is converted back (OpenCV's BT.601 matrices both ways,
    so borrowed pixels keep their samples to within rounding): luma is blended by `alpha`,
    chroma by `effects.chroma_alpha` (the 2x2 maximum of `alpha`), so the object's colour
    goes wherever its luma does. Every sample the effect does not reach stays bit-identical to the input's.
    """
    found = erase_fill(i, window, track, margin_px, feather_px)
    if found is None:
        return planes
    alpha, region, filled = found
    yuv = cv2.cvtColor(filled, cv2.COLOR_BGR2YUV)
    _composite(planes.y, region, alpha, np.ascontiguousarray(yuv[..., 0]), inplace=True)
    half_alpha, half = chroma_alpha(alpha, region, planes.shape)
    # The filled picture's chroma on the chroma grid: its region grown to even bounds (by
    # repeating its edge; those pixels have weight 0 in luma), averaged 2x2.
    rows, cols = region
    pad = ((rows.start - 2 * half[0].start, 2 * half[0].stop - rows.stop),
           (cols.start - 2 * half[1].start, 2 * half[1].stop - cols.stop), (0, 0))
    chroma = cv2.resize(np.pad(yuv[..., 1:], pad, mode="edge"), half_alpha.shape[::-1], interpolation=cv2.INTER_AREA)
    _composite(planes.u, half, half_alpha, chroma[..., 0], inplace=True)
    _composite(planes.v, half, half_alpha, chroma[..., 1], inplace=True)
    return planes
