"""The free tier's output cap (job spec ``max_output_height``, on the shorter side) is honoured
by the consumer's engine backend, in one pass and in the resumable two-pass path alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from gpu_consumers.checkpoints import VideoBackend
from gpu_consumers.engine import probe
from gpu_consumers.engine.video_io import capped_size
from tapmask.synthetic import make_gt_clip


def test_capped_size_scales_the_shorter_side_to_the_cap_keeping_aspect_and_even_sizes():
    assert capped_size(160, 96, 64) == (106, 64)
    assert capped_size(96, 160, 64) == (64, 106)  # portrait alike
    assert capped_size(3840, 2160, 1080) == (1920, 1080)
    assert capped_size(1920, 1080, 1080) == (1920, 1080)  # at the cap: unchanged
    assert capped_size(1280, 720, 1080) == (1280, 720)  # under it: unchanged (never upscaled)
    assert capped_size(640, 360, None) == (640, 360)
    assert capped_size(640, 360, 101) == (178, 100)  # odd cap: the even size below it
    assert all(v % 2 == 0 for v in capped_size(1001, 777, 333))


class MemoryS3:
    """Just what the checkpointing backend calls."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        return {"ETag": '"etag"'}

    def upload_file(self, path: str, bucket: str, key: str) -> None:
        self.objects[key] = Path(path).read_bytes()

    def download_file(self, bucket: str, key: str, path: str) -> None:
        Path(path).write_bytes(self.objects[key])

    def get_paginator(self, name: str):
        store = self

        class Pages:
            def paginate(self, Bucket: str, Prefix: str):  # noqa: N803
                return [{"Contents": [{"Key": k} for k in store.objects if k.startswith(Prefix)]}]

        return Pages()


def _job(clip, cap: int | None, job_id: str) -> SimpleNamespace:
    x, y, f = clip.click
    spec = {
        "job_id": job_id, "mode": "blur", "points": [{"x": x, "y": y, "frame": f, "label": 1}], "box": None,
        "options": {"margin_px": 4, "blur_kernel": 31, "export_masks": True}, "s3_bucket": "b",
        "video_key": "uploads/v/source", "video": {"frame_count": clip.frames}, "max_output_height": cap,
    }
    return SimpleNamespace(spec=spec, job_id=job_id, scale=1.0)


@pytest.fixture(scope="module", params=["landscape", "portrait"])
def clip(request, tmp_path_factory):
    w, h = (160, 96) if request.param == "landscape" else (96, 160)
    return make_gt_clip(tmp_path_factory.mktemp("cap") / "in.mp4", "basic", w, h, 6)


@pytest.mark.parametrize("s3", [None, "memory"], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("cap", [64, None, 1080])
def test_backend_honours_max_output_height(tmp_path, clip, s3, cap):
    src_info = probe(clip.path)
    expected = capped_size(src_info.width, src_info.height, cap)
    if cap == 64:
        assert expected == ((106, 64) if src_info.width > src_info.height else (64, 106))
    else:
        assert expected == (src_info.width, src_info.height)
    src = tmp_path / "source.mp4"
    shutil.copyfile(clip.path, src)
    work = tmp_path / "job"
    work.mkdir()
    dst = work / "output.mp4"
    backend = VideoBackend(s3=MemoryS3() if s3 else None, chunk_frames=4)
    frames = backend.process(src, dst, _job(clip, cap, "j1"), lambda *a: None, lambda: False)
    assert frames == clip.frames
    out = probe(dst)
    assert (out.width, out.height) == expected
    assert out.frame_count == clip.frames and out.pix_fmt == "yuv420p"
    # Masks are exported at the output's size: they line up with the delivered video.
    doc = json.loads((work / "masks" / "masks.json").read_text())
    assert (doc["width"], doc["height"]) == expected and doc["frames"] == clip.frames
    png = cv2.imread(str(work / "masks" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    assert png.shape == (expected[1], expected[0]) and np.count_nonzero(png) > 0
