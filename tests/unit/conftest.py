"""Fixtures shared by the engine's unit tests."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_consumers.engine.video_io import VideoWriter
from gpu_consumers.engine.yuv import Yuv420


@pytest.fixture
def encoded_pictures(monkeypatch) -> list[np.ndarray]:
    """A list that gets a copy of every picture handed to the encoder during the test.

    Tests compare these pictures, not the encoded files: x264 does not always give the same
    packets for the same pictures (bench/README.md, session 7)."""
    encoded: list[np.ndarray] = []
    write_frame = VideoWriter.write_frame

    def recording(self, image, pts, index):
        encoded.append(image.to_array() if isinstance(image, Yuv420) else np.array(image))
        return write_frame(self, image, pts, index)

    monkeypatch.setattr(VideoWriter, "write_frame", recording)
    return encoded
