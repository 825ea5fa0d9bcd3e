"""process_video end to end on generated clips: fidelity, blur, audio, errors, cancel."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from gpu_consumers.engine import (
    EmptyVideo,
    EngineError,
    JobCancelled,
    MaskProvider,
    NoVideoStream,
    Point,
    Prompt,
    PromptOutOfRange,
    UndecodableVideo,
    UnsupportedMode,
    probe,
    process_video,
)
from gpu_consumers.engine.prompts import coded_to_display
from tapmask.samples import make_sample_clip, sample_object_center

W, H, FPS = 640, 360, 25


def _decode(path):
    """(BGR frames, pts in seconds) of the first video stream; small clips only."""
    with av.open(str(path)) as c:
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="bgr24"))
            times.append(Fraction(f.pts) * f.time_base)
        return frames, times


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_sample_clip(tmp_path_factory.mktemp("clip") / "in.mp4", seconds=2.0, width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def blurred(clip, tmp_path_factory):
    x, y = sample_object_center(0, W, H, FPS)
    out = tmp_path_factory.mktemp("out") / "out.mp4"
    calls = []
    result = process_video(clip, out, Prompt([Point(x, y)]), "blur", progress=lambda *a: calls.append(a))
    return out, result, calls, (x, y)


def test_output_keeps_size_rate_frames_timestamps_and_audio(clip, blurred):
    out, result, calls, _ = blurred
    src, dst = probe(clip), probe(out)
    assert (dst.width, dst.height, dst.fps, dst.frame_count) == (W, H, FPS, 50)
    assert (result.frames, result.width, result.height, result.fps) == (50, W, H, FPS)
    assert dst.pix_fmt == "yuv420p" and dst.codec == "h264"
    in_frames, in_times = _decode(clip)
    out_frames, out_times = _decode(out)
    assert len(out_frames) == len(in_frames) == 50
    assert out_times == in_times
    assert dst.has_audio and dst.audio_codec == "aac" and result.audio == "copy"
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        assert [bytes(p) for p in a.demux(audio=0) if p.size] == [bytes(p) for p in b.demux(audio=0) if p.size]
    assert set(result.seconds) >= {"probe", "track", "render", "total"}
    assert result.lost_frames == () and 0.5 < result.mean_confidence <= 1.0
    # Progress: tracking then processing, each from 0 to done == total, never backwards.
    stages = [c[0] for c in calls]
    assert stages[0] == "tracking" and stages[-1] == "processing"
    assert stages == sorted(stages, key=["tracking", "processing"].index)
    assert calls[0][1] == 0 and calls[-1] == ("processing", 50, 50)
    assert ("processing", 0, 50) in calls
    for stage in ("tracking", "processing"):
        done = [d / t for st, d, t in calls if st == stage]
        assert done == sorted(done) and done[-1] == 1.0


def test_far_pixels_kept_and_object_blurred(clip, blurred):
    out, _, _, _ = blurred
    in_frames, _ = _decode(clip)
    out_frames, _ = _decode(out)
    yy, xx = np.mgrid[0:H, 0:W]
    for i in (0, 25, 49):  # the disc moves; the blur follows it
        x, y = sample_object_center(i, W, H, FPS)
        far = (xx - x) ** 2 + (yy - y) ** 2 > 110**2
        assert _psnr(in_frames[i][far], out_frames[i][far]) >= 35.0
        r = 22
        box = (slice(int(y) - r, int(y) + r), slice(int(x) - r, int(x) + r))
        before, after = in_frames[i][box], out_frames[i][box]
        assert _sharpness(after) < 0.05 * _sharpness(before)
        assert np.abs(after.astype(int) - before).mean() > 15


@pytest.mark.parametrize("mode", ["pixelate", "fill"])
def test_other_modes(tmp_path, mode):
    clip = make_sample_clip(tmp_path / "in.mp4", seconds=0.4, width=320, height=180, audio=False)
    x, y = sample_object_center(0, 320, 180, 25)
    out = tmp_path / "out.mp4"
    result = process_video(clip, out, Prompt([Point(x, y)]), mode)
    assert result.frames == 10 and result.audio == "none"
    frames, _ = _decode(out)
    patch = frames[0][int(y) - 10 : int(y) + 10, int(x) - 10 : int(x) + 10].astype(int)
    if mode == "fill":
        assert patch.max() < 24  # black, give or take the codec
    else:
        assert _sharpness(patch.astype(np.uint8)) < 0.2 * _sharpness(_decode(clip)[0][0][int(y) - 10 : int(y) + 10, int(x) - 10 : int(x) + 10])


def test_rotated_input_keeps_rotation_and_uses_display_coordinates(tmp_path):
    clip = make_sample_clip(tmp_path / "in.mp4", seconds=0.4, width=320, height=180, audio=False, rotation=-90)
    info = probe(clip)
    assert info.rotation == -90 and (info.display_width, info.display_height) == (180, 320)
    cx, cy = sample_object_center(0, 320, 180, 25)  # where the disc is in the stored pixels
    dx, dy = coded_to_display(cx, cy, -90, 320, 180)  # where the user sees and clicks it
    out = tmp_path / "out.mp4"
    process_video(clip, out, Prompt([Point(dx, dy)]), "fill")
    assert probe(out).rotation == -90
    frames, _ = _decode(out)
    assert (frames[0].shape[1], frames[0].shape[0]) == (320, 180)
    assert frames[0][int(cy) - 8 : int(cy) + 8, int(cx) - 8 : int(cx) + 8].max() < 24


def _audio_only(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, i * 1024
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def test_bad_inputs_raise_readable_engine_errors(tmp_path, clip):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = _audio_only(tmp_path / "sound.m4a")
    cases = [
        (text, UndecodableVideo),
        (empty, EmptyVideo),
        (audio, NoVideoStream),
        (tmp_path / "missing.mp4", UndecodableVideo),
    ]
    for path, error in cases:
        out = tmp_path / f"out_{path.stem}.mp4"
        with pytest.raises(error) as exc:
            process_video(path, out, Prompt([Point(10, 10)]), "blur")
        assert path.name in str(exc.value) and "Errno" not in str(exc.value)
        assert not out.exists()


def test_bad_prompts_and_modes(tmp_path, clip):
    out = tmp_path / "out.mp4"
    with pytest.raises(PromptOutOfRange, match="outside"):
        process_video(clip, out, Prompt([Point(W + 5, 10)]), "blur")
    with pytest.raises(PromptOutOfRange, match="50 frames"):
        process_video(clip, out, Prompt([Point(10, 10, frame=50)]), "blur")
    with pytest.raises(UnsupportedMode, match="Unknown mode"):
        process_video(clip, out, Prompt([Point(10, 10)]), "sparkle")
    assert not out.exists()


def test_cancel_stops_and_removes_the_partial_output(tmp_path, clip):
    out = tmp_path / "out.mp4"
    polls = []

    def should_cancel() -> bool:
        polls.append(1)
        return len(polls) > 5

    with pytest.raises(JobCancelled) as exc:
        process_video(clip, out, Prompt([Point(100, 100)]), "blur", should_cancel=should_cancel)
    assert isinstance(exc.value, EngineError) and "cancelled" in str(exc.value)
    # Cancelled at the first True; the tracker and the renderer poll in their own threads,
    # so the other one may poll once more (and get True too) before it stops.
    assert 6 <= len(polls) <= 7 and not out.exists()


class _FollowingMasker(MaskProvider):
    """Test double for a real tracker: knows where the sample disc is on every frame."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.closed = False

    def prepare(self, info, prompt) -> None:
        self.size = (info.width, info.height)
        self.fps = info.fps

    def mask_for(self, frame_index, frame_bgr):
        self.calls.append(frame_index)
        mask = np.zeros(frame_bgr.shape[:2], np.uint8)
        x, y = sample_object_center(frame_index, *self.size, self.fps)
        cv2.circle(mask, (int(x), int(y)), 32, 255, -1)
        return mask, 0.9

    def close(self) -> None:
        self.closed = True


def test_a_custom_mask_provider_is_driven_frame_by_frame(tmp_path):
    clip = make_sample_clip(tmp_path / "in.mp4", seconds=0.8, width=320, height=180, audio=False)
    masker = _FollowingMasker()
    out = tmp_path / "out.mp4"
    process_video(clip, out, Prompt([Point(*sample_object_center(0, 320, 180, 25))]), "fill", masker=masker)
    assert masker.calls == list(range(20)) and masker.closed
    frames, _ = _decode(out)
    x, y = sample_object_center(19, 320, 180, 25)  # the disc has moved; the mask followed it
    assert frames[19][int(y) - 8 : int(y) + 8, int(x) - 8 : int(x) + 8].max() < 24


def test_same_input_and_output_path_is_refused(clip):
    with pytest.raises(EngineError, match="must not be the input"):
        process_video(clip, clip, Prompt([Point(10, 10)]), "blur")
    assert probe(clip).frame_count == 50


def test_rendering_from_the_live_track_gives_the_same_frames_as_after_tracking(tmp_path):
    """process_video renders while the tracker runs (LiveTrack): every frame must be the one
    the two passes give, including frames where the object is lost (published last)."""
    import threading

    from gpu_consumers.engine import ClassicTracker
    from gpu_consumers.engine.livetrack import LiveTrack
    from gpu_consumers.engine.render import EffectOptions, iter_rendered
    from tapmask.synthetic import make_gt_clip

    clip = make_gt_clip(tmp_path / "occ.mp4", "occlusion", 160, 96, 40)
    info = probe(clip.path)
    x, y, f = clip.click
    feed = LiveTrack(info.width, info.height)
    box = {}
    thread = threading.Thread(target=lambda: box.update(track=ClassicTracker(camera_motion=False).track(
        clip.path, info, Prompt([Point(x, y, f)]), feed=feed)))
    thread.start()
    live = [img for _, _, img, _ in iter_rendered(clip.path, feed, EffectOptions(), 0, 40, info)]
    thread.join()
    track = box["track"]
    assert track.lost_frames(), "the clip must have lost frames (published only at the end)"
    after = [img for _, _, img, _ in iter_rendered(clip.path, track, EffectOptions(), 0, 40, info)]
    assert len(live) == len(after) == 40
    assert all(np.array_equal(a.to_array(), b.to_array()) for a, b in zip(live, after))


def test_a_tracker_failure_while_rendering_is_raised_and_leaves_no_output(tmp_path):
    from gpu_consumers.engine import ClassicTracker

    class Failing(ClassicTracker):
        def track(self, *args, feed=None, **kwargs):
            feed.start([None] * 10)
            raise EngineError("tracker broke")

    clip = make_sample_clip(tmp_path / "in.mp4", seconds=0.4, width=160, height=96, audio=False)
    out = tmp_path / "out.mp4"
    x, y = sample_object_center(0, 160, 96, FPS)
    with pytest.raises(EngineError, match="tracker broke"):
        process_video(clip, out, Prompt([Point(x, y)]), "blur", tracker=Failing())
    assert not out.exists()


@pytest.mark.parametrize(("size", "mask_size", "asked", "expected"), [
    ((640, 360), (320, 180), 8, 10),     # tracked at half size: 5 tracking px = 10 px
    ((1280, 720), (320, 180), 8, 20),    # a tracking pixel is 4 output pixels
    ((1920, 1080), (320, 180), 8, 30),
    ((1280, 720), (320, 180), 40, 40),   # a larger margin asked for is kept
    ((640, 360), (640, 360), 8, 8),      # a full-resolution tracker (mask provider)
])
def test_the_margin_is_never_below_the_trackers_edge_uncertainty(size, mask_size, asked, expected):
    from gpu_consumers.engine.masktrack import MaskTrack, encode_mask
    from gpu_consumers.engine.render import effective_margin

    mask = np.zeros(mask_size[::-1], np.uint8)
    track = MaskTrack(*size, *mask_size, [encode_mask(mask)], [1.0], [False])
    assert effective_margin(asked, track) == expected


def test_rendering_grows_the_mask_by_the_effective_margin(tmp_path):
    """At 1280x720 (tracked at 320x180) a pixel 15 px beyond the mask is blurred: the 8 px
    asked for would leave it untouched."""
    from gpu_consumers.engine.masktrack import MaskTrack, encode_mask
    from gpu_consumers.engine.render import EffectOptions, iter_rendered
    from gpu_consumers.engine.video_io import VideoReader

    clip = make_sample_clip(tmp_path / "hd.mp4", seconds=0.12, width=1280, height=720, audio=False)
    small = np.zeros((180, 320), np.uint8)
    small[80:100, 150:170] = 255  # full-res x 600..679, y 320..399
    n = probe(clip).frame_count
    track = MaskTrack(1280, 720, 320, 180, [encode_mask(small)] * n, [1.0] * n, [False] * n)
    opts = EffectOptions(mode="fill", margin_px=8, feather_px=0, fill_color_bgr=(255, 0, 255))
    with VideoReader(clip, yuv=True) as reader:
        original = next(reader.video_frames()).image
    _, _, out, _ = next(iter_rendered(clip, track, opts, 0, 1))
    assert np.abs(out.to_bgr()[360, 679 + 15].astype(int) - (255, 0, 255)).max() <= 3  # within 20 px: filled
    assert out.y[360, 679 + 30] == original.y[360, 679 + 30]  # beyond 20 + feather: untouched
    assert np.array_equal(out.u[180, (679 + 30) // 2:], original.u[180, (679 + 30) // 2:])


class _RecordingLiveTrack:
    """Wraps a `LiveTrack`; records the order of the tracker's `publish` and `start` calls."""

    def __init__(self, feed):
        self.feed, self.calls = feed, []

    def start(self, pts):
        self.calls.append(("start", len(pts)))
        self.feed.start(pts)

    def publish(self, upto, masks, motions=None, pts=None):
        self.calls.append(("publish", upto))
        self.feed.publish(upto, masks, motions, pts)


@pytest.mark.parametrize("click_frame", [0, 12])
def test_the_tracker_publishes_masks_and_pts_before_it_has_decoded_the_video(tmp_path, click_frame):
    """ClassicTracker decodes frames as its forward pass reaches them, so rendering can
    start before the video's length is known: masks up to the clicked frame come first,
    then one frame at a time, and the count (`start`) only once every frame is decoded."""
    from gpu_consumers.engine import ClassicTracker
    from gpu_consumers.engine.livetrack import LiveTrack
    from tapmask.synthetic import make_gt_clip

    clip = make_gt_clip(tmp_path / "basic.mp4", "basic", 160, 96, 30)
    info = probe(clip.path)
    ys, xs = np.nonzero(clip.masks[click_frame])
    feed = LiveTrack(info.width, info.height)
    rec = _RecordingLiveTrack(feed)
    track = ClassicTracker(camera_motion=False).track(
        clip.path, info, Prompt([Point(float(np.median(xs)), float(np.median(ys)), click_frame)]), feed=rec)
    assert not track.lost_frames()
    starts = [i for i, c in enumerate(rec.calls) if c[0] == "start"]
    assert len(starts) == 1 and rec.calls[starts[0]] == ("start", 30)
    before = [c[1] for c in rec.calls[:starts[0]] if c[0] == "publish"]
    assert before and before[0] == click_frame + 1, rec.calls
    assert before == list(range(click_frame + 1, click_frame + 1 + len(before)))  # one frame at a time
    assert before[-1] == 30  # every mask was published before the end of the video was found
    assert feed.pts == track.pts and len(feed) == 30
    assert all(np.array_equal(feed.full_mask(i), track.full_mask(i)) for i in range(30))


def test_render_video_plans_the_same_chunks_from_a_live_track(tmp_path, monkeypatch):
    """render_video renders `plan_chunks(len(track))`'s chunks from a LiveTrack whose length
    is known only at the end, as from the finished track."""
    import threading

    from gpu_consumers.engine import ClassicTracker, render
    from gpu_consumers.engine.livetrack import LiveTrack
    from gpu_consumers.engine.render import EffectOptions, plan_chunks, render_video
    from tapmask.synthetic import make_gt_clip

    clip = make_gt_clip(tmp_path / "basic.mp4", "basic", 160, 96, 40)
    info = probe(clip.path)
    x, y, f = clip.click
    chunks: list[tuple[int, int, int]] = []
    real = render._encode_segment

    def recording(in_path, track, options, start, end, out_path, *args, **kw):
        written, mode = real(in_path, track, options, start, end, out_path, *args, **kw)
        chunks.append((start, end, written))
        return written, mode

    monkeypatch.setattr(render, "_encode_segment", recording)
    feed = LiveTrack(info.width, info.height)
    box = {}
    thread = threading.Thread(target=lambda: box.update(track=ClassicTracker(camera_motion=False).track(
        clip.path, info, Prompt([Point(x, y, f)]), feed=feed)))
    thread.start()
    frames, _ = render_video(clip.path, tmp_path / "live.mp4", feed, EffectOptions(), tmp_path / "w1", chunk_frames=16, info=info)
    thread.join()
    live_chunks, chunks[:] = list(chunks), []
    render_video(clip.path, tmp_path / "after.mp4", box["track"], EffectOptions(), tmp_path / "w2", chunk_frames=16, info=info)
    expected = [(s, s + 16, e - s) for s, e in plan_chunks(40, 16)]
    assert frames == 40 and live_chunks == chunks == expected
    assert len(_decode(tmp_path / "live.mp4")[0]) == 40


@pytest.mark.parametrize(("name", "codec", "mode"), [("aac.mp4", "aac", "copy"), ("pcm.mkv", "pcm_s16le", "transcode")])
def test_one_segment_written_with_its_audio_equals_a_joined_segment(tmp_path, name, codec, mode):
    """A video of one chunk is written with its audio straight away (no join): what joining
    gives - joining the file's own video adds or moves nothing, it matches the segment
    rendered and joined, and the whole audio track is there, as in a many-chunk run."""
    from gpu_consumers.engine import EffectOptions, join_segments, render_segment, track_video

    src = make_sample_clip(tmp_path / name, seconds=0.8, width=160, height=96, audio_codec=codec)
    prompt = Prompt([Point(*sample_object_center(0, 160, 96, 25))])
    direct, rejoined, joined, many = (tmp_path / f"{n}.mp4" for n in ("direct", "rejoined", "joined", "many"))
    result = process_video(src, direct, prompt, "blur")  # 20 frames: one chunk
    assert join_segments([direct], src, rejoined) == result.audio == mode
    track = track_video(src, prompt)
    assert render_segment(src, track, EffectOptions(), 0, 20, tmp_path / "seg.mp4") == 20
    assert join_segments([tmp_path / "seg.mp4"], src, joined) == mode
    assert process_video(src, many, prompt, "blur", chunk_frames=6).audio == mode  # 4 segments

    def packets(path, kind):
        with av.open(str(path)) as c:
            return [(p.pts, p.is_keyframe, bytes(p)) for p in c.demux(**{kind: 0}) if p.size]

    # The same packets as joining the file's own video (no encoding: exact) ...
    assert packets(direct, "video") == packets(rejoined, "video")
    assert packets(direct, "audio") == packets(rejoined, "audio") == packets(joined, "audio") == packets(many, "audio")
    # ... and as the segment joined, encoded separately: the same frames and timestamps (the
    # same bits, unless x264's slice threads happen to differ under load: then 55 dB apart).
    assert [p[:2] for p in packets(direct, "video")] == [p[:2] for p in packets(joined, "video")]
    (direct_frames, direct_times), (joined_frames, joined_times) = _decode(direct), _decode(joined)
    assert direct_times == joined_times == _decode(src)[1] and len(direct_frames) == 20
    assert min(_psnr(a, b) for a, b in zip(direct_frames, joined_frames)) > 45.0
    if mode == "copy":  # every packet of the input's track, to the last
        assert [p[2] for p in packets(direct, "audio")] == [p[2] for p in packets(src, "audio")]
    with av.open(str(direct)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples == pytest.approx(0.8 * 48000, rel=0.1)
