"""Erase, and rendering in chunks: same pictures as rendering in one go."""

from __future__ import annotations

import av
import numpy as np

from gpu_consumers.engine import EffectOptions, Point, Prompt, render_segment, join_segments, plan_chunks, track_video
from gpu_consumers.engine.render import effective_margin, iter_rendered, render_video
from gpu_consumers.engine.erase import grow_mask
from gpu_consumers.engine.video_io import VideoReader
from gpu_consumers.engine.yuv import Yuv420
from tapmask.synthetic import make_gt_clip


def _decode(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_erase_fills_with_the_background_and_chunks_change_nothing(tmp_path):
    clip = make_gt_clip(tmp_path / "b.mp4", "basic", 320, 180, 30)  # static camera
    track = track_video(clip.path, Prompt([Point(*clip.click[:2], 0)]))
    opts = EffectOptions(mode="erase")
    rendered = [img for _, _, img, _ in iter_rendered(clip.path, track, opts, 0, 30)]
    assert all(isinstance(img, Yuv420) for img in rendered)  # erased in the video's own planes
    whole = [img.to_bgr() for img in rendered]
    src = _decode(clip.path)
    for i in (5, 15, 25):
        gt = clip.masks[i]
        # The true background under the object: a frame where the object is far away.
        j = 29 if i < 15 else 0
        assert not (clip.masks[j] & gt).any()
        err = np.abs(whole[i][gt].astype(int) - src[j][gt].astype(int)).mean()
        assert err < 12, err
        # Flicker: consecutive erased frames agree inside the hole.
        assert np.abs(whole[i][gt].astype(int) - whole[i + 1][gt].astype(int)).mean() < 8
    # Samples beyond the region erase can touch keep the input's values exactly (no colour
    # round trip): luma beyond the grown, feathered mask, chroma a 2-px ring further.
    with VideoReader(clip.path, yuv=True) as reader:
        source = [f.image for f in reader.video_frames()]
    reach = effective_margin(opts.margin_px, track) + opts.feather_px + 1
    for i in (0, 10, 20):
        luma_far = grow_mask(track.full_mask(i), reach) == 0
        chroma_far = grow_mask(track.full_mask(i), reach + 2)[::2, ::2] == 0
        assert luma_far.sum() > 0.8 * luma_far.size
        assert np.array_equal(rendered[i].y[luma_far], source[i].y[luma_far])
        assert np.array_equal(rendered[i].u[chroma_far], source[i].u[chroma_far])
        assert np.array_equal(rendered[i].v[chroma_far], source[i].v[chroma_far])
        assert not np.array_equal(rendered[i].y, source[i].y)  # and the object did go
    # Frames rendered chunk by chunk are identical to frames rendered in one go.
    pieces = []
    for start, end in plan_chunks(30, 7):
        pieces += [img.to_array() for _, _, img, _ in iter_rendered(clip.path, track, opts, start, end)]
    assert len(pieces) == 30 and all(np.array_equal(a.to_array(), b) for a, b in zip(rendered, pieces))


def test_segments_rendered_out_of_order_join_to_the_one_shot_output(tmp_path):
    from tapmask.samples import make_sample_clip, sample_object_center

    src = make_sample_clip(tmp_path / "s.mp4", seconds=1.0, width=320, height=180)
    track = track_video(src, Prompt([Point(*sample_object_center(0, 320, 180, 25))]))
    opts = EffectOptions(mode="blur")
    one = tmp_path / "one.mp4"
    render_video(src, one, track, opts, tmp_path / "w1", chunk_frames=10)
    chunks = plan_chunks(len(track), 10)
    segs = [tmp_path / f"seg{k}.mp4" for k in range(len(chunks))]
    for k in reversed(range(len(chunks))):  # e.g. a redelivered job finishing the rest
        render_segment(src, track, opts, *chunks[k], segs[k])
    two = tmp_path / "two.mp4"
    assert join_segments(segs, src, two) == "copy"
    a, b = _decode(one), _decode(two)
    assert len(a) == len(b) == 25 and all(np.array_equal(x, y) for x, y in zip(a, b))
    with av.open(str(two)) as c, av.open(str(src)) as s:
        assert [f.pts for f in c.decode(video=0)] == [f.pts for f in s.decode(video=0)]
        assert c.streams.audio
