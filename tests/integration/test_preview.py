"""The mask preview route (``POST /api/v1/videos/{videoId}/preview``) against the real stack:
the mask lands on the generated clip's object (IoU against its known position, on the first
frame and on a frame reached by seeking), and bad requests get their 4xx with a reason."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tapmask.samples import OBJECT_RADIUS, make_sample_clip, sample_object_center, sample_object_mask
from tapmask.synthetic import iou
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration
W, H, FPS, SECONDS = 480, 270, 25, 2.0
FRAMES = round(SECONDS * FPS)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("preview-clips") / "preview.mp4", seconds=SECONDS, width=W, height=H, fps=FPS)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(url: str, token: str, path: Path) -> str:
    with path.open("rb") as fh:
        resp = httpx.post(f"{url}/api/v1/upload", files={"file": (path.name, fh, "video/mp4")}, headers=auth(token), timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.json()["videoId"]


def preview(url: str, token: str, video_id: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/videos/{video_id}/preview", json=body, headers=auth(token), timeout=60)


def wait_preview(url: str, token: str, video_id: str, body: dict[str, Any]) -> tuple[httpx.Response, list[httpx.Response]]:
    """Ask until the video is validated: the answer, and the 409s before it."""
    early: list[httpx.Response] = []
    deadline = time.monotonic() + 60
    while True:
        resp = preview(url, token, video_id, body)
        if resp.status_code != 409 or time.monotonic() > deadline:
            return resp, early
        early.append(resp)
        time.sleep(float(resp.headers.get("Retry-After", "1")) / 5)


def click(frame: int) -> dict[str, Any]:
    x, y = sample_object_center(frame, W, H, FPS)
    return {"x": round(x, 1), "y": round(y, 1), "frame": frame, "label": 1}


def object_mask(frame: int) -> np.ndarray:
    """Where the clip's disc is on `frame`."""
    return sample_object_mask(frame, W, H, FPS)


def decoded_mask(body: dict[str, Any]) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert body["mask"].startswith(prefix)
    png = np.frombuffer(base64.b64decode(body["mask"][len(prefix):]), np.uint8)
    grey = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    assert grey is not None and grey.shape == (body["height"], body["width"]) and grey.dtype == np.uint8
    return grey >= 128


def test_preview_mask_covers_the_clicked_object(api_url: str, mint: Callable[..., str], clip: Path) -> None:
    token = mint(f"preview-{uuid.uuid4().hex[:6]}", "free")
    video_id = upload(api_url, token, clip)
    # Right after the upload the video is still being validated: 409 + Retry-After, never 5xx.
    first, early = wait_preview(api_url, token, video_id, {"points": [click(0)]})
    assert all(r.status_code == 409 and r.headers.get("Retry-After") and "validated" in r.json()["detail"] for r in early)
    assert first.status_code == 200, first.text
    for frame in (0, 37, FRAMES - 1):  # the first frame, and frames reached by a seek
        bx, by = sample_object_center(frame, W, H, FPS)
        body = {"points": [click(frame), {"x": W * 0.05, "y": H * 0.1, "frame": frame, "label": 0}]}
        resp = first if frame == 0 else preview(api_url, token, video_id, body)
        assert resp.status_code == 200, resp.text
        got = resp.json()
        assert (got["videoId"], got["frame"], got["width"], got["height"]) == (video_id, frame, W, H)
        assert got["trackingSize"] == {"width": 320, "height": 180}
        mask = decoded_mask(got)
        score = iou(mask, object_mask(frame))
        assert score > 0.8, f"frame {frame}: IoU {score:.3f} with the clip's object"
        assert got["found"] and got["area"] == int(mask.sum())
        assert got["areaFraction"] == pytest.approx(got["area"] / (W * H))
        b = got["bbox"]
        assert b["x0"] <= bx < b["x1"] and b["y0"] <= by < b["y1"]
        assert abs((b["x1"] - b["x0"]) - 2 * OBJECT_RADIUS) <= 8 and abs((b["y1"] - b["y0"]) - 2 * OBJECT_RADIUS) <= 8
    # A box alone designates the object too.
    x, y = sample_object_center(10, W, H, FPS)
    r = OBJECT_RADIUS + 8
    resp = preview(api_url, token, video_id, {"box": {"x0": x - r, "y0": y - r, "x1": x + r, "y1": y + r, "frame": 10}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["frame"] == 10 and iou(decoded_mask(resp.json()), object_mask(10)) > 0.7


def test_bad_preview_requests_get_their_4xx_with_a_reason(api_url: str, mint: Callable[..., str], clip: Path,
                                                         stack_settings: Settings) -> None:
    owner = mint(f"preview-bad-{uuid.uuid4().hex[:6]}", "pro")
    other = mint(f"preview-other-{uuid.uuid4().hex[:6]}", "pro")
    video_id = upload(api_url, owner, clip)
    ok, _ = wait_preview(api_url, owner, video_id, {"points": [click(5)]})
    assert ok.status_code == 200, ok.text

    def refused(status: int, body: dict[str, Any], words: str, vid: str = video_id, token: str = owner) -> None:
        resp = preview(api_url, token, vid, body)
        assert resp.status_code == status, resp.text
        assert words in resp.json()["detail"], resp.json()

    refused(404, {"points": [click(0)]}, "unknown video", vid=uuid.uuid4().hex)
    refused(404, {"points": [click(0)]}, "unknown video", vid="not-a-video")
    refused(403, {"points": [click(0)]}, "another user", token=other)
    assert httpx.post(f"{api_url}/api/v1/videos/{video_id}/preview", json={"points": [click(0)]}).status_code == 401
    refused(422, {"points": [{"x": W + 5, "y": 10, "frame": 0, "label": 1}]}, f"outside the {W}x{H} frame")
    refused(422, {"points": [{"x": 10, "y": H, "frame": 0, "label": 1}]}, f"outside the {W}x{H} frame")
    refused(422, {"points": [click(0) | {"frame": FRAMES}]}, f"past the end of the video ({FRAMES} frames)")
    refused(422, {"points": [click(0) | {"label": 0}]}, "point on the object (label 1) or a box")
    refused(422, {}, "point on the object (label 1) or a box")
    refused(422, {"box": {"x0": 50, "y0": 50, "x1": 40, "y1": 60, "frame": 0}}, "non-empty box")
    refused(422, {"points": [click(0)], "mode": "blur"}, "mode")  # not a field of the preview
    refused(422, {"points": [{"x": "left", "y": 3}]}, "points.0.x")

    # The stored upload broken after validation: the frame cannot be decoded (422, not 500)...
    s3 = s3_client(stack_settings)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack_settings.s3_bucket, Prefix=f"uploads/{video_id}/").get("Contents", [])]
    assert keys
    for key in keys:
        s3.put_object(Bucket=stack_settings.s3_bucket, Key=key, Body=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4096)
    refused(422, {"points": [click(5)]}, "cannot be decoded")
    # ...and gone from storage: 404.
    for key in keys:
        s3.delete_object(Bucket=stack_settings.s3_bucket, Key=key)
    refused(404, {"points": [click(5)]}, "no longer stored")
