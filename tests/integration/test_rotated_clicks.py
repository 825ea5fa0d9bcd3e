"""Clicks on a rotated video are display pixels (api/README.md, "Coordinates"), end to end on
the real stack: a phone-style clip stored 480x270 with a display rotation of 90 (shown 270x480)
is clicked on its object in display coordinates; the preview's mask (display space) and the
finished job's masks land on the object, and a point that is inside the stored frame but
outside the shown one is refused with 422 by both routes."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tapmask.client import ApiError, TapMaskClient
from tapmask.samples import make_sample_clip, sample_object_mask
from tapmask.synthetic import iou

pytestmark = pytest.mark.integration
W, H, FPS, SECONDS, ROTATION = 480, 270, 25, 2.0, 90  # stored size; shown H x W
FRAMES = round(SECONDS * FPS)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("rotated") / "portrait.mp4", seconds=SECONDS, width=W, height=H,
                            fps=FPS, audio=False, rotation=ROTATION)


@pytest.fixture(scope="module")
def client(api_url: str, mint: Callable[..., str]) -> TapMaskClient:
    return TapMaskClient(api_url, token=mint(f"rotated-{uuid.uuid4().hex[:6]}", "pro"))


def stored_disc(frame: int) -> np.ndarray:
    """The clip's object on `frame` in the stored (coded) picture."""
    return sample_object_mask(frame, W, H, FPS)


def shown_disc(frame: int, rotation: int) -> np.ndarray:
    """The object as a player shows it: the stored picture turned by the display rotation
    (counter-clockwise degrees, as the probe reports it)."""
    return np.rot90(stored_disc(frame), rotation // 90)


def centre_of(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean() + 0.5), float(rows.mean() + 0.5)


def png_mask(data: bytes) -> np.ndarray:
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert grey is not None
    return grey >= 128


def preview(client: TapMaskClient, video_id: str, body: dict[str, Any]) -> Any:
    return client.http.post(f"/api/v1/videos/{video_id}/preview", json=body)


def test_display_clicks_on_a_rotated_video_mask_the_object(client: TapMaskClient, rotated: Path, tmp_path: Path) -> None:
    up = client.upload(rotated)
    video = client.wait_validated(up["videoId"])
    assert video["state"] == "valid", video
    meta = video["metadata"]
    assert (meta["width"], meta["height"], meta["rotation"] % 360) == (W, H, ROTATION)
    rotation = meta["rotation"]
    dw, dh = H, W  # shown as a portrait picture
    vid = up["videoId"]

    # The preview: click the object where the user sees it; the mask comes back in display space.
    for frame in (0, 30):
        shown = shown_disc(frame, rotation)
        assert shown.shape == (dh, dw)
        x, y = centre_of(shown)
        resp = preview(client, vid, {"points": [{"x": round(x, 1), "y": round(y, 1), "frame": frame, "label": 1}]})
        assert resp.status_code == 200, resp.text
        got = resp.json()
        assert (got["width"], got["height"], got["frame"]) == (dw, dh, frame)
        mask = png_mask(base64.b64decode(got["mask"].split(",", 1)[1]))
        assert mask.shape == (dh, dw)
        score = iou(mask, shown)
        assert score > 0.8, f"frame {frame}: preview IoU {score:.3f} with the shown object"

    # A point inside the stored 480x270 picture but outside the shown 270x480 one: 422 from both.
    stored_only = {"x": 400.0, "y": 100.0, "frame": 0, "label": 1}
    assert stored_only["x"] < W and stored_only["y"] < H and stored_only["x"] >= dw
    resp = preview(client, vid, {"points": [stored_only]})
    assert resp.status_code == 422 and f"outside the {dw}x{dh} frame" in resp.json()["detail"], resp.text
    with pytest.raises(ApiError) as e:
        client.segment(vid, stored_only["x"], stored_only["y"], 0)
    assert e.value.status == 422 and f"outside the {dw}x{dh} frame" in e.value.reason

    # The job: the same display click. On frame 0 the object is shown below the stored height
    # (y >= 270), so a check against the stored size would have refused this valid click.
    x, y = centre_of(shown_disc(0, rotation))
    assert y >= H
    job = client.segment(vid, round(x, 1), round(y, 1), 0, mode="blur")
    final = client.wait_done(job["jobId"], timeout_s=240)
    assert final["state"] == "complete", final
    m = client.http.get(f"/api/v1/download/{job['jobId']}/masks")
    assert m.status_code == 200, m.text[:200]
    archive = zipfile.ZipFile(io.BytesIO(m.content))
    folder = f"masks-{job['jobId']}/"
    doc = json.loads(archive.read(f"{folder}masks.json"))
    # The job's masks are in display orientation, like the clicks and the preview: they
    # overlay the picture a player shows.
    assert (doc["width"], doc["height"], doc["rotation"]) == (dw, dh, rotation % 360), doc
    for frame in (0, FRAMES // 2, FRAMES - 1):
        mask = png_mask(archive.read(f"{folder}{frame:06d}.png"))
        truth = shown_disc(frame, rotation)
        assert mask.shape == truth.shape
        score = iou(mask, truth)
        assert score > 0.5, f"frame {frame}: job mask IoU {score:.3f} with the object"
