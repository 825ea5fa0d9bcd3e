"""The walking skeleton end to end over the real stack: upload → validate → segment → quota →
GPU consumer → status → download, and the bad inputs along the way."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest

from tapmask.client import ApiError, TapMaskClient
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration
W, H, FPS = 640, 360, 25


def frames_of(path: Path) -> tuple[list[np.ndarray], av.VideoStream]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        return frames, (s.width, s.height, s.average_rate)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def client(api_url: str, api_token: str) -> TapMaskClient:
    return TapMaskClient(api_url, token=api_token)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("clips") / "sample.mp4", seconds=3.0, width=W, height=H, fps=FPS)


def test_upload_click_blur_download(client: TapMaskClient, clip: Path, tmp_path: Path) -> None:
    up = client.upload(clip)
    video = client.wait_validated(up["videoId"])
    assert video["state"] == "valid", video
    assert video["metadata"]["width"] == W and video["metadata"]["frame_count"] == 75

    x, y = sample_object_center(0, W, H, FPS)
    job = client.segment(up["videoId"], x, y, 0, mode="blur")
    seen: list[str] = []
    final = client.wait_done(job["jobId"], timeout_s=180, on_update=lambda st: seen.append(st["state"]))
    assert final["state"] == "complete", final
    assert final["percent"] == 100.0 and "downloadUrl" in final
    out = client.download(job["jobId"], tmp_path / "out.mp4")

    src, (sw, sh, srate) = frames_of(clip)
    dst, (dw, dh, drate) = frames_of(out)
    assert (dw, dh, drate) == (sw, sh, srate)
    assert len(dst) == len(src) == 75

    yy, xx = np.mgrid[0:H, 0:W]
    for i, (a, b) in enumerate(zip(src, dst)):
        x, y = sample_object_center(i, W, H, FPS)  # the object moves; the blur follows it
        far = np.hypot(xx - x, yy - y) > 120  # well beyond the blurred region, margin and feather
        near = (slice(int(y) - 20, int(y) + 20), slice(int(x) - 20, int(x) + 20))
        assert psnr(a[far], b[far]) >= 35.0
        sharp = cv2.Laplacian(cv2.cvtColor(a[near], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        blurred = cv2.Laplacian(cv2.cvtColor(b[near], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        assert blurred < 0.25 * sharp, (sharp, blurred)

    with av.open(str(out)) as c:
        assert c.streams.audio, "the audio stream was dropped"

    # The per-frame masks: uploaded by the consumer, zipped by the API.
    m = client.http.get(f"/api/v1/download/{job['jobId']}/masks")
    assert m.status_code == 200 and m.headers["content-type"] == "application/zip", m.text[:200]
    archive = zipfile.ZipFile(BytesIO(m.content))
    folder = f"masks-{job['jobId']}/"
    names = sorted(archive.namelist())
    assert names == [f"{folder}{i:06d}.png" for i in range(75)] + [f"{folder}masks.json"]
    doc = json.loads(archive.read(f"{folder}masks.json"))
    assert (doc["width"], doc["height"], doc["frames"], len(doc["masks"])) == (W, H, 75, 75)
    assert [e["frame"] for e in doc["masks"]] == list(range(75))
    assert all({"bbox", "area", "confidence", "lost"} <= e.keys() for e in doc["masks"])
    mask0 = cv2.imdecode(np.frombuffer(archive.read(f"{folder}000000.png"), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert mask0.shape == (H, W)
    x0, y0 = sample_object_center(0, W, H, FPS)
    assert mask0[int(y0) - 5:int(y0) + 6, int(x0) - 5:int(x0) + 6].mean() > 127, "frame 0's mask misses the click"
    assert doc["masks"][0]["area"] > 0 and not doc["masks"][0]["lost"]
    assert 0 < np.count_nonzero(mask0) < 0.25 * W * H


def test_unknown_ids_are_404(client: TapMaskClient) -> None:
    with pytest.raises(ApiError) as e:
        client.segment("0123456789abcdef0123456789abcdef", 10, 10)
    assert e.value.status == 404 and "unknown video" in e.value.reason
    for path in ("/api/v1/status/0123456789abcdef", "/api/v1/download/0123456789abcdef", "/api/v1/status/..%2F..%2Fetc"):
        r = client.http.get(path)
        assert r.status_code == 404, path


def test_malformed_json_is_422_with_a_reason(client: TapMaskClient) -> None:
    r = client.http.post("/api/v1/segment", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]
    r = client.http.post("/api/v1/segment", json={"videoId": "abc", "mode": "sparkle"})
    assert r.status_code == 422 and "mode" in r.json()["detail"]


def _upload_keys(settings: Settings) -> set[str]:
    s3 = s3_client(settings)
    resp = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="uploads/")
    return {o["Key"] for o in resp.get("Contents", [])}


def test_non_video_upload_is_refused_and_leaves_nothing(client: TapMaskClient, stack_settings: Settings, tmp_path: Path) -> None:
    before = _upload_keys(stack_settings)
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file renamed .mp4\n" * 100)
    with pytest.raises(ApiError) as e:
        client.upload(fake)
    assert e.value.status == 415 and "not a supported video" in e.value.reason
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ApiError) as e:
        client.upload(empty)
    assert e.value.status == 400
    r = client.http.post("/api/v1/upload", content=b"raw body", headers={"content-type": "video/mp4"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    assert _upload_keys(stack_settings) == before


def test_point_outside_the_frame_is_refused(client: TapMaskClient, clip: Path) -> None:
    up = client.upload(clip)
    assert client.wait_validated(up["videoId"])["state"] == "valid"
    with pytest.raises(ApiError) as e:
        client.segment(up["videoId"], W + 5, 10)
    assert e.value.status == 422 and "outside" in e.value.reason
    with pytest.raises(ApiError) as e:
        client.segment(up["videoId"], 10, 10, frame=10_000)
    assert e.value.status == 422 and "past the end" in e.value.reason


def test_a_corrupt_video_is_rejected_with_a_reason(client: TapMaskClient, clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data[:64]) + b"\x00" * 2000)  # an mp4 header, then nothing decodable
    up = client.upload(broken)
    video = client.wait_validated(up["videoId"])
    assert video["state"] == "rejected" and video["reason"]
    with pytest.raises(ApiError) as e:
        client.segment(up["videoId"], 10, 10)
    assert e.value.status == 422 and "rejected" in e.value.reason


def test_health_and_readiness(api_url: str) -> None:
    assert httpx.get(f"{api_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api_url}/readyz").status_code == 200
