"""Synthetic clips with exact ground-truth masks, for the engine's quality tests and bench.

`make_gt_clip(path, kind, ...)` writes an H.264 clip and returns a `GTClip` with the
ground-truth mask of the *visible* object on every frame and the click to give the engine.
Kinds (`KINDS`):

* ``basic``        a textured ellipse moving and slowly growing over a textured background;
* ``pan``          the camera pans (the whole background moves) while the object moves and
                   grows by 60 %;
* ``occlusion``    a wall passes in front of the object and hides it completely for several
                   frames, then uncovers it (re-acquisition);
* ``distractor``   a look-alike (same pattern, slightly different colours) passes close by;
* ``low_contrast`` the object's colours are within ~18 levels of the background's;
* ``fast_blur``    fast motion (~4 % of the width per frame) rendered with motion blur;
                   the ground truth is where the object covers at least half of a pixel;
* ``late_click``   like ``pan`` but the click is on a late frame (tracking goes backwards).

Everything is deterministic (seeded); the masks are exact (computed, not estimated).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

KINDS = ("basic", "pan", "occlusion", "distractor", "low_contrast", "fast_blur", "late_click")


@dataclass
class GTClip:
    """A generated clip, its ground truth, and where to click."""

    path: Path
    kind: str
    width: int
    height: int
    fps: int
    masks: np.ndarray  # bool (frames, height, width): visible object pixels
    click: tuple[float, float, int]  # x, y, frame
    #: (frames, 2) int: where each frame's view starts on the background (x, y); a
    #: background point at p on frame i-1 is at ``p - (camera[i] - camera[i-1])`` on frame i.
    camera: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return len(self.masks)


def _texture(h: int, w: int, rng: np.random.Generator, cell: int, amp: float) -> np.ndarray:
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    import cv2

    tex = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return amp * tex / max(float(tex.std()), 1e-6)


class _Scene:
    def __init__(self, kind: str, width: int, height: int, frames: int, seed: int) -> None:
        self.kind, self.w, self.h, self.n = kind, width, height, frames
        rng = np.random.default_rng(seed)
        self.pan = kind in ("pan", "late_click")
        pw = width + (int(0.5 * width) if self.pan else 0)
        ph = height + (int(0.1 * height) if self.pan else 0)
        yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
        fine = _texture(ph, pw, rng, max(2, width // 80), 14.0)
        broad = _texture(ph, pw, rng, max(4, width // 10), 25.0)
        base = np.stack([95 + 30 * xx / pw, 110 + 25 * yy / ph, 120 - 20 * xx / pw], axis=-1)
        self.bg = base + (fine + broad)[..., None]
        self.s = width / 320.0  # sizes are given for 320 px wide and scaled
        if kind == "low_contrast":
            self.obj_cols = (np.array([112, 132, 120.0]), np.array([128, 118, 104.0]))
        else:
            self.obj_cols = (np.array([40, 200, 235.0]), np.array([20, 90, 200.0]))
        self.dis_cols = (np.array([60, 190, 220.0]), np.array([40, 100, 180.0]))

    # object trajectory (in frame coordinates, at time t in frames)
    def obj(self, t: float) -> tuple[float, float, float, float]:
        n, s = max(1, self.n - 1), self.s
        u = t / n
        r = 22 * s
        if self.kind == "fast_blur":
            cx = (0.12 + 0.76 * (0.5 - 0.5 * math.cos(2 * math.pi * u))) * self.w
            cy = 0.5 * self.h + 0.15 * self.h * math.sin(2 * math.pi * u)
            return cx, cy, r, r * 0.8
        if self.kind in ("pan", "late_click"):
            grow = 1.0 + 0.6 * u
        else:
            grow = 1.0 + 0.2 * u
        cx = (0.25 + 0.45 * u) * self.w
        cy = 0.5 * self.h + 0.12 * self.h * math.sin(2 * math.pi * u)
        return cx, cy, r * grow, r * 0.75 * grow

    def cam(self, t: float) -> tuple[float, float]:
        if not self.pan:
            return 0.0, 0.0
        u = t / max(1, self.n - 1)
        return u * 0.5 * self.w, 0.05 * self.h * math.sin(math.pi * u)

    def render(self, t: float, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float RGB image, bool object mask) at time t, without motion blur."""
        ox, oy = self.cam(t)
        ix, iy = int(round(ox)), int(round(oy))
        img = self.bg[iy:iy + self.h, ix:ix + self.w].copy()
        if self.kind == "distractor":
            u = t / max(1, self.n - 1)
            cx, cy, a, b = self.obj(t)
            dx = (0.85 - 0.5 * u) * self.w
            dy = cy + (a + b) * 1.05 + 2 * self.s  # passes just below the object
            self._paint(img, yy, xx, dx, dy, a * 0.9, b * 0.9, self.dis_cols)
        cx, cy, a, b = self.obj(t)
        mask = self._paint(img, yy, xx, cx, cy, a, b, self.obj_cols)
        if self.kind == "occlusion":
            u = t / max(1, self.n - 1)
            wall_w = 110 * self.s
            wx = (1.1 - 1.0 * u) * self.w  # moves left, against the object
            wall = (xx >= wx - wall_w / 2) & (xx < wx + wall_w / 2)
            img[wall] = np.array([200, 60, 60.0]) + 10 * np.sin(yy[wall] / 3)[:, None]
            mask &= ~wall
        return img, mask

    def _paint(self, img, yy, xx, cx, cy, a, b, cols) -> np.ndarray:
        inside = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
        cell = max(3.0, a / 3.5)
        chk = ((np.floor((xx - cx) / cell) + np.floor((yy - cy) / cell)) % 2)[inside]
        img[inside] = np.where(chk[:, None] > 0, cols[0], cols[1])
        return inside


def make_gt_clip(
    path: str | os.PathLike[str],
    kind: str = "basic",
    width: int = 320,
    height: int = 180,
    frames: int = 40,
    fps: int = 25,
    seed: int = 1,
) -> GTClip:
    """Write the clip `kind` (see `KINDS`) to `path` (H.264 CRF 16, no audio) with its truth."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    path = Path(path)
    scene = _Scene(kind, width, height, frames, seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    masks = np.zeros((frames, height, width), bool)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "16", "preset": "veryfast",
                                                                   "x264-params": "mbtree=0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            if kind == "fast_blur":
                acc, cover = np.zeros((height, width, 3)), np.zeros((height, width))
                subs = 7
                for k in range(subs):
                    img, m = scene.render(i + (k - subs // 2) * 0.12, yy, xx)
                    acc += img
                    cover += m
                img, mask = acc / subs, cover / subs >= 0.5
            else:
                img, mask = scene.render(float(i), yy, xx)
            masks[i] = mask
            rgb = np.clip(img, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    click_frame = int(round(0.75 * (frames - 1))) if kind == "late_click" else 0
    if kind == "occlusion":
        click_frame = 0
    cx, cy, a, _ = scene.obj(click_frame)
    # Click inside the object, a little off-centre (users never hit the exact centre).
    camera = np.array([[round(v) for v in scene.cam(float(i))] for i in range(frames)], int)
    return GTClip(path, kind, width, height, fps, masks, (cx + 0.2 * a, cy, click_frame), camera)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = np.logical_or(pred, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, truth).sum() / union)
