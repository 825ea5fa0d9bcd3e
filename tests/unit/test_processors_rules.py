"""Quota, request-validation and probe rules of the processors, without Kafka."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from processors.probe import ProbeRejected, probe_video
from processors.quota import decide, month_of, output_cap, usage_key
from processors.validation import request_problem
from tapmask.samples import make_sample_clip


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def spec(job: str = "j1", tier: str = "free", at: int = 0, requested_at: int | None = None, w: int = 640, h: int = 360,
         rotation: int = 0) -> dict:
    return {"job_id": job, "owner_id": "u1", "tier": tier, "occurred_at": at, "requested_at": requested_at,
            "video": {"width": w, "height": h, "rotation": rotation}}


def test_month_boundaries_are_utc() -> None:
    assert month_of(ms(2026, 1, 31, 23, 59, 59)) == "2026-01"
    assert month_of(ms(2026, 2, 1, 0, 0, 0)) == "2026-02"
    assert month_of(ms(2026, 12, 31, 23, 59, 59)) == "2026-12" and month_of(ms(2027, 1, 1)) == "2027-01"


def test_the_month_is_when_the_user_asked_not_when_quota_ran() -> None:
    assert usage_key(spec(at=ms(2026, 2, 1, 0, 0, 5), requested_at=ms(2026, 1, 31, 23, 59, 59))) == "u1:2026-01"
    assert usage_key(spec(at=ms(2026, 2, 1, 0, 0, 5))) == "u1:2026-02"  # older specs: processing time


def test_free_limit_idempotent_and_pro_unlimited() -> None:
    used = None
    for i in range(5):
        ok, new = decide(spec(f"j{i}"), used, 5)
        assert ok and new is not None
        used = new
    assert used["count"] == 5
    assert decide(spec("j3"), used, 5) == (True, None)  # a redelivered, counted job still runs
    assert decide(spec("j9"), used, 5) == (False, None)
    assert decide(spec("j9", tier="pro"), used, 5) == (True, None)  # upgraded: unlimited, not counted
    assert decide(spec("j0"), None, 0) == (False, None)


def test_free_output_is_capped_at_1080p_and_says_so() -> None:
    assert output_cap(spec(tier="pro", w=3840, h=2160), 1080) == (None, None)
    assert output_cap(spec(w=1920, h=1080), 1080) == (1080, None)
    cap, notice = output_cap(spec(w=3840, h=2160), 1080)
    assert cap == 1080 and "1080p" in notice and "3840x2160" in notice
    cap, notice = output_cap(spec(w=3840, h=2160, rotation=90), 1080)  # portrait 4K
    assert cap == 1080 and "2160x3840" in notice


VIDEO = {"owner_id": "u1", "valid": True, "reason": None,
         "metadata": {"width": 320, "height": 180, "frame_count": 10, "rotation": 0}}


def req(**kw) -> dict:  # type: ignore[no-untyped-def]
    return {"owner_id": "u1", "mode": "blur", "points": [{"x": 10, "y": 10, "frame": 0, "label": 1}], "box": None} | kw


def test_requests_are_checked_against_the_metadata() -> None:
    assert request_problem(req(), VIDEO) is None
    assert "unknown" in request_problem(req(), None)
    assert "another user" in request_problem(req(owner_id="u2"), VIDEO)
    assert "rejected: bad" in request_problem(req(), VIDEO | {"valid": False, "reason": "bad"})
    assert "outside the 320x180" in request_problem(req(points=[{"x": 320, "y": 1, "frame": 0, "label": 1}]), VIDEO)
    assert "past the end" in request_problem(req(points=[{"x": 1, "y": 1, "frame": 10, "label": 1}]), VIDEO)
    assert "label 1" in request_problem(req(points=[{"x": 1, "y": 1, "frame": 0, "label": 0}]), VIDEO)
    assert "unknown mode" in request_problem(req(mode="sparkle"), VIDEO)
    assert "box" in request_problem(req(box={"x0": 5, "y0": 5, "x1": 400, "y1": 50, "frame": 0}), VIDEO)


def test_clicks_are_in_display_coordinates_for_rotated_video() -> None:
    rotated = VIDEO | {"metadata": VIDEO["metadata"] | {"rotation": 270}}  # shown as 180x320
    assert request_problem(req(points=[{"x": 100, "y": 300, "frame": 0, "label": 1}]), rotated) is None
    assert "outside the 180x320" in request_problem(req(points=[{"x": 300, "y": 100, "frame": 0, "label": 1}]), rotated)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    return {
        "mp4": make_sample_clip(d / "a.mp4", seconds=0.4, width=160, height=96),
        "rot": make_sample_clip(d / "r.mp4", seconds=0.4, width=160, height=96, audio=False, rotation=-90),
        "mkv": make_sample_clip(d / "w.mkv", seconds=0.4, width=160, height=96, audio_codec="libopus"),
    }


def test_probe_reads_metadata_through_a_file_object(clips: dict[str, Path]) -> None:
    with clips["mp4"].open("rb") as fh:
        meta = probe_video(fh, "mp4")
    assert (meta["width"], meta["height"], meta["frame_count"], meta["rotation"]) == (160, 96, 10, 0)
    assert (meta["fps_num"], meta["fps_den"], meta["codec"], meta["has_audio"]) == (25, 1, "h264", True)
    assert meta["duration_s"] == pytest.approx(0.4, abs=0.05)


def test_probe_reads_rotation_from_the_first_frame(clips: dict[str, Path]) -> None:
    meta = probe_video(str(clips["rot"]), "mp4")
    assert meta["rotation"] == 270 and not meta["has_audio"]


def test_probe_counts_frames_when_the_container_does_not_say(clips: dict[str, Path]) -> None:
    with clips["mkv"].open("rb") as fh:  # Matroska/WebM record no frame count
        meta = probe_video(fh, "webm")
    assert meta["frame_count"] == 10 and meta["audio_codec"] == "opus"


class Empty:
    size = 0


def test_probe_rejects_with_readable_reasons(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ProbeRejected, match="empty"):
        probe_video(Empty(), "mp4")  # type: ignore[arg-type]
    with pytest.raises(ProbeRejected, match="unsupported container 'flv'"):
        probe_video(str(clips["mp4"]), "flv")
    text = tmp_path / "t.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(ProbeRejected, match="could not be read as a video"):
        probe_video(str(text), "mp4")
    broken = tmp_path / "b.mp4"
    broken.write_bytes(clips["mp4"].read_bytes()[:64] + b"\0" * 2000)
    with pytest.raises(ProbeRejected):
        probe_video(str(broken), "mp4")
