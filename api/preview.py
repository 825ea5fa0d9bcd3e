"""``POST /api/v1/videos/{videoId}/preview``: the mask the engine starts from, on the prompted
frame, in about a second and before any job runs.

Only the prompted frame is decoded: the upload is read from S3 through ranged GETs
(`tapmask.storage.S3RangeReader`, at most ~17 MiB cached), the demuxer seeks to the key frame
before the frame's time and decodes from there (from the start only if the seek misses). The
frame is scaled to the tracker's working size (`ClassicTracker().max_side`, as
`ClassicTracker._track` does) and segmented by the engine's own first-frame segmentation,
`gpu_consumers.engine.tracking.initial_mask`, with the clicks mapped the same way (display →
coded orientation, then the same scale). The mask is turned back to display orientation,
scaled to the video's display size and answered as a PNG data URL with its box and area.

The CPU work runs in a small thread pool of its own (the event loop is never blocked); at
most `MAX_IN_FLIGHT` previews run or wait per process (503 + Retry-After beyond), and one
that decodes for longer than `TIMEOUT_S` gives up (503).
"""

from __future__ import annotations

import asyncio
import base64
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any

import av
import cv2
import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Depends, HTTPException, Request

from api.auth import User, current_user
from api.models import PreviewIn
from api.routes import _check_against_metadata, _own_video
from gpu_consumers.engine.prompts import Box, Point, Prompt, display_size, prompt_to_coded, quarter_turns
from gpu_consumers.engine.tracking import ClassicTracker, initial_mask, prompts_on_frame, small_size
from gpu_consumers.engine.video_io import scaled_bgr
from gpu_consumers.engine.yuv import Yuv420
from tapmask.storage import S3RangeReader

router = APIRouter()

#: The tracker's working size: the longer side of the frames it segments and tracks.
TRACKING_MAX_SIDE = ClassicTracker().max_side
#: Previews computed at once per process, and how many may run or wait in all.
WORKERS = 2
MAX_IN_FLIGHT = 6
#: A preview that has not found its frame after this long gives up (503).
TIMEOUT_S = 20.0

_executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="preview")
_in_flight = 0
_in_flight_lock = threading.Lock()


class PreviewProblem(Exception):
    """A preview that cannot be made: ``status`` and a sentence for the caller."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class PreviewMask:
    """The result: a bool mask at the video's display size (display orientation), the mask
    at the tracker's working size (coded orientation, what the engine starts from), and that size."""

    frame: int
    mask: np.ndarray
    small: np.ndarray
    tracking_size: tuple[int, int]


def tracking_size(width: int, height: int, max_side: int = TRACKING_MAX_SIDE) -> tuple[int, int]:
    """The size the tracker works at for a `width` x `height` (coded) video."""
    return small_size(width, height, max_side)


def read_frame(source: IO[bytes] | str, index: int, fps: Fraction, size: tuple[int, int],
               deadline: float = math.inf) -> tuple[np.ndarray, int]:
    """Frame `index` of the video in `source` as a BGR picture of `size` (coded orientation),
    and the index of the frame found (the last one when the file ends earlier).

    Frame `index` is the one shown at ``(index + 0.5) / fps`` seconds after the first frame,
    as the web player seeks (for constant-frame-rate video: the index-th decoded frame, the
    engine's count). The demuxer seeks to the key frame at or before that time; only when the
    seek lands past it is the video decoded from the start."""
    with av.open(source, mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = Fraction(stream.time_base or Fraction(1, 90000))
        first = next(container.decode(stream), None)
        if first is None:
            raise PreviewProblem(422, "the video has no frame that can be decoded")
        start = first.pts if first.pts is not None else 0

        def when(frame: av.VideoFrame) -> Fraction:
            return (Fraction(frame.pts - start) * tb) if frame.pts is not None else Fraction(-1)

        target = Fraction(2 * index + 1, 2) / fps  # the middle of the frame's display interval
        chosen: av.VideoFrame | None = first if index == 0 else None
        if chosen is None:
            container.seek(start + int(target / tb), stream=stream, backward=True, any_frame=False)
            chosen = _last_before(container.decode(stream), when, target, deadline, index)
        if chosen is None:  # the seek landed past the frame: decode from the start
            container.seek(start, stream=stream, backward=True, any_frame=False)
            chosen = _last_before(container.decode(stream), when, target, deadline, index) or first
        found = int(round(float(when(chosen) * fps))) if chosen.pts is not None else index
        return scaled_bgr(chosen, size, Yuv420.from_frame(chosen)), min(found, index)


def _last_before(frames: Any, when: Any, target: Fraction, deadline: float, index: int) -> av.VideoFrame | None:
    """The last of `frames` (presentation order) shown at or before `target`; None if the very
    first one is already later (a seek that missed)."""
    last = None
    for frame in frames:
        if time.monotonic() > deadline:
            raise PreviewProblem(503, f"finding frame {index} took too long; try again in a moment")
        if when(frame) > target:
            break
        last = frame
    return last


def compute_preview(source: IO[bytes] | str, meta: dict[str, Any], prompt: Prompt,
                    deadline: float = math.inf) -> PreviewMask:
    """The engine's initial mask for `prompt` (display coordinates, checked) on its frame,
    as a bool array at the video's display size (display orientation)."""
    width, height, rotation = int(meta["width"]), int(meta["height"]), int(meta.get("rotation") or 0)
    fps = Fraction(int(meta.get("fps_num") or 25), int(meta.get("fps_den") or 1))
    k = prompt.frame
    sw, sh = tracking_size(width, height)
    img, _found = read_frame(source, k, fps, (sw, sh), deadline)
    coded = prompt_to_coded(prompt, rotation, width, height)
    sx, sy = sw / width, sh / height
    # As ClassicTracker._track: the prompted frame's positive and negative clicks and its box.
    small = initial_mask(img, *prompts_on_frame(coded, k, sx, sy))
    turned = np.ascontiguousarray(np.rot90(small.astype(np.uint8) * 255, quarter_turns(rotation)))
    dw, dh = display_size(width, height, rotation)
    full = cv2.resize(turned, (dw, dh), interpolation=cv2.INTER_LINEAR) >= 128
    return PreviewMask(k, full, small, (sw, sh))


def preview_body(video_id: str, result: PreviewMask) -> dict[str, Any]:
    """The JSON answer (api/README.md): the mask as a PNG data URL, its box and area."""
    mask = result.mask
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    area = int(np.count_nonzero(mask))
    bbox = None
    if area:
        bbox = {"x0": int(cols[0]), "y0": int(rows[0]), "x1": int(cols[-1]) + 1, "y1": int(rows[-1]) + 1}
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 grey picture
        raise PreviewProblem(503, "the preview could not be encoded")
    return {
        "videoId": video_id, "frame": result.frame, "width": w, "height": h,
        "mask": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii"),
        "bbox": bbox, "area": area, "areaFraction": area / float(w * h), "found": area > 0,
        "trackingSize": {"width": result.tracking_size[0], "height": result.tracking_size[1]},
    }


def _run(s3: Any, bucket: str, key: str, video_id: str, meta: dict[str, Any], prompt: Prompt) -> dict[str, Any]:
    """The thread's work: open the upload over ranged GETs, compute, encode."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        reader = S3RangeReader(s3, bucket, key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise PreviewProblem(404, "the uploaded file is no longer stored") from exc
        raise PreviewProblem(503, "the storage did not answer; try again in a moment") from exc
    except BotoCoreError as exc:
        raise PreviewProblem(503, "the storage did not answer; try again in a moment") from exc
    try:
        with reader:
            return preview_body(video_id, compute_preview(reader, meta, prompt, deadline))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise PreviewProblem(422, f"frame {prompt.frame} of the video cannot be decoded ({exc.__class__.__name__})") from exc
    except (ClientError, BotoCoreError) as exc:
        raise PreviewProblem(503, "the storage did not answer; try again in a moment") from exc
    except cv2.error as exc:
        raise PreviewProblem(422, f"the object could not be segmented on frame {prompt.frame}") from exc


def to_prompt(body: PreviewIn) -> Prompt:
    """The request as the engine's `Prompt` (display coordinates)."""
    points = [Point(p.x, p.y, p.frame, p.label) for p in body.all_points()]
    b = body.box
    return Prompt(points=points, box=None if b is None else Box(b.x0, b.y0, b.x1, b.y1, b.frame))


@router.post("/api/v1/videos/{video_id}/preview", tags=["videos"])
async def preview(video_id: str, body: PreviewIn, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """The mask of the clicked object on the prompted frame (the engine's first-frame
    segmentation), before any job runs: a PNG data URL at the video's display size, its box
    and area."""
    global _in_flight
    video = _own_video(request, video_id, user)
    if video.state == "validating" or (video.state == "valid" and not video.metadata):
        raise HTTPException(status_code=409, detail="the video is still being validated; retry in a second", headers={"Retry-After": "1"})
    if video.state == "rejected":
        raise HTTPException(status_code=422, detail=f"the video was rejected: {video.reason}")
    meta = video.metadata or {}
    _check_against_metadata(body, meta)  # the same checks and answers as /segment
    prompt = to_prompt(body)
    with _in_flight_lock:
        if _in_flight >= MAX_IN_FLIGHT:
            raise HTTPException(status_code=503, detail="too many previews are being made; retry in a second", headers={"Retry-After": "1"})
        _in_flight += 1
    try:
        loop = asyncio.get_running_loop()
        bucket = video.s3_bucket or request.app.state.settings.s3_bucket
        return await loop.run_in_executor(_executor, _run, request.app.state.s3, bucket, video.s3_key, video_id, meta, prompt)
    except PreviewProblem as exc:
        raise HTTPException(status_code=exc.status, detail=exc.detail,
                            headers={"Retry-After": "1"} if exc.status == 503 else None) from exc
    finally:
        with _in_flight_lock:
            _in_flight -= 1
