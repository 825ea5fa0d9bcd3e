"""`MaskTrack`: the result of tracking, one mask + confidence per frame, stored compactly.

Tracking (pass 1) produces a `MaskTrack`; rendering (pass 2) reads it. It is everything
pass 2 needs besides the input video, so it is the unit to checkpoint (issue 3: store it in
S3 after tracking, then render chunk by chunk):

* per frame: the mask at *tracking resolution* (`mask_width` x `mask_height`, bit-packed
  and zlib-compressed, see `encode_mask`), a confidence in [0, 1], a `lost` flag (the tracker could not see the object on
  that frame: its mask is empty or a prediction), the frame's pts;
* per frame: `motion[i]`, the 3x3 homography that maps full-resolution pixel coordinates
  of frame i-1 onto frame i (the camera's motion; identity for frame 0), used by erase;
* the full (coded) frame size and time base.

`full_mask(i)` upsamples a mask to the frame size, always the same way, so a frame renders
identically whether it is rendered in one run or in chunks. `save`/`load` (and
`to_bytes`/`from_bytes`) round-trip a track through one `.npz` file (no pickle).
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .masks import mask_u8
from .prompts import display_size, quarter_turns

FORMAT_VERSION = 1


def encode_mask(mask: np.ndarray) -> bytes:
    """Compact bytes of a binary mask: height and width (uint32), then its bits, zlib'd.

    A typical mask takes a few hundred bytes and ~0.1 ms (PNG is ~10x slower here).
    """
    h, w = mask.shape[:2]
    bits = np.packbits(mask.reshape(-1) > 0)
    return np.array([h, w], "<u4").tobytes() + zlib.compress(bits.tobytes(), 1)


def decode_mask(data: bytes) -> np.ndarray:
    """Inverse of `encode_mask`: uint8 0/255."""
    h, w = (int(v) for v in np.frombuffer(data[:8], "<u4"))
    bits = np.frombuffer(zlib.decompress(data[8:]), np.uint8)
    return (np.unpackbits(bits, count=h * w).reshape(h, w) * 255).astype(np.uint8)


def motion_product(motion_of: Callable[[int], np.ndarray], inverses: dict[int, np.ndarray],
                   src: int, dst: int) -> np.ndarray:
    """Homography from frame `src` to frame `dst` given each frame's motion from the frame
    before (`motion_of(k)`); `inverses` caches inverted motions. `MaskTrack` and `LiveTrack`
    both use it, so a live render warps exactly as one after tracking."""
    h = np.eye(3, dtype=np.float64)
    if dst > src:
        for k in range(src + 1, dst + 1):
            h = motion_of(k).astype(np.float64) @ h
    else:
        for k in range(src, dst, -1):
            inv = inverses.get(k)
            if inv is None:
                inv = inverses[k] = np.linalg.inv(motion_of(k).astype(np.float64))
            h = inv @ h
    return h


def upsample_mask(small: np.ndarray, width: int, height: int) -> np.ndarray:
    """Full-size uint8 0/255 mask from a tracking-resolution one (bilinear, kept where >= 96/255:
    a little generous, since a missed pixel is worse than an extra one).

    Only the bounding box of the mask (plus a pixel) is resampled: the result is the same
    as resizing the whole mask, at a fraction of the cost.
    """
    out = np.zeros((height, width), np.uint8)
    sh, sw = small.shape[:2]
    x, y, w, h = cv2.boundingRect(small)
    if w == 0 or h == 0:
        return out
    if (sw, sh) == (width, height):
        out[small > 127] = 255
        return out
    fx, fy = sw / width, sh / height
    # Full-res pixel range whose sample points fall within [x - 1, x + w + 1) etc.
    X0 = max(0, int(np.floor((x - 1 + 0.5) / fx - 0.5)))
    X1 = min(width, int(np.ceil((x + w + 1 + 0.5) / fx - 0.5)) + 1)
    Y0 = max(0, int(np.floor((y - 1 + 0.5) / fy - 0.5)))
    Y1 = min(height, int(np.ceil((y + h + 1 + 0.5) / fy - 0.5)) + 1)
    xs = (np.arange(X0, X1, dtype=np.float32) + 0.5) * fx - 0.5
    ys = (np.arange(Y0, Y1, dtype=np.float32) + 0.5) * fy - 0.5
    map_x = np.broadcast_to(xs[None, :], (Y1 - Y0, X1 - X0))
    map_y = np.broadcast_to(ys[:, None], (Y1 - Y0, X1 - X0))
    soft = cv2.remap(small, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    out[Y0:Y1, X0:X1] = mask_u8(soft >= 96)
    return out


@dataclass(frozen=True, slots=True)
class FrameStats:
    """What masks.json says about one frame (full-resolution pixel units)."""

    frame: int
    bbox: tuple[int, int, int, int] | None  # x, y, width, height; None when the mask is empty
    area: int
    confidence: float
    lost: bool


class MaskTrack:
    """Masks, confidences and camera motion for every frame of one video (see module doc)."""

    def __init__(
        self,
        width: int,
        height: int,
        mask_width: int,
        mask_height: int,
        masks_png: Sequence[bytes],
        confidence: Sequence[float],
        lost: Sequence[bool],
        pts: Sequence[int | None] | None = None,
        motion: np.ndarray | None = None,
        time_base: Fraction | None = None,
        meta: dict | None = None,
    ) -> None:
        n = len(masks_png)
        if len(confidence) != n or len(lost) != n:
            raise ValueError("masks, confidence and lost must have one entry per frame")
        self.width, self.height = int(width), int(height)
        self.mask_width, self.mask_height = int(mask_width), int(mask_height)
        self._png = list(masks_png)
        self.confidence = np.asarray(confidence, np.float32)
        self.lost = np.asarray(lost, bool)
        self.pts = [None if p is None else int(p) for p in (pts if pts is not None else [None] * n)]
        if motion is None:
            motion = np.repeat(np.eye(3, dtype=np.float32)[None], n, axis=0)
        self.motion = np.asarray(motion, np.float32).reshape(n, 3, 3)
        self.time_base = time_base
        self.meta = dict(meta or {})

    # -- access -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._png)

    def has_frame(self, index: int) -> bool:
        """Whether frame `index` is in the track (as `LiveTrack.has_frame` answers it)."""
        return 0 <= index < len(self._png)

    @property
    def frame_count(self) -> int:
        """Number of frames tracked (= frames decoded)."""
        return len(self._png)

    def small_mask(self, index: int) -> np.ndarray:
        """Mask of frame `index` at tracking resolution, uint8 0/255."""
        return decode_mask(self._png[index])

    def full_mask(self, index: int) -> np.ndarray:
        """Mask of frame `index` at the video's coded size, uint8 0/255."""
        return upsample_mask(self.small_mask(index), self.width, self.height)

    def lost_frames(self) -> list[int]:
        """Indices of the frames where the object was not found (reported, never hidden)."""
        return [int(i) for i in np.flatnonzero(self.lost)]

    def lost_ranges(self) -> list[tuple[int, int]]:
        """`lost_frames` as inclusive (first, last) runs."""
        runs: list[tuple[int, int]] = []
        for i in self.lost_frames():
            if runs and runs[-1][1] == i - 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
        return runs

    def stats(self, index: int, mask: np.ndarray | None = None) -> FrameStats:
        """bbox / area (full resolution) / confidence / lost of frame `index`."""
        full = self.full_mask(index) if mask is None else mask
        x, y, w, h = cv2.boundingRect(full)
        area = int(cv2.countNonZero(full))
        return FrameStats(index, (x, y, w, h) if area else None, area,
                          round(float(self.confidence[index]), 4), bool(self.lost[index]))

    def motion_between(self, src: int, dst: int) -> np.ndarray:
        """Homography mapping full-res coordinates of frame `src` to frame `dst`.

        The product of the per-frame motions between them (computed the same way whatever
        else was asked before, so results do not depend on chunking).
        """
        return motion_product(lambda k: self.motion[k], self.__dict__.setdefault("_inv_cache", {}), src, dst)

    # -- masks out ----------------------------------------------------------------------
    def write_masks(self, folder: str | os.PathLike[str], progress=None,
                    size: tuple[int, int] | None = None, rotation: float = 0) -> Path:
        """One full-resolution PNG per frame (`000000.png`, ...) plus `masks.json`.

        `size` (width, height): write the masks at that size instead of the video's coded
        size - the output's size when the output is scaled down (free-tier cap), so the
        masks line up with the video the user gets. `rotation`: the video's display rotation
        (degrees, counter-clockwise, as `VideoInfo.rotation`): the masks are turned to the
        picture a player shows (``np.rot90(mask, rotation / 90)``), the orientation clicks
        and the preview use, so a phone video's masks overlay what its users see. bbox and
        area are in those pixels.

        masks.json: ``{"width", "height", "rotation", "frames", "lost_frames", "masks":
        [{"frame", "file", "bbox": [x, y, w, h] | null, "area", "confidence", "lost"}, ...]}``
        (width and height as displayed; `rotation` the quarter turns applied, in degrees).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        width, height = size if size is not None else (self.width, self.height)
        turns = quarter_turns(rotation)
        entries = []
        for i in range(len(self)):
            full = upsample_mask(self.small_mask(i), width, height)
            if turns:
                full = np.ascontiguousarray(np.rot90(full, turns))
            name = f"{i:06d}.png"
            cv2.imwrite(str(folder / name), full, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            s = self.stats(i, full)
            entries.append({"frame": i, "file": name, "bbox": list(s.bbox) if s.bbox else None,
                            "area": s.area, "confidence": s.confidence, "lost": s.lost})
            if progress is not None:
                progress(i + 1, len(self))
        shown_w, shown_h = display_size(width, height, rotation)
        doc = {"width": shown_w, "height": shown_h, "rotation": 90 * turns, "frames": len(self),
               "lost_frames": self.lost_frames(), "masks": entries}
        (folder / "masks.json").write_text(json.dumps(doc, indent=1))
        return folder

    # -- serialisation --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole track as one `.npz` (no pickle): see `from_bytes`."""
        lengths = np.array([len(b) for b in self._png], np.int64)
        blob = np.frombuffer(b"".join(self._png), np.uint8)
        pts = np.array([-(2**62) if p is None else p for p in self.pts], np.int64)
        header = {
            "version": FORMAT_VERSION, "width": self.width, "height": self.height,
            "mask_width": self.mask_width, "mask_height": self.mask_height,
            "time_base": None if self.time_base is None else [self.time_base.numerator, self.time_base.denominator],
            "meta": self.meta,
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), lengths=lengths, blob=blob,
            confidence=self.confidence, lost=self.lost, pts=pts, motion=self.motion,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskTrack:
        """Inverse of `to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode())
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported mask track version {header.get('version')}")
            blob = z["blob"].tobytes()
            offsets = np.concatenate([[0], np.cumsum(z["lengths"])])
            pngs = [blob[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
            pts = [None if p == -(2**62) else int(p) for p in z["pts"]]
            tb = header.get("time_base")
            return cls(header["width"], header["height"], header["mask_width"], header["mask_height"], pngs,
                       z["confidence"], z["lost"], pts, z["motion"], Fraction(*tb) if tb else None,
                       header.get("meta"))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_bytes()` to `path` (atomically: a temp file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MaskTrack:
        """Read a file written by `save`."""
        return cls.from_bytes(Path(path).read_bytes())

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.full_mask(i)
