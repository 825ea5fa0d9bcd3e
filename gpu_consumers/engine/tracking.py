"""Pass 1: from the user's prompt to one mask + confidence per frame (a `MaskTrack`).

`VideoTracker` is the interface every segmenter/tracker implements (a learned model such as
SAM 2 plugs in beside the default): ``track(in_path, info, prompt) -> MaskTrack``, with
the prompt in coded-frame coordinates, masks for ALL frames, before and after the
prompted frame.

`ClassicTracker` is the default: CPU only, no downloaded weights, in the spirit of Video
SnapCut / Rotobrush (optical-flow-guided shape propagation + appearance models):

* every frame is decoded once, when tracking first reaches it, and kept small (longest side
  <= `max_side`; raw, or JPEG in memory for a long video);
* initial mask on the prompted frame: several hypotheses (colour-model region growing
  from discs of increasing radius at the click; GrabCut on windows of several sizes, or on
  the box) and the one whose colours best separate from their surroundings wins; negative
  clicks are definite background;
* propagation backwards and then forwards from the prompted frame. The object's shape is
  kept as a reference mask plus a similarity pose (translation, rotation, scale) updated
  each frame from the optical flow of its *visible* pixels (sparse pyramidal LK seeded by
  the last velocity, or DIS dense flow, fitted by RANSAC), a template match and the last
  velocity - whichever maps the object's pixels best, refined by ECC alignment when none
  fits well - so the shape prior survives partial occlusion. The visible mask is the prior re-segmented by a colour
  model (foreground vs. surrounding background histograms, weighted by how well they
  separate the object, so a low-contrast object leans on the shape prior);
* confidence = visible area / expected area (x colour agreement); below `lost_ratio` the
  frame is *lost*: the pose keeps moving at the last velocity and every lost frame
  searches the whole frame for the object's appearance (template + colour); once found,
  tracking resumes there and is also run backwards over the lost frames, so the frames
  where the object re-emerges are covered too. Lost frames are flagged in the track;
* the camera's motion between consecutive frames (a homography fitted to the flow of the
  background) is recorded for erase.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction

import cv2
import numpy as np

from .effects import grown
from .errors import EmptyVideo, EngineError, InvalidPrompt, JobCancelled
from .framearena import Arena
from .masks import MaskProvider, mask_u8
from .livetrack import LiveTrack
from .masktrack import MaskTrack, encode_mask
from .prompts import Prompt
from .video_io import DecodedFrame, VideoInfo, VideoReader

ProgressFn = Callable[[str, int, int], None]
STAGE_TRACKING = "tracking"


class VideoTracker(ABC):
    """Prompt -> one mask per frame. Implementations: `ClassicTracker`, `ProviderTracker`."""

    #: True when `process_video` may run `track` in a child process beside the renderer
    #: (`trackchild`): the tracker pickles, needs no device or model shared with this
    #: process, and costs enough CPU for a second process to pay.
    runs_in_child_process: bool = False

    @abstractmethod
    def track(
        self,
        in_path: str | os.PathLike[str],
        info: VideoInfo,
        prompt: Prompt,
        *,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        feed: LiveTrack | None = None,
    ) -> MaskTrack:
        """Masks for every frame of `in_path`. `prompt` is validated, in coded coordinates.

        `progress(STAGE_TRACKING, done, total)` may be called; `should_cancel()` polled,
        raising `JobCancelled` when it returns True. `feed`: a `LiveTrack` to publish final
        masks to while tracking runs (`start`, then `publish` of growing prefixes); an
        implementation that cannot ignores it and `process_video` waits for the track.
        """


class ProviderTracker(VideoTracker):
    """Adapter: a streaming `MaskProvider` (e.g. `FixedRegionMasker`) as a `VideoTracker`.

    Masks are stored at full resolution; a frame whose mask is empty is reported lost.
    """

    def __init__(self, provider: MaskProvider) -> None:
        self.provider = provider

    def track(self, in_path, info, prompt, *, progress=None, should_cancel=None, feed=None) -> MaskTrack:
        pngs, conf, lost, pts = [], [], [], []
        self.provider.prepare(info, prompt)
        try:
            with VideoReader(in_path, info) as reader:
                for item in reader.video_frames():
                    _check_cancel(should_cancel, item.index, info.frame_count)
                    mask, c = self.provider.mask_for(item.index, item.image)
                    if mask.shape[:2] != item.image.shape[:2]:
                        raise EngineError(
                            f"The mask for frame {item.index} is {mask.shape[1]}x{mask.shape[0]}, "
                            f"the frame is {item.image.shape[1]}x{item.image.shape[0]}."
                        )
                    m = mask_u8(mask)
                    pngs.append(encode_mask(m))
                    conf.append(float(c))
                    lost.append(not m.any())
                    pts.append(item.pts)
                    if progress is not None:
                        progress(STAGE_TRACKING, item.index + 1, max(info.frame_count, item.index + 1))
        finally:
            self.provider.close()
        return MaskTrack(info.width, info.height, info.width, info.height, pngs, conf, lost, pts,
                         time_base=info.time_base, meta={"tracker": type(self.provider).__name__})


def _tapped(decoded: Iterator[DecodedFrame], tap: Callable[[DecodedFrame], None]) -> Iterator[DecodedFrame]:
    """`decoded`, calling `tap` with each frame first (and dropping its planes after)."""
    for item in decoded:
        tap(item)
        yield replace(item, planes=None)


def track_accepts(tracker: VideoTracker, keyword: str) -> bool:
    """Whether `tracker.track` takes the keyword argument `keyword` (``feed``, ``tap``):
    trackers written before it was added do not."""
    params = inspect.signature(tracker.track).parameters
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_cancel(should_cancel, done: int, total: int) -> None:
    if should_cancel is not None and should_cancel():
        raise JobCancelled(f"The job was cancelled after {done} of {total} frames.")


# ----------------------------------------------------------------------------------------
# The classic tracker
# ----------------------------------------------------------------------------------------

_BINS = 16
_SHIFT = 4  # 256 / 16


def _colour_index(img: np.ndarray) -> np.ndarray:
    q = (img >> _SHIFT).astype(np.int32)
    return (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]


def _hist(idx: np.ndarray, sel: np.ndarray) -> np.ndarray:
    h = np.bincount(idx[sel], minlength=_BINS**3).astype(np.float32)
    s = h.sum()
    return h / s if s > 0 else h


def _largest_touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Connected components of `mask` that overlap `seeds` (bool arrays)."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, bool)
    keep = np.zeros(n, bool)  # a lookup table by label: ~4x cheaper than np.isin here
    keep[labels[seeds & mask]] = True
    keep[0] = False
    return keep[labels]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(m)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return out > 0


def _grabcut(img, positives, negatives, box, seed_r) -> np.ndarray:
    h, w = img.shape[:2]
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        gc[:] = cv2.GC_BGD
        gc[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = cv2.GC_PR_FGD
    for x, y in positives:
        cv2.circle(gc, (int(x), int(y)), seed_r, cv2.GC_FGD, -1)
    for x, y in negatives:
        cv2.circle(gc, (int(x), int(y)), seed_r, cv2.GC_BGD, -1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(img, gc, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    seeds = np.zeros((h, w), np.uint8)
    for x, y in positives:
        cv2.circle(seeds, (int(x), int(y)), seed_r, 1, -1)
    seeds = seeds > 0
    if box is not None and not positives:
        seeds = fg
    return _fill_holes(_largest_touching(fg, seeds))


def _ring_of(obj: np.ndarray) -> np.ndarray:
    """The ring around `obj` (bool): `obj` dilated by an ellipse of radius 0.6 sqrt(area)
    (6 to 60 px), less `obj`. Dilated over the object's box grown by the radius only (the
    same pixels: nothing farther is reached), 2-3x cheaper on a 320x180 frame."""
    area = max(1.0, float(obj.sum()))
    r = int(np.clip(0.6 * np.sqrt(area), 6, 60))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    u8 = obj.astype(np.uint8)
    ring = np.zeros_like(obj, bool)
    x, y, bw, bh = cv2.boundingRect(u8)
    if bw and bh:
        h, w = obj.shape
        sl = (slice(max(0, y - r), min(h, y + bh + r)), slice(max(0, x - r), min(w, x + bw + r)))
        ring[sl] = (cv2.dilate(u8[sl], k) > 0) & ~obj[sl]
    return ring


def separability(img: np.ndarray, obj: np.ndarray) -> float:
    """How well colour tells `obj` from the ring around it (0 = not at all, 1 = perfectly).

    Histograms of the object and of its surrounding ring give each pixel a probability of
    being the object; the score is the mean probability inside minus the mean in the ring.
    A mask that covers only part of the object (its ring holds object colours) or spills
    onto the background (its histogram holds background colours) scores lower.
    """
    ring = _ring_of(obj)
    if obj.sum() < 4 or ring.sum() < 4:
        return 0.0
    idx = _colour_index(img)
    hf, hb = _hist(idx, obj), _hist(idx, ring)
    lut = (hf + 1e-4) / (hf + hb + 2e-4)
    p = lut[idx]
    return float(p[obj].mean() - p[ring].mean())


def _colour_grow(img: np.ndarray, positives, negatives, r: int, iterations: int = 3) -> np.ndarray:
    """Object hypothesis: start from discs of radius `r` at the clicks, then alternate
    (colour histograms of mask vs. ring -> pixels more likely object -> the part connected
    to the clicks, holes filled)."""
    h, w = img.shape[:2]
    seeds = np.zeros((h, w), np.uint8)
    for x, y in positives:
        cv2.circle(seeds, (int(x), int(y)), r, 1, -1)
    obj = seeds > 0
    blocked = np.zeros((h, w), np.uint8)
    for x, y in negatives:
        cv2.circle(blocked, (int(x), int(y)), max(2, r // 3), 1, -1)
    idx = _colour_index(img)
    small_seeds = np.zeros((h, w), np.uint8)
    for x, y in positives:
        cv2.circle(small_seeds, (int(x), int(y)), 2, 1, -1)
    for _ in range(iterations):
        ring = _ring_of(obj)
        if ring.sum() < 4:
            break
        hf, hb = _hist(idx, obj), _hist(idx, ring)
        lut = (hf + 1e-4) / (hf + hb + 2e-4)
        p = cv2.GaussianBlur(lut[idx].astype(np.float32), (5, 5), 0)
        fg = (p > 0.5) & (blocked == 0)
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
        new = _fill_holes(_largest_touching(fg, small_seeds > 0))
        if new.sum() < 4 or new.mean() > 0.6:
            break
        obj = new
    return obj


def initial_mask(img: np.ndarray, positives: list[tuple[float, float]], negatives: list[tuple[float, float]],
                 box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Mask (bool) of the object designated by clicks / box on a (small) BGR frame.

    GrabCut seeded by the clicks (definite foreground) and negative clicks (definite
    background). The object's size is unknown, so GrabCut runs on windows of several sizes
    around the clicks (a local background model separates low-contrast objects better than
    one learned on the whole frame; too small a window cuts the object) and the result
    whose colours best separate from their surroundings (`separability`) wins. With a box:
    GrabCut on the box (outside = background).
    """
    h, w = img.shape[:2]
    seed_r = max(2, int(round(0.015 * min(h, w))))
    pts = positives + negatives
    windows = []
    if box is not None:
        bx0, by0, bx1, by1 = box
        m = 0.25 * max(bx1 - bx0, by1 - by0)
        windows.append((bx0 - m, by0 - m, bx1 + m, by1 + m))
    else:
        cx = float(np.mean([p[0] for p in positives]))
        cy = float(np.mean([p[1] for p in positives]))
        for f in (0.15, 0.25, 0.4):
            half = f * min(h, w)
            windows.append((cx - half, cy - half, cx + half, cy + half))
        windows.append((0, 0, w, h))
    best, best_score = None, -1.0
    if box is None:
        for r in (3, 5, 8, 12, 18):
            r = max(2, int(round(r * min(h, w) / 180)))
            obj = _colour_grow(img, positives, negatives, r)
            if obj.sum() < 3 * np.pi * seed_r**2 or obj.mean() > 0.6:
                continue
            score = separability(img, obj)
            if score > best_score:
                best, best_score = obj, score
    if best_score >= 0.8:
        windows = []  # colours already separate the object cleanly: GrabCut is not needed
    for x0, y0, x1, y1 in windows:
        X0 = max(0, int(min([x0] + [p[0] - seed_r - 2 for p in pts])))
        Y0 = max(0, int(min([y0] + [p[1] - seed_r - 2 for p in pts])))
        X1 = min(w, int(np.ceil(max([x1] + [p[0] + seed_r + 2 for p in pts]))))
        Y1 = min(h, int(np.ceil(max([y1] + [p[1] + seed_r + 2 for p in pts]))))
        sub = np.ascontiguousarray(img[Y0:Y1, X0:X1])
        shift = lambda q: [(x - X0, y - Y0) for x, y in q]  # noqa: E731
        sbox = None if box is None else (box[0] - X0, box[1] - Y0, box[2] - X0, box[3] - Y0)
        part = _grabcut(sub, shift(positives), shift(negatives), sbox, seed_r)
        obj = np.zeros((h, w), bool)
        obj[Y0:Y1, X0:X1] = part
        if obj.sum() < 3 * np.pi * seed_r**2 or obj.mean() > 0.6:
            continue
        score = separability(img, obj)
        if score > best_score:
            best, best_score = obj, score
    if best is None:
        # Nothing sensible was isolated: fall back to a disc (or the box).
        best = np.zeros((h, w), bool)
        if box is not None:
            best[max(0, int(box[1])):min(h, int(box[3])), max(0, int(box[0])):min(w, int(box[2]))] = True
        for x, y in positives:
            cv2.circle(best.view(np.uint8), (int(x), int(y)), 4 * seed_r, 1, -1)
    return best


def small_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The (width, height) a `width` x `height` video is tracked at: its longer side scaled
    down to `max_side` (never up), at least 8 px."""
    scale = min(1.0, max_side / max(width, height))
    return max(8, int(round(width * scale))), max(8, int(round(height * scale)))


def prompts_on_frame(prompt: Prompt, k: int, sx: float, sy: float) -> tuple[
        list[tuple[float, float]], list[tuple[float, float]], tuple[float, float, float, float] | None]:
    """The positive clicks, negative clicks and box of `prompt` on frame `k` (coded
    coordinates), scaled by (`sx`, `sy`) to tracking pixels: what `initial_mask` takes."""
    pos = [(p.x * sx, p.y * sy) for p in prompt.positive_points if p.frame == k]
    neg = [(p.x * sx, p.y * sy) for p in prompt.points if p.label == 0 and p.frame == k]
    box = None
    if prompt.box is not None and prompt.box.frame == k:
        b = prompt.box
        box = (b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy)
    return pos, neg, box


@dataclass
class _State:
    ref: np.ndarray  # uint8 0/255 reference shape
    pose: np.ndarray  # 2x3: ref coords -> current frame
    vis: np.ndarray  # bool visible mask on the current frame
    velocity: np.ndarray = field(default_factory=lambda: np.array([[1, 0, 0], [0, 1, 0]], np.float64))
    lost: bool = False
    lost_for: int = 0
    ref_area: float = 0.0
    template: np.ndarray | None = None  # BGR patch of the object (for re-acquisition)
    template_mask: np.ndarray | None = None
    #: Long-term expected area: follows the scale of the estimated motion, adapts slowly
    #: to the segmented area. Shape updates that disagree with it are refused (a colour
    #: model that starts to bleed into similar background cannot grow the object).
    anchor_area: float = 0.0
    #: Frames since the object was last lost in this pass (a pass starts far from any loss).
    found_for: int = 1 << 30
    #: Visible area (pixels) on the previous frame.
    last_area: float = 0.0
    #: Share of LK's points the previous frame's motion fit explained (0: not measured).
    fit: float = 0.0


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine a∘b (apply b then a)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


_IDENT = np.array([[1, 0, 0], [0, 1, 0]], np.float64)


def _similarity(m: np.ndarray) -> np.ndarray:
    """The similarity (rotation, uniform scale, translation) closest to affine `m`."""
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    p, q = (a + d) / 2, (c - b) / 2
    return np.array([[p, -q, m[0, 2]], [q, p, m[1, 2]]], np.float64)


class ClassicTracker(VideoTracker):
    """The default CPU tracker (see the module docstring). Parameters are in small-frame px."""

    #: Re-acquisition: minimum normalised cross-correlation with the object's last look,
    #: and after how many lost frames the search covers the whole frame.
    REACQUIRE_NCC = 0.6
    #: ECC refinement is skipped when the best motion candidate already maps the object's
    #: pixels within this mean absolute grey-level difference.
    ECC_SKIP_COST = 3.0
    #: ECC is also skipped when the object is in full view and the flow fit explains at least
    #: this share of the tracked points and is the best candidate: measured on the quality
    #: clips, ECC then almost never lowers the cost (median: it raises it by 8 %, and its
    #: result is thrown away). A partly hidden object, and the first `ECC_STEADY_AFTER`
    #: frames after a loss (re-emergence), keep it.
    ECC_SKIP_INLIERS = 0.95
    ECC_STEADY_AFTER = 10
    #: ECC refinement's iteration cap and convergence threshold.
    ECC_ITERATIONS = 30
    ECC_EPS = 1e-3
    #: Sparse Lucas-Kanade: how many of the object's pixels it follows, pyramid levels,
    #: and its per-point iteration cap / convergence threshold (pixels). LK is the tracker's
    #: largest cost (~1.3 ms a frame at 150 points, ~0.7 at 80). 80 points kept the 90-frame
    #: quality clips leak-free at every size (session 7), but the 40-frame low-contrast clip at
    #: 320x180 of tests/unit/test_tracking.py then falls to a mean IoU of 0.81 (as in session 5).
    #: 10 iterations instead of 30 (session 10): LK ~15 % cheaper with the velocity's initial
    #: guess, the quality clips still leak-free at 320x180, 640x360 and 1280x720 with mean
    #: IoU within 0.013 of 30 iterations' (bench/README.md, "Session 10"); 100 points did leak.
    LK_POINTS = 150
    #: A steady object (in full view, found `ECC_STEADY_AFTER` frames ago or more, its last
    #: motion fit explaining >= `ECC_SKIP_INLIERS` of the points) is first tried with about
    #: half the points, and with all of them when those fit worse (session 15): the tracker
    #: ~25 % cheaper on the 12-s 640x360 bench clip, quality clips within 0.003 of mean IoU
    #: at 320x180, 640x360 and 1280x720 and still leak-free (bench/README.md, "Session 15").
    LK_POINTS_STEADY = 75
    #: LK's window: 9x9 is ~25 % cheaper but leaked (occlusion at 640x360, fast blur at 320x180).
    LK_MAX_LEVEL = 3
    LK_WINDOW = 11
    LK_ITERATIONS = 10
    LK_EPS = 0.01
    #: For this many frames after it is found again, the object's output mask is grown by
    #: its motion (see `_step`).
    EMERGE_FRAMES = 8
    #: After the object is lost (on either side of an occlusion: the passes run both ways),
    #: its predicted shape is masked where it holds object-coloured pixels (colour model
    #: probability above `HINT_PROB`, grown 4 px), for up to `HINT_COVER_AFTER_LOSS` frames
    #: (a slow object takes a while to disappear). For the first `COVER_AFTER_LOSS` frames
    #: the bar is `HINT_PROB_JUST_LOST`: a sliver thinner than a tracking pixel (seen at
    #: 1280x720 beside the occluder, 3 frames before re-acquisition) only tints a small pixel.
    #: Lower bars cover more frames where nothing shows (measured: 0.2 leaked that sliver,
    #: 0.1 did not; the whole predicted shape cost the occlusion clip 0.04 of mean IoU).
    #: With a weak colour model the whole predicted shape is masked for those first frames.
    COVER_AFTER_LOSS = 3
    HINT_COVER_AFTER_LOSS = 8
    HINT_PROB = 0.35
    HINT_PROB_JUST_LOST = 0.1
    FULL_SEARCH_AFTER = 30
    #: Small frames are kept raw while they fit in this many bytes, else JPEG-compressed.
    RAW_CACHE_BYTES = 192 * 1024 * 1024

    def __init__(self, max_side: int = 320, lost_ratio: float = 0.2, found_ratio: float = 0.5,
                 jpeg_quality: int = 92, camera_motion: bool = True, flow: str = "lk") -> None:
        """`camera_motion`: also estimate the camera's motion (needed by erase only).
        `flow`: "lk" (sparse pyramidal Lucas-Kanade, default: as accurate here, ~5x cheaper)
        or "dis" (DIS dense optical flow) for the object's motion candidates."""
        self.flow = flow
        self.camera_motion = camera_motion
        self.max_side = max_side
        self.lost_ratio = lost_ratio
        self.found_ratio = found_ratio
        self.jpeg_quality = jpeg_quality
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    runs_in_child_process = True

    def __getstate__(self) -> dict:
        """Everything but the DIS object (it does not pickle) and the per-track state."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_dis", "_frames", "_arena")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    # -- small frames ---------------------------------------------------------------------
    def _small_size(self, info: VideoInfo) -> tuple[int, int]:
        return small_size(info.width, info.height, self.max_side)

    def _load(self, i: int) -> np.ndarray:
        return self._frames.load(i)

    def arena_bytes(self, info: VideoInfo) -> int:
        """How much of a `framearena` memory file `track(..., arena=)` can use for `info`:
        its small frames (those kept raw: `_SmallFrames`) and a mask for each."""
        sw, sh = self._small_size(info)
        return min(info.frame_count * sw * sh * 4, self.RAW_CACHE_BYTES)

    def _kept(self, mask: np.ndarray) -> np.ndarray:
        """A frame's mask to keep for the whole pass: copied into the arena while it has room."""
        arena = getattr(self, "_arena", None)
        return arena.keep(mask) if arena is not None else mask

    # -- the main entry point ---------------------------------------------------------------
    def track(self, in_path, info, prompt, *, progress=None, should_cancel=None, feed=None,
              tap: Callable[[DecodedFrame], None] | None = None, arena: Arena | None = None) -> MaskTrack:
        """See `VideoTracker.track`. `tap(frame)`: called with every frame as it is decoded,
        before it is tracked, carrying its full-size planes (`DecodedFrame.planes`, None when
        the frame has none): `trackchild` hands them to the renderer (`framering`).
        `arena`: memory to keep the small frames in while it has room (`framearena`)."""
        sw, sh = self._small_size(info)
        with VideoReader(in_path, info) as reader:
            # One decoding thread: the tracker works one frame at a time anyway, and FFmpeg's
            # frame threads cost ~20 % more CPU for ~10 % less decode time (measured at
            # 640x360), CPU the renderer beside it needs. Decoded pictures are the same.
            # (Also when the frames are shared with the renderer: 1, 2 or automatic threads
            # gave the same speed within the noise, session 12.)
            reader.video_stream.codec_context.thread_count = 1
            decoded = reader.video_frames(size=(sw, sh), keep_planes=tap is not None)
            if tap is not None:
                decoded = _tapped(decoded, tap)
            try:
                self._arena = arena
                return self._track(decoded, info, prompt, sw, sh, progress, should_cancel, feed)
            finally:
                self._frames = self._arena = None  # drop the frames

    def _track(self, decoded, info, prompt, sw, sh, progress, should_cancel, feed) -> MaskTrack:
        sx, sy = sw / info.width, sh / info.height
        # Per-frame results, one entry per frame decoded so far (frames are decoded as the
        # forward pass reaches them, so the count is known only at the end).
        masks: list[np.ndarray | None] = []
        conf: list[float] = []
        lost: list[bool] = []
        # Final masks for `feed`: after the forward and backward passes a frame's mask no
        # longer changes unless the frame is lost (the re-emergence passes below only
        # rewrite lost frames), so the prefix of frames passed and not lost is final.
        passed: list[bool] = []

        def grow(count: int) -> None:
            extra = count - len(masks)
            masks.extend([None] * extra)
            conf.extend([0.0] * extra)
            lost.extend([False] * extra)
            passed.extend([False] * extra)

        frames = self._frames = _SmallFrames(decoded, info.frame_count, self.RAW_CACHE_BYTES, self.jpeg_quality,
                                             should_cancel, grow, None if feed is None else feed.start, self._arena)
        if not frames.have(0):
            raise EmptyVideo(f"No frame of {info.path.name!r} could be decoded.")
        # The prompted frame (the last one when the file holds fewer frames than it said).
        k = prompt.frame if frames.have(prompt.frame) else len(frames) - 1
        pos, neg, box = prompts_on_frame(prompt, k, sx, sy)
        if not pos and box is None:
            raise InvalidPrompt("Click on the object (a positive point) or draw a box around it.")
        self._neg_by_frame: dict[int, list[tuple[float, float]]] = {}
        for p in prompt.points:
            if p.label == 0 and p.frame != k:
                self._neg_by_frame.setdefault(p.frame, []).append((p.x * sx, p.y * sy))

        img_k = self._load(k)
        obj = initial_mask(img_k, pos, neg, box)
        masks[k], conf[k], passed[k] = obj, 1.0, True
        self._init_models(img_k, obj)
        state0 = self._new_state(img_k, obj)
        done = [1]
        final = [0]

        # Camera motion (erase): frame i's motion needs the final masks of frames i-1 and i
        # (the object is left out of the background's flow), so it is computed as frames
        # become final and published with them; the values do not depend on when.
        full_scale = np.diag([1 / sx, 1 / sy, 1.0])
        motion_full: list[np.ndarray] = []
        camera = _CameraMotion(self._load) if self.camera_motion else None

        def motions_upto(r: int) -> list[np.ndarray] | None:
            if camera is None:
                return None
            while len(motion_full) < r:
                m = camera.motion(len(motion_full), masks)
                motion_full.append((full_scale @ m @ np.linalg.inv(full_scale)).astype(np.float32))
            return motion_full

        def publish() -> None:
            r = final[0]
            while r < len(passed) and passed[r] and not lost[r]:
                r += 1
            if r > final[0]:
                final[0] = r
                feed.publish(r, masks, motions_upto(r), frames.pts)

        def tick(i: int) -> None:
            done[0] += 1
            total = 2 * max(info.frame_count, len(frames))  # both passes; re-emergence is extra
            _check_cancel(should_cancel, done[0], total // 2)
            if progress is not None and done[0] % 10 == 0:
                progress(STAGE_TRACKING, min(done[0], total - 1), total)
            if feed is not None and not passed[i]:
                passed[i] = True
                publish()

        # Backward, then forward from the prompted frame (the two passes are independent:
        # each starts from the prompted frame's mask and fresh models). Backward first, so
        # that the forward pass, which decodes frames as it reaches them, publishes each
        # frame's mask as soon as it is tracked and rendering can follow at once.
        for direction in (-1, 1):
            self._init_models(img_k, obj)
            self._run(k, direction, self._copy_state(state0), masks, conf, lost, tick, overwrite=True)
            if direction == -1:
                backward_models = self._models()
                if feed is not None:
                    publish()  # frames 0..k, when nothing there was lost
        n = frames.decode_all()
        # Re-emergences: where a lost run ends, also track back into it, with the colour
        # models the backward pass ended with (it used to run last; the quality figures in
        # bench/README.md were measured so).
        self._set_models(backward_models)
        for direction in (1, -1):
            for i in range(n):
                j = i - direction
                if 0 <= j < n and lost[j] and not lost[i] and masks[i] is not None:
                    # i is found right after (in `direction`) a lost run: go back into it.
                    st = self._new_state(self._load(i), masks[i])
                    self._run(i, -direction, st, masks, conf, lost, tick, overwrite=False)
        if feed is not None:
            feed.publish(n, masks, motions_upto(n), frames.pts)  # every mask is final now
        if camera is not None:
            motion = np.stack(motions_upto(n))
        else:
            motion = np.repeat(np.eye(3, dtype=np.float32)[None], n, axis=0)
        pngs = [encode_mask(mask_u8(m)) for m in masks]
        if progress is not None:
            progress(STAGE_TRACKING, 2 * n, 2 * n)
        return MaskTrack(info.width, info.height, sw, sh, pngs, conf, lost, frames.pts, motion,
                         Fraction(info.time_base), meta={"tracker": "ClassicTracker", "prompt_frame": k,
                                                 "camera_motion": self.camera_motion})

    # -- models ---------------------------------------------------------------------------
    def _ring(self, obj: np.ndarray) -> np.ndarray:
        """The background ring around `obj` (bool) whose colours the background model learns:
        `obj` grown by ``0.6 sqrt(area)`` (6 to 60 px; `effects.grown`), less `obj`."""
        area = max(1.0, float(np.count_nonzero(obj)))
        r = int(np.clip(0.6 * np.sqrt(area), 6, 60))
        return grown(obj, r) & ~obj

    def _init_models(self, img: np.ndarray, obj: np.ndarray) -> None:
        idx = _colour_index(img)
        self._hf = _hist(idx, obj)
        self._hb = _hist(idx, self._ring(obj)) * 0.7 + _hist(idx, ~obj) * 0.3
        self._update_lut()
        sep = self._separability(self._prob(img), obj)
        self._alpha = float(np.clip((sep - 0.15) / 0.5, 0.0, 0.85))

    def _models(self) -> tuple:
        """A copy of the colour models (see `_set_models`)."""
        return self._hf.copy(), self._hb.copy(), self._alpha, self._lut.copy()

    def _set_models(self, models: tuple) -> None:
        self._hf, self._hb, self._alpha, self._lut = models

    def _update_lut(self) -> None:
        eps = 1e-4
        self._lut = ((self._hf + eps) / (self._hf + self._hb + 2 * eps)).astype(np.float32)

    def _prob(self, img: np.ndarray) -> np.ndarray:
        p = self._lut[_colour_index(img)]
        return cv2.GaussianBlur(p, (5, 5), 0)

    def _separability(self, p: np.ndarray, obj: np.ndarray) -> float:
        ring = self._ring(obj)
        if not obj.any() or not ring.any():
            return 0.0
        return float(p[obj].mean() - p[ring].mean())

    def _new_state(self, img: np.ndarray, obj: np.ndarray) -> _State:
        ref = mask_u8(obj)
        st = _State(ref=ref, pose=_IDENT.copy(), vis=obj.copy(), ref_area=float(obj.sum()),
                    anchor_area=float(obj.sum()))
        self._set_template(st, img, obj)
        return st

    def _set_template(self, st: _State, img: np.ndarray, obj: np.ndarray) -> None:
        x, y, w, h = cv2.boundingRect(obj.astype(np.uint8))
        if w >= 4 and h >= 4:
            st.template = img[y:y + h, x:x + w].copy()
            st.template_mask = obj[y:y + h, x:x + w].copy()

    @staticmethod
    def _copy_state(st: _State) -> _State:
        return replace(st, ref=st.ref.copy(), pose=st.pose.copy(), vis=st.vis.copy(), velocity=st.velocity.copy())

    # -- one direction ----------------------------------------------------------------------
    def _run(self, start: int, direction: int, st: _State, masks, conf, lost, tick, overwrite: bool) -> None:
        prev_img = self._load(start)
        i = start + direction
        while i >= 0 and self._frames.have(i):
            if not overwrite and not lost[i]:
                break
            img = self._load(i)
            vis, c, is_lost = self._step(st, prev_img, img, i)
            if overwrite or not is_lost:
                masks[i], conf[i], lost[i] = self._kept(vis), c, is_lost
            elif not overwrite and is_lost:
                # Keep whatever the earlier pass had, but add what we see now (never less),
                # for the few frames where the predicted shape is still covered.
                masks[i] = vis if masks[i] is None else masks[i] | vis
                if st.lost_for >= self.HINT_COVER_AFTER_LOSS:
                    break
            tick(i)
            prev_img = img
            i += direction

    def _step(self, st: _State, prev_img: np.ndarray, img: np.ndarray, i: int) -> tuple[np.ndarray, float, bool]:
        h, w = img.shape[:2]
        delta = None
        shown = float(np.count_nonzero(st.vis))  # visible area on the previous frame
        if not st.lost and shown >= 12:
            delta = self._flow_delta(st, prev_img, img)
        if delta is not None and shown < 0.8 * st.anchor_area:
            # Partly hidden: the visible part shrinks or grows as the occluder passes, which a
            # similarity fit reads as a change of scale. Keep only the translation.
            delta = delta.copy()
            delta[:, :2] = np.eye(2)
        if delta is None:
            # No measurement (lost, or too little visible): coast on the last velocity,
            # translation only, for a while.
            delta = _IDENT.copy()
            if st.lost_for < 15:
                delta[:, 2] = st.velocity[:, 2]
        else:
            if not st.lost and np.count_nonzero(st.vis) >= 0.8 * st.anchor_area:
                # Learn the velocity only while the object is (nearly) fully visible: the
                # motion of a half-hidden object is easily confused with its occluder's.
                st.velocity = 0.5 * st.velocity + 0.5 * delta
        st.pose = _compose(delta, st.pose)
        st.anchor_area *= float(abs(np.linalg.det(delta[:, :2])))
        vis, ratio, cover = self._segment(st, img)
        if 0.0 < ratio < 0.9 and self._alpha >= 0.3:
            # The motion estimate may be off (fast motion, blur): slide the shape to where
            # the colour model says the object is, keep it if more of the object shows.
            moved = self._colour_shift(st, img)
            if moved is not None:
                old = st.pose
                st.pose = moved
                vis2, ratio2, cover2 = self._segment(st, img)
                if ratio2 > ratio + 0.05:
                    vis, ratio, cover = vis2, ratio2, cover2
                    if ratio2 >= 0.8 and not st.lost:
                        step = _compose(moved, np.linalg.inv(np.vstack([old, [0, 0, 1]]))[:2])
                        st.velocity = 0.5 * st.velocity + 0.5 * _compose(step, delta)
                else:
                    st.pose = old
        if ratio < self.found_ratio and (st.lost or ratio < self.lost_ratio):
            found = self._reacquire(st, img)
            if found is not None:
                st.pose = found
                st.anchor_area = st.ref_area * float(abs(np.linalg.det(found[:, :2])))
                vis, ratio, cover = self._segment(st, img)
        negs = self._neg_by_frame.get(i)
        removed = None
        if negs:
            removed = np.zeros((h, w), bool)
            for x, y in negs:
                removed |= _largest_touching(vis | (cover if cover is not None else False), self._disc(h, w, x, y, 2))
            vis &= ~removed
        is_lost = ratio < (self.found_ratio if st.lost else self.lost_ratio)
        st.lost = is_lost
        st.lost_for = st.lost_for + 1 if is_lost else 0
        st.found_for = 0 if is_lost else st.found_for + 1
        c = float(np.clip(ratio, 0.0, 1.0))
        if not is_lost:
            st.vis = vis
            area = float(np.count_nonzero(vis))
            anchored = 0.85 * st.anchor_area <= area <= 1.15 * st.anchor_area
            if 0.85 <= ratio <= 1.25 and area > 0 and anchored:
                # Fully visible: adopt the current shape as the reference (non-rigid change,
                # scale drift) and refresh the appearance models a little.
                st.ref = mask_u8(vis)
                st.pose = _IDENT.copy()
                st.ref_area = area
                st.anchor_area = 0.9 * st.anchor_area + 0.1 * area
                self._refresh_models(img, vis)
                self._set_template(st, img, vis)
            elif 0.7 <= ratio <= 1.4 and area > 0:
                # Shape refused: still let the position follow what is seen (half-way).
                mr = cv2.moments(st.ref, binaryImage=True)
                mv = cv2.moments(vis.astype(np.uint8), binaryImage=True)
                if mr["m00"] > 0 and mv["m00"] > 0:
                    c_ref = np.array([mr["m10"] / mr["m00"], mr["m01"] / mr["m00"]])
                    c_prior = st.pose[:, :2] @ c_ref + st.pose[:, 2]
                    c_vis = np.array([mv["m10"] / mv["m00"], mv["m01"] / mv["m00"]])
                    st.pose[:, 2] += 0.5 * (c_vis - c_prior)
        else:
            st.vis = vis
        if cover is not None:
            vis = vis | cover
        shown = float(np.count_nonzero(st.vis))
        emerging = st.found_for <= self.EMERGE_FRAMES and shown > 1.03 * st.last_area
        st.last_area = shown
        if not is_lost and emerging:
            # Re-emerging (found again a few frames ago, and more of it shows every frame):
            # where its still hidden part will show next, and whether the shape adopted
            # meanwhile is whole, is uncertain, so the output mask is grown by the distance
            # the object moves in a frame, plus one pixel (privacy first: a few frames
            # blurred wider).
            speed = float(np.hypot(st.velocity[0, 2], st.velocity[1, 2]))
            r = int(np.ceil(speed)) + 1
            vis = cv2.dilate(vis.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        if is_lost and st.lost_for <= self.HINT_COVER_AFTER_LOSS:
            # Just lost (hidden, or leaving the picture): a sliver may still show. Cover the
            # predicted shape near object-coloured pixels in it, with a lower bar for the first
            # frames; with a weak colour model, all of it for the first frames only.
            predicted = cv2.warpAffine(st.ref, st.pose, (w, h), flags=cv2.INTER_NEAREST) > 127
            if self._alpha < 0.3:
                if st.lost_for <= self.COVER_AFTER_LOSS:
                    vis = vis | predicted
            else:
                x, y, bw, bh = cv2.boundingRect(predicted.astype(np.uint8))
                if bw > 0 and bh > 0:
                    near = self.HINT_PROB_JUST_LOST if st.lost_for <= self.COVER_AFTER_LOSS else self.HINT_PROB
                    hint = (self._prob(img[y:y + bh, x:x + bw]) > near) & predicted[y:y + bh, x:x + bw]
                    hint = cv2.dilate(hint.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
                    vis[y:y + bh, x:x + bw] |= hint & predicted[y:y + bh, x:x + bw]
        if removed is not None:
            vis &= ~removed
        return vis, c, is_lost

    @staticmethod
    def _disc(h: int, w: int, x: float, y: float, r: int) -> np.ndarray:
        d = np.zeros((h, w), np.uint8)
        cv2.circle(d, (int(x), int(y)), r, 1, -1)
        return d > 0

    def _refresh_models(self, img: np.ndarray, obj: np.ndarray) -> None:
        # On the object's bounding box grown by the ring's width only.
        h, w = obj.shape
        x, y, bw, bh = cv2.boundingRect(obj.astype(np.uint8))
        r = int(np.clip(0.6 * np.sqrt(max(1.0, float(np.count_nonzero(obj)))), 6, 60)) + 1
        sl = (slice(max(0, y - r), min(h, y + bh + r)), slice(max(0, x - r), min(w, x + bw + r)))
        sub = obj[sl]
        idx = _colour_index(img[sl])
        self._hf = 0.9 * self._hf + 0.1 * _hist(idx, sub)
        self._hb = 0.7 * self._hb + 0.3 * _hist(idx, self._ring(sub))
        self._update_lut()

    def _flow_delta(self, st: _State, prev_img: np.ndarray, img: np.ndarray) -> np.ndarray | None:
        """Motion of the object from the previous frame: 2x3 similarity/affine, or None.

        Candidates (DIS flow on the visible pixels fitted by RANSAC, a template match of the
        object's patch, the last velocity, no motion) are scored by how well they map the
        object's pixels onto the new frame; the best is refined by ECC alignment.
        """
        h, w = img.shape[:2]
        fit_before, st.fit = st.fit, 0.0
        x, y, bw, bh = cv2.boundingRect(st.vis.astype(np.uint8))
        speed = float(np.hypot(st.velocity[0, 2], st.velocity[1, 2]))
        pad = int(max(16, 0.5 * max(bw, bh), 2.5 * speed + 8))
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        g0 = cv2.cvtColor(prev_img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        g1 = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        if min(g0.shape) < 16:
            return None
        vis = st.vis[y0:y1, x0:x1]
        ys, xs = np.nonzero(vis)
        if xs.size > 400:
            sel = np.linspace(0, xs.size - 1, 400).astype(int)
            xs, ys = xs[sel], ys[sel]
        src = np.stack([xs, ys], axis=1).astype(np.float32)  # ROI coordinates
        ref_vals = g0[ys, xs].astype(np.float32)

        # The ROI's offset and its inverse (a translation: exact, no matrix inversion).
        t0 = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
        t0_inv = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)

        def to_roi(m: np.ndarray) -> np.ndarray:
            return (t0_inv @ np.vstack([m, [0, 0, 1]]) @ t0)[:2]

        def to_frame(m: np.ndarray) -> np.ndarray:
            return (t0 @ np.vstack([m, [0, 0, 1]]) @ t0_inv)[:2]

        def cost(m_roi: np.ndarray) -> float:
            d = src @ m_roi[:, :2].T.astype(np.float32) + m_roi[:, 2].astype(np.float32)
            vals = cv2.remap(g1, d[:, 0].reshape(-1, 1), d[:, 1].reshape(-1, 1), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            inside = (d[:, 0] >= 0) & (d[:, 1] >= 0) & (d[:, 0] <= g1.shape[1] - 1) & (d[:, 1] <= g1.shape[0] - 1)
            if inside.mean() < 0.5:
                return 1e9
            return float(np.mean(np.abs(vals.ravel()[inside].astype(np.float32) - ref_vals[inside])))

        candidates = [to_roi(_IDENT), to_roi(st.velocity)]
        # In full view and found for a while: with a motion fit that explains nearly all the
        # points, LK's fewer points and no ECC refinement do (see the class constants).
        settled = st.found_for >= self.ECC_STEADY_AFTER and np.count_nonzero(st.vis) >= 0.9 * st.anchor_area
        if self.flow == "dis":
            flow = self._dis.calc(g0, g1, None)
            m, fit = self._fit(src, src + flow[ys, xs])
        else:  # sparse pyramidal Lucas-Kanade on up to LK_POINTS of the object's pixels
            v = to_roi(st.velocity)
            # A steady object (settled, its last motion explaining nearly all its points) is
            # first tried with fewer points; when they do not fit as well, with all of them.
            steady = settled and fit_before >= self.ECC_SKIP_INLIERS
            for points in ((self.LK_POINTS_STEADY, self.LK_POINTS) if steady else (self.LK_POINTS,)):
                m, fit = self._fit(*self._lk(g0, g1, src, v, points))
                if fit >= self.ECC_SKIP_INLIERS:
                    break
        st.fit = fit
        m_cost = None  # cost(m), once computed
        if m is not None:
            if fit >= 0.8 and (m_cost := cost(m)) <= self.ECC_SKIP_COST:
                out = _similarity(to_frame(m))  # the flow fits and maps the pixels: done
                scale = float(np.sqrt(abs(np.linalg.det(out[:, :2]))))
                if 0.85 < scale < 1.18:
                    return out
            candidates.append(m)
        # Template match of the object's patch around its expected place.
        tx0, ty0 = x - x0, y - y0
        tpl = g0[ty0:ty0 + bh, tx0:tx0 + bw]
        if tpl.shape[0] >= 4 and tpl.shape[1] >= 4 and tpl.shape[0] < g1.shape[0] and tpl.shape[1] < g1.shape[1]:
            res = cv2.matchTemplate(g1, tpl, cv2.TM_SQDIFF_NORMED)
            _, _, loc, _ = cv2.minMaxLoc(res)
            candidates.append(np.array([[1, 0, loc[0] - tx0], [0, 1, loc[1] - ty0]], np.float64))
        costs = [m_cost if c is m and m_cost is not None else cost(c) for c in candidates]
        best = candidates[int(np.argmin(costs))]
        best_cost = min(costs)
        try:
            flow_fits = settled and fit >= self.ECC_SKIP_INLIERS and best is m
            if best_cost <= self.ECC_SKIP_COST or flow_fits:
                raise cv2.error("good enough")  # the pixels already match: skip refinement
            warp = best.astype(np.float32).copy()
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, self.ECC_ITERATIONS, self.ECC_EPS)
            _, warp = cv2.findTransformECC(g0, g1, warp, cv2.MOTION_AFFINE, criteria,
                                           vis.astype(np.uint8) * 255, 3)
            c = cost(warp.astype(np.float64))
            if c < best_cost:
                best, best_cost = warp.astype(np.float64), c
        except cv2.error:
            pass
        out = _similarity(to_frame(best))
        scale = float(np.sqrt(abs(np.linalg.det(out[:, :2]))))
        if not 0.85 < scale < 1.18:
            return None
        return out

    def _lk(self, g0: np.ndarray, g1: np.ndarray, src: np.ndarray, velocity: np.ndarray,
            points: int) -> tuple[np.ndarray, np.ndarray]:
        """Sparse pyramidal Lucas-Kanade from `g0` to `g1` on up to `points` of `src`
        (evenly spread), starting from where `velocity` moves them: (found sources, their
        destinations)."""
        step = max(1, len(src) // points)
        fsrc = np.ascontiguousarray(src[::step], np.float32).reshape(-1, 1, 2)
        guess = np.ascontiguousarray(fsrc.reshape(-1, 2) @ velocity[:, :2].T.astype(np.float32)
                                     + velocity[:, 2].astype(np.float32), np.float32).reshape(-1, 1, 2)
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(g0, g1, fsrc, guess, winSize=(self.LK_WINDOW, self.LK_WINDOW), maxLevel=self.LK_MAX_LEVEL,
                                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
                                                        self.LK_ITERATIONS, self.LK_EPS),
                                              flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        good = ok.ravel() == 1
        return fsrc.reshape(-1, 2)[good], nxt.reshape(-1, 2)[good]

    @staticmethod
    def _fit(fsrc: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray | None, float]:
        """A similarity fitted by RANSAC to the flow (`fsrc` -> `dst`) and the share of the
        points it explains; (None, 0) when it explains too few."""
        if len(fsrc) < 6:
            return None, 0.0
        m, inliers = cv2.estimateAffinePartial2D(fsrc, dst, method=cv2.RANSAC, ransacReprojThreshold=1.5,
                                                 maxIters=200, confidence=0.98, refineIters=5)
        if m is None or inliers is None or inliers.sum() < max(6, 0.3 * len(fsrc)):
            return None, 0.0
        return m.astype(np.float64), float(inliers.mean())

    def _segment(self, st: _State, img: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """Visible mask on `img` given the pose: the shape prior re-segmented by colour.

        Returns (visible mask, visible area / expected area, extra cover or None); works on
        the prior's bounding box (plus the band) only. The extra cover is the predicted
        shape next to the visible part when the object is partly hidden (output only).
        """
        h, w = img.shape[:2]
        vis = np.zeros((h, w), bool)
        # Where the warped reference lands: transform its bbox corners.
        rx, ry, rw, rh = cv2.boundingRect(st.ref)
        if rw == 0 or rh == 0:
            return vis, 0.0, None
        corners = np.array([[rx, ry], [rx + rw, ry], [rx, ry + rh], [rx + rw, ry + rh]], np.float64)
        mapped = corners @ st.pose[:, :2].T + st.pose[:, 2]
        scale = float(np.sqrt(abs(np.linalg.det(st.pose[:, :2]))))
        band = int(np.clip(0.12 * np.sqrt(max(1.0, st.ref_area) * scale * scale), 2, 12))
        pad = 2 * band + 4
        x0 = int(max(0, np.floor(mapped[:, 0].min()) - pad))
        y0 = int(max(0, np.floor(mapped[:, 1].min()) - pad))
        x1 = int(min(w, np.ceil(mapped[:, 0].max()) + pad))
        y1 = int(min(h, np.ceil(mapped[:, 1].max()) + pad))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return vis, 0.0, None
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        pose = (shift @ np.vstack([st.pose, [0, 0, 1]]))[:2]
        prior = cv2.warpAffine(st.ref, pose, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        core = prior > 0.5
        expected = float(np.count_nonzero(core))
        if expected < 1:
            return vis, 0.0, None
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
        allowed = cv2.dilate(core.astype(np.uint8), k) > 0
        soft_prior = cv2.GaussianBlur(prior, (2 * band + 1, 2 * band + 1), 0)
        p = self._prob(img[y0:y1, x0:x1])
        a = self._alpha
        score = a * p + (1 - a) * soft_prior
        roi = (score > 0.5) & allowed
        roi = cv2.morphologyEx(roi.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
        opened = cv2.morphologyEx(roi.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
        if np.count_nonzero(opened) >= 0.5 * np.count_nonzero(roi):  # keep thin slivers (an object almost hidden)
            roi = opened
        roi = _largest_touching(roi, core)
        roi = _fill_holes(roi) & allowed
        ratio = float(np.count_nonzero(roi)) / max(expected, 1.0)
        vis[y0:y1, x0:x1] = roi
        cover = None
        if 0.0 < ratio < 0.9:
            # Partly hidden (or partly missed): the output also covers the predicted shape
            # next to what is seen - the edge where it emerges or hides is where a blur
            # would leak. (Output only: the tracker's state keeps the visible part.)
            reach = max(2, band // 2)
            kc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
            near = cv2.dilate(roi.astype(np.uint8), kc) > 0
            cover = np.zeros((h, w), bool)
            cover[y0:y1, x0:x1] = core & near
        return vis, ratio, cover

    def _colour_shift(self, st: _State, img: np.ndarray) -> np.ndarray | None:
        """The pose translated to where the shape covers the most object-coloured pixels."""
        h, w = img.shape[:2]
        prior = cv2.warpAffine(st.ref, st.pose, (w, h), flags=cv2.INTER_LINEAR)
        x, y, bw, bh = cv2.boundingRect((prior > 127).astype(np.uint8))
        if bw < 3 or bh < 3:
            return None
        speed = float(np.hypot(st.velocity[0, 2], st.velocity[1, 2]))
        pad = int(max(12, 1.5 * speed + 0.5 * max(bw, bh)))
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        shape = prior[y:y + bh, x:x + bw].astype(np.float32) / 255.0
        window = self._prob(img[y0:y1, x0:x1]) - 0.5
        if window.shape[0] <= bh or window.shape[1] <= bw:
            return None
        res = cv2.matchTemplate(window, shape, cv2.TM_CCORR)
        _, _, _, loc = cv2.minMaxLoc(res)
        dx, dy = loc[0] + x0 - x, loc[1] + y0 - y
        moved = st.pose.copy()
        moved[0, 2] += dx
        moved[1, 2] += dy
        return moved

    def _reacquire(self, st: _State, img: np.ndarray) -> np.ndarray | None:
        """Search for the object's appearance around where it should be; a new pose, or None.

        The window grows with the time lost (the whole frame after `FULL_SEARCH_AFTER`
        lost frames). A match must look like the object (normalised cross-correlation of
        its last fully visible patch >= `REACQUIRE_NCC`, at 3 scales) and have its colours
        (mean object probability under its mask >= 0.5); nearer the prediction wins ties.
        """
        if st.template is None:
            return None
        h, w = img.shape[:2]
        th, tw = st.template.shape[:2]
        mr = cv2.moments(st.ref, binaryImage=True)
        if mr["m00"] == 0:
            return None
        c_ref = np.array([mr["m10"] / mr["m00"], mr["m01"] / mr["m00"]])
        pred = st.pose[:, :2] @ c_ref + st.pose[:, 2]
        speed = float(np.hypot(st.velocity[0, 2], st.velocity[1, 2]))
        if st.lost_for > self.FULL_SEARCH_AFTER:
            x0, y0, x1, y1 = 0, 0, w, h
            radius = float(max(w, h))
        else:
            radius = max(3.0 * max(tw, th), 24.0) + 3.0 * speed * st.lost_for
            x0, y0 = int(max(0, pred[0] - radius - tw)), int(max(0, pred[1] - radius - th))
            x1, y1 = int(min(w, pred[0] + radius + tw)), int(min(h, pred[1] + radius + th))
        window = img[y0:y1, x0:x1]
        best = None
        for s in (0.85, 1.0, 1.18):
            tpl = cv2.resize(st.template, (max(4, int(tw * s)), max(4, int(th * s))))
            tm = cv2.resize(st.template_mask.astype(np.uint8), (tpl.shape[1], tpl.shape[0]),
                            interpolation=cv2.INTER_NEAREST) > 0
            if tpl.shape[0] >= window.shape[0] or tpl.shape[1] >= window.shape[1]:
                continue
            res = cv2.matchTemplate(window, tpl, cv2.TM_CCOEFF_NORMED)
            ys, xs = np.mgrid[0:res.shape[0], 0:res.shape[1]]
            centre_x = xs + x0 + tpl.shape[1] / 2
            centre_y = ys + y0 + tpl.shape[0] / 2
            dist = np.hypot(centre_x - pred[0], centre_y - pred[1]) / max(radius, 1.0)
            score = res - 0.1 * dist
            _, val, _, loc = cv2.minMaxLoc(score)
            ncc = float(res[loc[1], loc[0]])
            if ncc < self.REACQUIRE_NCC:
                continue
            lx, ly = loc[0] + x0, loc[1] + y0
            patch = img[ly:ly + tpl.shape[0], lx:lx + tpl.shape[1]]
            colour = float(self._prob(patch)[tm].mean()) if tm.any() else 0.0
            if colour < 0.5 and self._alpha >= 0.3:
                continue
            if best is None or val > best[0]:
                best = (val, (lx, ly), s)
        if best is None:
            return None
        _, (lx, ly), s = best
        # The template is the reference shape's bounding box (both were set together).
        rx, ry, _, _ = cv2.boundingRect(st.ref)
        pose = np.array([[s, 0, lx - s * rx], [0, s, ly - s * ry]], np.float64)
        st.velocity = _IDENT.copy()
        return pose


class _SmallFrames:
    """The video's frames at tracking size, decoded when tracking first asks for them and
    kept for the whole pass (passes go back and forth): raw while they fit in half of
    `raw_bytes` (all of them when the expected count fits), else JPEG-compressed for the
    passes that come back to them, the last few frames decoded or read back kept as they
    are (`CACHED`): the pass that decodes a frame tracks the frame itself, not its copy."""

    #: Decoded frames kept beside the JPEG store: the newest ones, and the last ones read back.
    CACHED = 9

    def __init__(self, decoded: Iterator[DecodedFrame], expected: int, raw_bytes: int, jpeg_quality: int,
                 should_cancel: Callable[[], bool] | None, on_decoded: Callable[[int], None],
                 on_end: Callable[[list[int | None]], None] | None, arena: Arena | None = None) -> None:
        """`decoded`: the reader's small frames; `expected`: the probed frame count;
        `on_decoded(count)`: called with the new count after frames were decoded (the
        tracker grows its per-frame lists); `on_end(pts)`: called once the last frame is
        decoded, with every frame's pts; `arena`: where raw frames are kept while it has
        room (memory pages a previous job used, `framearena`), else new arrays."""
        self._arena = arena
        self._decoded: Iterator[DecodedFrame] | None = decoded
        self._expected, self._raw_bytes, self._quality = expected, raw_bytes, jpeg_quality
        self._should_cancel, self._on_decoded, self._on_end = should_cancel, on_decoded, on_end
        self._store: list[np.ndarray | bytes] = []
        self._cache: dict[int, np.ndarray] = {}
        self.pts: list[int | None] = []

    def __len__(self) -> int:
        """Frames decoded so far (all of them once `have` answered False past the end)."""
        return len(self._store)

    def have(self, i: int) -> bool:
        """Whether frame `i` exists, decoding up to it first."""
        start = len(self._store)
        while len(self._store) <= i and self._decoded is not None:
            item = next(self._decoded, None)
            if item is None:
                self._decoded = None
                if self._on_end is not None:
                    self._on_end(list(self.pts))
                break
            _check_cancel(self._should_cancel, item.index, self._expected)
            small = item.image
            frame_bytes = small.size
            if (self._expected * frame_bytes <= self._raw_bytes
                    or len(self._store) * frame_bytes < self._raw_bytes // 2):
                if self._arena is not None:
                    small = self._arena.keep(small)  # (a copy: `small`'s pages are reused at once)
                self._store.append(small)  # a new array (`video_io.scaled_bgr`), not the decoder's
            else:
                ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
                self._store.append(buf.tobytes())
                # The pass reads this frame next (and the one before it): it gets the frame as
                # decoded, not its JPEG copy. The copy is for passes that come back later.
                self._remember(len(self._store) - 1, small)
            self.pts.append(item.pts)
        if len(self._store) > start:
            self._on_decoded(len(self._store))
        return 0 <= i < len(self._store)

    def decode_all(self) -> int:
        """Decode whatever is left; the frame count."""
        while self.have(len(self._store)):
            pass
        return len(self._store)

    def load(self, i: int) -> np.ndarray:
        """Small BGR frame `i` (decoded already: see `have`)."""
        data = self._store[i]
        if isinstance(data, np.ndarray):
            return data
        img = self._cache.get(i)
        if img is None:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            self._remember(i, img)
        return img

    def _remember(self, i: int, img: np.ndarray) -> None:
        """Keep frame `i` decoded among the last `CACHED` frames remembered."""
        if len(self._cache) >= self.CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[i] = img


class _CameraMotion:
    """The camera's motion between consecutive small frames (for erase): a homography fitted
    by RANSAC to the sparse LK flow of a grid of background points, the object (both
    frames' masks, dilated) left out. Frames are asked for in order, 0, 1, 2, ..."""

    #: Grid spacing of the sample points (small-frame px), and LK's window, pyramid levels,
    #: iteration cap and convergence threshold (px). An 11x11 window and 10 iterations
    #: instead of 15x15 and 30 halved the cost (2.3 -> 1.2 ms a frame at 640x360) with the
    #: same accuracy against the synthetic pan's true motion: mean error 0.031 px (0.030
    #: before) at 640x360 and 0.065 (0.076) at 1280x720 (tests/unit/test_tracking.py checks it).
    GRID_STEP = 12
    WINDOW = 11
    LEVELS = 3
    ITERATIONS = 10
    EPS = 0.01

    def __init__(self, load: Callable[[int], np.ndarray]) -> None:
        self.load = load
        self.prev: np.ndarray | None = None
        self.grid: np.ndarray | None = None  # background sample points, set on frame 0
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))

    def motion(self, i: int, masks: list) -> np.ndarray:
        """Homography from small frame i-1 to frame i (identity for frame 0 or too few points)."""
        cur = cv2.cvtColor(self.load(i), cv2.COLOR_BGR2GRAY)
        prev, self.prev = self.prev, cur
        if self.grid is None:
            h, w = cur.shape
            gy, gx = np.mgrid[4:h - 4:self.GRID_STEP, 4:w - 4:self.GRID_STEP]  # ~350 points at 320x180: plenty for 8 parameters
            self.grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        if i == 0 or prev is None:
            return np.eye(3)
        grid = self.grid
        blocked = np.zeros(cur.shape, np.uint8)
        for j in (i - 1, i):
            if masks[j] is not None:
                blocked |= cv2.dilate(masks[j].astype(np.uint8), self.kernel)
        pts = grid[blocked[grid[:, 1].astype(int), grid[:, 0].astype(int)] == 0]
        if len(pts) >= 12:
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts.reshape(-1, 1, 2), None, winSize=(self.WINDOW, self.WINDOW), maxLevel=self.LEVELS,
                                                  criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.ITERATIONS, self.EPS))
            good = st.ravel() == 1
            if good.sum() >= 12:
                hm, inl = cv2.findHomography(pts[good], nxt.reshape(-1, 2)[good], cv2.RANSAC, 1.0)
                if hm is not None and inl is not None and inl.sum() >= 10:
                    return hm
        return np.eye(3)
