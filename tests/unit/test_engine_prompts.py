"""Prompt validation, rotation mapping and the FixedRegionMasker stand-in."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gpu_consumers.engine.errors import InvalidPrompt, PromptOutOfRange
from gpu_consumers.engine.masks import FixedRegionMasker
from gpu_consumers.engine.pipeline import validate_prompt
from gpu_consumers.engine.prompts import Box, Point, Prompt, coded_to_display, display_to_coded
from gpu_consumers.engine.video_io import VideoInfo


def _info(width=64, height=48, frames=10, rotation=0) -> VideoInfo:
    return VideoInfo(
        path=Path("x.mp4"), width=width, height=height, fps=Fraction(25), frame_count=frames,
        duration_s=frames / 25, codec="h264", pix_fmt="yuv420p", rotation=rotation,
        time_base=Fraction(1, 12800), has_audio=False, audio_codec=None,
    )


@pytest.mark.parametrize("rotation", [0, 90, 180, -90, 270, -180])
def test_display_mapping_agrees_with_rot90(rotation):
    h, w = 5, 7
    coded = np.arange(h * w).reshape(h, w)
    display = np.rot90(coded, rotation // 90)
    for row in range(display.shape[0]):
        for col in range(display.shape[1]):
            cx, cy = display_to_coded(col + 0.5, row + 0.5, rotation, w, h)
            assert coded[int(cy), int(cx)] == display[row, col]
            assert coded_to_display(cx, cy, rotation, w, h) == pytest.approx((col + 0.5, row + 0.5))


def test_validate_prompt_checks_range_and_maps_rotation():
    info = _info(rotation=-90)  # stored 64x48, shown 48x64
    assert (info.display_width, info.display_height) == (48, 64)
    coded = validate_prompt(Prompt([Point(10, 60, frame=9)]), info)
    assert (coded.points[0].x, coded.points[0].y) == display_to_coded(10, 60, -90, 64, 48)

    bad = [
        Prompt([Point(50, 10)]),  # x beyond the displayed width (48)
        Prompt([Point(-1, 10)]),
        Prompt([Point(float("nan"), 10)]),
        Prompt([Point(10, 10, frame=10)]),  # frames are 0..9
        Prompt([Point(10, 10, frame=-1)]),
        Prompt([Point(10, 10)], box=Box(0, 0, 60, 10)),
    ]
    for prompt in bad:
        with pytest.raises(PromptOutOfRange):
            validate_prompt(prompt, info)
    with pytest.raises(InvalidPrompt):
        validate_prompt(Prompt([Point(5, 5, label=0)]), info)  # only a negative point
    with pytest.raises(PromptOutOfRange) as exc:
        validate_prompt(Prompt([Point(10, 10, frame=12)]), info)
    assert "10 frames" in str(exc.value)


def test_fixed_region_masker_is_a_clipped_disc_on_every_frame():
    masker = FixedRegionMasker(radius_px=20)
    masker.prepare(_info(), Prompt([Point(5, 40)]))
    frame = np.zeros((48, 64, 3), np.uint8)
    m0, c0 = masker.mask_for(0, frame)
    m9, _ = masker.mask_for(9, frame)
    assert m0.shape == (48, 64) and m0.dtype == np.uint8 and set(np.unique(m0)) == {0, 255}
    assert np.array_equal(m0, m9) and c0 == 1.0
    assert m0[40, 5] == 255 and m0[40, 24] == 255 and m0[40, 27] == 0 and m0[10, 5] == 0


def test_fixed_region_masker_uses_the_box_without_points():
    masker = FixedRegionMasker()
    masker.prepare(_info(), Prompt(box=Box(10, 10, 20, 30)))
    mask, _ = masker.mask_for(0, np.zeros((48, 64, 3), np.uint8))
    assert mask[15, 15] == 255 and mask[5, 5] == 0
    with pytest.raises(InvalidPrompt):
        FixedRegionMasker().prepare(_info(), Prompt([]))
