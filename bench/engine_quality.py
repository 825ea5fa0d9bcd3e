"""Engine quality on synthetic clips with exact ground truth (issue 4).

Per clip: mean IoU of the tracked masks against the ground truth, the share of frames where
a visible ground-truth object pixel is left unblurred in blur mode (a leaked frame: some GT
pixel outside the mask grown by the safety margin, i.e. where the blur weight is < 1 before
encoding), the lost frames the engine reported, and whether every pixel beyond the margin +
feather is bit-identical to the input before encoding (the video's own 4:2:0 planes, as
rendered: luma beyond the margin + feather, chroma 2 pixels further out).

    python bench/engine_quality.py                    # 640x360, 90 frames, every kind
    python bench/engine_quality.py --size 320x180 --frames 40 --kinds basic,pan
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gpu_consumers.engine import Point, Prompt
from gpu_consumers.engine.effects import soft_alpha
from gpu_consumers.engine.pipeline import track_video
from gpu_consumers.engine.render import EffectOptions, effective_margin, iter_rendered
from gpu_consumers.engine.yuv import Yuv420
from tapmask.synthetic import KINDS, iou, make_gt_clip


def _unchanged(out, orig, beyond: np.ndarray) -> bool:
    """Every pixel in `beyond` is bit-identical: BGR pictures, or the luma of `Yuv420` ones
    and the chroma samples 2 pixels or more beyond (a chroma sample spans 2x2 pixels and the
    chroma effect's margins are rounded up: `effects.apply_effect_yuv`)."""
    if not isinstance(out, Yuv420):
        return np.array_equal(out[beyond], orig[beyond])
    far = cv2.erode(beyond.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    h, w = far.shape
    far_c = far.reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))
    return (np.array_equal(out.y[beyond], orig.y[beyond]) and np.array_equal(out.u[far_c], orig.u[far_c])
            and np.array_equal(out.v[far_c], orig.v[far_c]))


def evaluate(kind: str, width: int, height: int, frames: int, folder: Path, margin: int = 8,
             check_pixels: bool = True) -> dict:
    clip = make_gt_clip(folder / f"{kind}.mp4", kind, width, height, frames)
    x, y, f = clip.click
    t = time.perf_counter()
    track = track_video(clip.path, Prompt([Point(x, y, f)]))
    track_s = time.perf_counter() - t
    ious, leaked, untouched_ok, leaked_frames = [], 0, True, []
    opts = EffectOptions(mode="blur", margin_px=margin)
    margin = effective_margin(margin, track)  # what rendering grows the mask by
    rendered = iter_rendered(clip.path, track, opts, 0, len(track)) if check_pixels else None
    from gpu_consumers.engine.video_io import VideoReader

    with VideoReader(clip.path, yuv=True) as reader:  # compared as rendered: the video's own planes
        originals = reader.video_frames()
        for i in range(len(track)):
            mask = track.full_mask(i) > 0
            gt = clip.masks[i]
            ious.append(iou(mask, gt))
            found = soft_alpha(mask.astype(np.uint8), margin, 0)
            covered = np.zeros_like(gt)
            if found is not None:
                a, region = found
                covered[region] = a >= 1.0
            if (gt & ~covered).any():
                leaked += 1
                leaked_frames.append(i)
            if rendered is not None:
                orig = next(originals).image
                _, _, out, _ = next(rendered)
                reach = soft_alpha(mask.astype(np.uint8), margin, opts.feather_px)
                beyond = np.ones(gt.shape, bool)
                if reach is not None:
                    beyond[reach[1]] = reach[0] <= 0
                if not _unchanged(out, orig, beyond):
                    untouched_ok = False
    return {"kind": kind, "frames": len(track), "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
            "leaked_pct": 100.0 * leaked / len(track), "lost": track.lost_ranges(),
            "margin": margin, "beyond_margin_unchanged": untouched_ok, "leaked_frames": leaked_frames, "track_s": track_s, "ious": ious}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    print(f"engine quality: {w}x{h}, {args.frames} frames per clip, blur margin 8 px "
          "(at least the tracker's edge uncertainty, render.effective_margin)")
    print(f"{'clip':<14}{'mean IoU':>9}{'min IoU':>9}{'leaked':>8}{'unchanged':>10}{'track s':>8}  lost frames")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            r = evaluate(kind, w, h, args.frames, Path(tmp))
            ok &= r["mean_iou"] >= 0.85 and r["leaked_pct"] == 0 and r["beyond_margin_unchanged"]
            print(f"{kind:<14}{r['mean_iou']:>9.3f}{r['min_iou']:>9.3f}{r['leaked_pct']:>7.1f}%"
                  f"{str(r['beyond_margin_unchanged']):>10}{r['track_s']:>8.2f}  {r['lost']}")
            if args.verbose:
                print("   ", " ".join(f"{v:.2f}" for v in r["ious"]), "leaked:", r["leaked_frames"])
    print(f"margin used: {r['margin']} px")
    print("targets (mean IoU >= 0.85, 0 % leaked, unchanged beyond margin):", "met" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
