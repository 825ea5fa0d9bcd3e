"""Clicks are in display pixels (api/README.md, "Coordinates"): the segment route checks them
against the display size (stored width and height swapped for 90/270), as the preview route,
the validation agent and the engine do."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from api.models import PreviewIn, SegmentIn
from api.routes import _check_against_metadata, clicks_problem, frame_size_for_clicks
from gpu_consumers.engine.prompts import display_size
from processors.validation import display_size as validator_display_size
from processors.validation import request_problem

STORED_W, STORED_H, FRAMES = 1280, 720, 30


def meta(rotation: int) -> dict:
    return {"width": STORED_W, "height": STORED_H, "frame_count": FRAMES, "rotation": rotation}


@pytest.mark.parametrize(("rotation", "size"), [(0, (1280, 720)), (90, (720, 1280)), (180, (1280, 720)),
                                                (270, (720, 1280)), (-90, (720, 1280))])
def test_clicks_are_checked_against_the_display_size(rotation: int, size: tuple[int, int]) -> None:
    m = meta(rotation)
    assert frame_size_for_clicks(m) == size
    # Everyone who checks or uses clicks agrees on that size.
    assert display_size(STORED_W, STORED_H, rotation) == size
    assert validator_display_size(m) == size


def test_the_segment_route_takes_display_points_and_refuses_stored_only_ones() -> None:
    m = meta(90)  # shown 720x1280
    # Inside the shown picture but past the stored height (720): accepted.
    _check_against_metadata(SegmentIn.model_validate({"videoId": "v", "points": [{"x": 700, "y": 1200}]}), m)
    _check_against_metadata(SegmentIn.model_validate(
        {"videoId": "v", "points": [{"x": 10, "y": 10}], "box": {"x0": 600, "y0": 1000, "x1": 720, "y1": 1280}}), m)
    # Inside the stored 1280x720 but outside the shown 720x1280: refused, naming the shown size.
    with pytest.raises(HTTPException) as e:
        _check_against_metadata(SegmentIn.model_validate({"videoId": "v", "points": [{"x": 1000, "y": 100}]}), m)
    assert e.value.status_code == 422 and "outside the 720x1280 frame" in e.value.detail
    with pytest.raises(HTTPException) as e:
        _check_against_metadata(SegmentIn.model_validate(
            {"videoId": "v", "points": [{"x": 10, "y": 10}], "box": {"x0": 100, "y0": 100, "x1": 1000, "y1": 200}}), m)
    assert e.value.status_code == 422 and "720x1280" in e.value.detail
    # Unrotated videos are unchanged.
    with pytest.raises(HTTPException):
        _check_against_metadata(SegmentIn.model_validate({"videoId": "v", "points": [{"x": 700, "y": 1200}]}), meta(0))


def test_the_route_the_preview_and_the_validator_agree_on_every_point() -> None:
    for rotation in (0, 90, 180, 270):
        m = meta(rotation)
        dw, dh = frame_size_for_clicks(m)
        video = {"owner_id": "u", "valid": True, "metadata": m}
        for x, y in [(0, 0), (700, 1200), (1000, 100), (1279, 719), (719, 1279), (1280, 10), (10, 1280)]:
            point = {"x": x, "y": y, "frame": 0, "label": 1}
            try:
                _check_against_metadata(SegmentIn.model_validate({"videoId": "v", "points": [point]}), m)
                route_ok = True
            except HTTPException:
                route_ok = False
            preview_ok = clicks_problem(PreviewIn.model_validate({"points": [point]}), m) is None
            req = {"owner_id": "u", "mode": "blur", "points": [point], "box": None}
            validator_ok = request_problem(req, video) is None
            assert route_ok == preview_ok == validator_ok == (x < dw and y < dh), (rotation, x, y)
