"""The sample clip generator: deterministic, decodable, object where it says."""

from __future__ import annotations

import av
import numpy as np

from tapmask.samples import OBJECT_RADIUS, make_sample_clip, sample_object_center


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_clip_properties_and_object_position(tmp_path):
    path = make_sample_clip(tmp_path / "s.mp4", seconds=1.0, width=320, height=180, fps=25)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.width, v.height, v.format.name) == ("h264", 320, 180, "yuv420p")
        assert v.average_rate == 25
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    frames = _frames(path)
    assert len(frames) == 25
    for i in (0, 12, 24):
        x, y = sample_object_center(i, 320, 180, 25)
        assert OBJECT_RADIUS <= x <= 320 - OBJECT_RADIUS and OBJECT_RADIUS <= y <= 180 - OBJECT_RADIUS
        centre = frames[i][int(y) - 5 : int(y) + 5, int(x) - 5 : int(x) + 5].astype(float)
        # The disc is bright (red+green high) and far from the background's colours.
        assert centre[..., 1:].mean() > 180


def test_clip_is_deterministic_and_moves(tmp_path):
    a = _frames(make_sample_clip(tmp_path / "a.mp4", seconds=0.4, width=160, height=96, audio=False))
    b = _frames(make_sample_clip(tmp_path / "b.mp4", seconds=0.4, width=160, height=96, audio=False))
    assert len(a) == len(b) == 10
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sample_object_center(0, 160, 96, 25) != sample_object_center(9, 160, 96, 25)
