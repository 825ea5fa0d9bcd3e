"""The mask preview's CPU side (api/preview.py) on generated clips, no stack: the frame it
decodes is the engine's frame, its mask is the engine's first mask, and the mask sits on the
clip's known object (also on a rotated clip, in display orientation)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pydantic import ValidationError

from api.models import PreviewIn
from api.preview import compute_preview, preview_body, read_frame, tracking_size
from api.routes import clicks_problem
from gpu_consumers.engine import Box, Point, Prompt, track_video
from gpu_consumers.engine.prompts import coded_to_display
from gpu_consumers.engine.video_io import VideoReader, probe
from tapmask.samples import OBJECT_RADIUS, make_sample_clip, sample_object_center, sample_object_mask
from tapmask.synthetic import iou

W, H, FPS = 480, 270, 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("preview") / "clip.mp4", seconds=4.0, width=W, height=H, fps=FPS, audio=False)


def meta_of(path: Path) -> dict:
    info = probe(path)
    return {"width": info.width, "height": info.height, "rotation": info.rotation, "frame_count": info.frame_count,
            "fps_num": info.fps.numerator, "fps_den": info.fps.denominator}


def disc(frame: int, width: int, height: int, rotation: int = 0) -> np.ndarray:
    """The clip's object on `frame`, in display orientation."""
    return np.rot90(sample_object_mask(frame, W, H, FPS), rotation // 90)


def test_tracking_size_is_the_trackers() -> None:
    assert tracking_size(480, 270) == (320, 180)
    assert tracking_size(270, 480) == (180, 320)
    assert tracking_size(200, 100) == (200, 100)  # never scaled up


def test_the_decoded_frame_is_the_engines_frame(clip: Path) -> None:
    size = tracking_size(W, H)
    with VideoReader(clip, probe(clip)) as reader:
        frames = [f.image for f in reader.video_frames(size=size)]
    for k in (0, 1, 13, 50, 77, len(frames) - 1):  # key frame, B/P frames, after a seek
        image, found = read_frame(str(clip), k, Fraction(FPS), size)
        assert found == k
        assert np.array_equal(image, frames[k]), k


@pytest.mark.parametrize("frame", [0, 37, 99])
def test_the_mask_is_the_engines_first_mask_and_covers_the_object(clip: Path, frame: int) -> None:
    x, y = sample_object_center(frame, W, H, FPS)
    prompt = Prompt([Point(x, y, frame, 1), Point(W * 0.05, H * 0.1, frame, 0)])
    result = compute_preview(str(clip), meta_of(clip), prompt)
    assert result.frame == frame and result.mask.shape == (H, W) and result.tracking_size == (320, 180)
    # The engine's own track starts from exactly this mask on the prompted frame.
    track = track_video(clip, prompt)
    assert np.array_equal(result.small, track.small_mask(frame).astype(bool))
    assert iou(result.mask, disc(frame, W, H)) > 0.8
    body = preview_body("v1", result)
    b = body["bbox"]
    assert b["x0"] <= x < b["x1"] and b["y0"] <= y < b["y1"]
    assert body["area"] == int(result.mask.sum()) and body["found"] and body["mask"].startswith("data:image/png;base64,")
    assert body["areaFraction"] == pytest.approx(body["area"] / (W * H))


def test_a_box_alone_is_enough(clip: Path) -> None:
    x, y = sample_object_center(20, W, H, FPS)
    r = OBJECT_RADIUS + 6
    result = compute_preview(str(clip), meta_of(clip), Prompt([], Box(x - r, y - r, x + r, y + r, 20)))
    assert result.frame == 20 and iou(result.mask, disc(20, W, H)) > 0.7


def test_a_rotated_video_answers_in_display_orientation(tmp_path: Path) -> None:
    path = make_sample_clip(tmp_path / "turned.mp4", seconds=1.0, width=W, height=H, fps=FPS, audio=False, rotation=90)
    meta = meta_of(path)
    assert meta["rotation"] == 90
    x, y = sample_object_center(10, W, H, FPS)
    dx, dy = coded_to_display(x, y, 90, W, H)  # where the player shows the object
    result = compute_preview(str(path), meta, Prompt([Point(dx, dy, 10, 1)]))
    assert result.mask.shape == (W, H)  # display: H wide, W high
    assert iou(result.mask, disc(10, W, H, 90)) > 0.8


def test_prompt_problems_are_sentences() -> None:
    """The preview answers bad clicks as /segment does (`routes.clicks_problem`, one check for both)."""
    meta = {"width": W, "height": H, "rotation": 0, "frame_count": 100}

    def problem(body: dict) -> str | None:
        return clicks_problem(PreviewIn.model_validate(body), meta)

    assert problem({"points": [{"x": 10, "y": 10, "frame": 0, "label": 1}]}) is None
    assert "outside the 480x270 frame" in problem({"points": [{"x": 480, "y": 10, "frame": 0, "label": 1}]})
    assert "past the end" in problem({"points": [{"x": 10, "y": 10, "frame": 100, "label": 1}]})
    with pytest.raises(ValidationError) as e:
        PreviewIn.model_validate({"points": [{"x": 10, "y": 10, "frame": 0, "label": 0}]})
    assert "point on the object" in str(e.value)
    assert "non-empty box" in problem({"box": {"x0": 50, "y0": 50, "x1": 40, "y1": 60, "frame": 0}})
