"""Erase: replace the object with the background, borrowed from neighbouring frames.

For frame i, the region to fill is the mask grown by the safety margin and feathered (as
for blur). Each pixel of it is taken, nearest frame first (i+1, i-1, i+2, i-2, ... up to
`ERASE_RADIUS`), from a neighbouring frame j where that background point was visible
(outside j's grown mask), following the camera motion between j and i (the per-frame
homographies that tracking estimated from the optical flow of the background). Pixels
never visible within the window are filled by spatial inpainting (`cv2.inpaint`, Telea).
The result is blended in with the feathered edge.

It is temporally stable because the fill is real background that moves with the camera,
and deterministic per frame (it depends only on frames i-R .. i+R and their masks), so
rendering in chunks gives the same pictures.
"""

from __future__ import annotations

import cv2
import numpy as np

from .effects import _composite, soft_alpha
from .masktrack import MaskTrack

#: How many frames on each side of a frame erase may borrow background from.
ERASE_RADIUS = 12
INPAINT_RADIUS = 5


def grow_mask(mask: np.ndarray, grow: int) -> np.ndarray:
    """`mask` dilated by `grow` pixels (a disc), computed on its bounding box only."""
    out = np.zeros_like(mask)
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return out
    rows, cols = mask.shape[:2]
    y0, x0 = max(0, y - grow), max(0, x - grow)
    y1, x1 = min(rows, y + h + grow), min(cols, x + w + grow)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    out[y0:y1, x0:x1] = cv2.dilate(mask[y0:y1, x0:x1], kernel)
    return out


def _neighbour_order(i: int, available: set[int]) -> list[int]:
    order = []
    for d in range(1, ERASE_RADIUS + 1):
        for j in (i + d, i - d):
            if j in available:
                order.append(j)
    return order


def erase_frame(
    i: int,
    window: dict[int, tuple[np.ndarray, np.ndarray]],
    track: MaskTrack,
    margin_px: int,
    feather_px: int,
) -> np.ndarray:
    """Frame `i` with its masked object erased.

    `window` maps frame index -> (BGR image, full-resolution mask[, that mask grown by
    margin + feather + 1 as `grow_mask` makes it]) for frame `i` and its neighbours (any
    subset of i-R .. i+R; fewer near the ends of the video).
    """
    image, mask = window[i][:2]
    found = soft_alpha(mask, margin_px, feather_px)
    if found is None:
        return image.copy()
    alpha, region = found
    rows, cols = region
    y0, x0 = rows.start, cols.start
    h, w = alpha.shape
    need = alpha > 0
    fill = np.zeros((h, w, 3), np.uint8)
    have = np.zeros((h, w), bool)
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    grow = margin_px + feather_px + 1
    for j in _neighbour_order(i, set(window) - {i}):
        src, src_mask = window[j][:2]
        grown = window[j][2] if len(window[j]) > 2 else grow_mask(src_mask, grow)
        m = shift @ track.motion_between(j, i)
        # The (cheap, one-channel) visibility first: the picture is warped only when this
        # neighbour has something to give.
        blocked = cv2.warpPerspective(grown, m, (w, h), flags=cv2.INTER_NEAREST,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=255) > 0
        take = need & ~have & ~blocked
        if take.any():
            warped = cv2.warpPerspective(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            fill[take] = warped[take]
            have |= take
            if not (need & ~have).any():
                break
    missing = need & ~have
    if missing.any():
        # Inpaint from the known ring around the hole: original pixels outside `need`,
        # borrowed background inside it.
        base = image[region].copy()
        base[have] = fill[have]
        fill = cv2.inpaint(base, missing.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return _composite(image, region, alpha, fill)
