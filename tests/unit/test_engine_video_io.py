"""probe, and the VideoReader -> VideoWriter round trip on unusual inputs."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from gpu_consumers.engine import Point, Prompt, probe, process_video
from gpu_consumers.engine.video_io import DecodedFrame, VideoReader, VideoWriter
from tapmask.samples import make_sample_clip


def _copy(src, dst):
    """Decode and re-encode without any effect; returns the writer's audio mode."""
    with VideoReader(src) as reader, VideoWriter(dst, reader.info, reader.audio_stream) as writer:
        for item in reader:
            if isinstance(item, DecodedFrame):
                writer.write_frame(item.image, item.pts, item.index)
            else:
                writer.write_audio(item)
        return writer.audio_mode


def _pts_seconds(path):
    with av.open(str(path)) as c:
        return [Fraction(f.pts) * f.time_base for f in c.decode(video=0)]


def test_probe_sample(tmp_path):
    info = probe(make_sample_clip(tmp_path / "a.mp4", seconds=1.0, width=320, height=180))
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 180, 25, 25)
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert (info.codec, info.pix_fmt, info.rotation) == ("h264", "yuv420p", 0)
    assert info.has_audio and info.audio_codec == "aac"


@pytest.mark.parametrize(
    ("name", "codec", "mode", "out_codec"),
    [("pcm.mkv", "pcm_s16le", "transcode", "aac"), ("opus.mp4", "libopus", "copy", "opus"), ("flac.mkv", "flac", "transcode", "aac")],
)
def test_audio_is_copied_or_transcoded(tmp_path, name, codec, mode, out_codec):
    src = make_sample_clip(tmp_path / name, seconds=0.6, width=160, height=96, audio_codec=codec)
    info = probe(src)
    assert info.frame_count == 15  # counted from packets when the container (mkv) has no count
    dst = tmp_path / "out.mp4"
    assert _copy(src, dst) == mode
    out = probe(dst)
    assert out.audio_codec == out_codec and out.frame_count == 15
    with av.open(str(dst)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples == pytest.approx(0.6 * 48000, rel=0.1)


def test_odd_size_is_kept_with_yuv444(tmp_path):
    src = make_sample_clip(tmp_path / "odd.mp4", seconds=0.4, width=161, height=97, audio=False)
    dst = tmp_path / "out.mp4"
    process_video(src, dst, Prompt([Point(40, 40)]), "blur")
    out = probe(dst)
    assert (out.width, out.height, out.pix_fmt, out.frame_count) == (161, 97, "yuv444p", 10)


def test_variable_frame_rate_timestamps_survive(tmp_path):
    src = tmp_path / "vfr.mkv"
    pts = [0, 1, 2, 5, 6, 9, 10, 14]
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="bgr24")
            f.pts, f.time_base = p, Fraction(1, 25)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    dst = tmp_path / "out.mp4"
    _copy(src, dst)
    assert _pts_seconds(dst) == _pts_seconds(src) == [Fraction(p, 25) for p in pts]


def test_colour_tags_and_full_range_round_trip(tmp_path):
    src = tmp_path / "full.mp4"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25, options={"crf": "10"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        cc = v.codec_context
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 2, 1, 1, 1  # full, BT.709
        ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
        image = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 200)], -1)  # colourful
        image[:16] = ramp[:16, :, None]  # grey ramp: black to white
        for i in range(3):
            f = av.VideoFrame.from_ndarray(image, format="bgr24")
            f = f.reformat(format="yuv420p", dst_colorspace=1, dst_color_range=2)
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    info = probe(src)
    assert (info.color_range, info.colorspace, info.color_primaries, info.color_trc) == (2, 1, 1, 1)
    dst = tmp_path / "out.mp4"
    _copy(src, dst)
    out = probe(dst)
    assert (out.color_range, out.colorspace, out.color_primaries, out.color_trc) == (2, 1, 1, 1)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        ya = next(a.decode(video=0)).to_ndarray().astype(int)  # Y, U, V planes as stored
        yb = next(b.decode(video=0)).to_ndarray().astype(int)
    assert ya[:16].min() < 10 and ya[:16].max() > 245  # full range really used
    assert np.abs(ya - yb).mean() < 2.5  # a wrong matrix or range gives ~6.5


def test_output_is_fast_start(tmp_path):
    src = make_sample_clip(tmp_path / "a.mp4", seconds=0.4, width=160, height=96, audio=False)
    dst = tmp_path / "out.mp4"
    _copy(src, dst)
    data = dst.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("size", [(320, 180), (322, 182)])  # 182 / 2 is odd: plane layout edge case
def test_small_frames_for_tracking_match_a_resized_decode(tmp_path, size):
    import cv2

    clip = make_sample_clip(tmp_path / "s.mp4", seconds=0.2, width=size[0], height=size[1], audio=False)
    small = (size[0] // 2, size[1] // 2)
    with VideoReader(clip) as r:
        a = [f.image.copy() for f in r.video_frames(size=small)]
    with VideoReader(clip) as r:
        b = [cv2.resize(f.image, small, interpolation=cv2.INTER_AREA) for f in r.video_frames()]
    assert len(a) == len(b) == 5 and a[0].shape == (small[1], small[0], 3)
    assert all(np.abs(x.astype(int) - y).mean() < 12 for x, y in zip(a, b))


def test_video_frames_from_a_later_frame_with_only_the_pts_known_so_far(tmp_path):
    """Rendering from a live track seeks with the pts published so far: frames past the
    known ones are still yielded, with the indices and pictures of a full pass."""
    src = make_sample_clip(tmp_path / "a.mp4", seconds=3.0, width=160, height=96)
    with VideoReader(src) as r:
        full = [(f.index, f.pts, f.image.copy()) for f in r.video_frames()]
    pts = [p for _, p, _ in full]
    for known in (len(pts), 31):
        with VideoReader(src) as r:
            got = [(f.index, f.pts, f.image.copy()) for f in r.video_frames(30, pts[:known])]
        assert [i for i, _, _ in got] == list(range(30, len(full)))
        assert [p for _, p, _ in got] == pts[30:]
        assert all(np.array_equal(a[2], b[2]) for a, b in zip(got, full[30:]))
