"""The job-state rules of the status agent, on hand-made and on random event orders."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.status_fold import STAGE_ORDER, TERMINAL, fold, notifications

_ids = itertools.count()


def ev(kind: str, at: int = 0, **fields):  # type: ignore[no-untyped-def]
    base = {"event_id": f"e{next(_ids)}", "occurred_at": at, "job_id": "j1"}
    if kind == "requested":
        base |= {"video_id": "v1", "owner_id": "u1", "mode": "blur"}
    elif kind == "progress":
        base |= {"attempt": 1, "state": "processing", "percent": 10.0, "frames_done": 1, "frames_total": 10}
    elif kind == "completed":
        base |= {"attempt": 1, "outcome": "complete", "owner_id": "u1", "video_id": "v1", "output_bucket": "b",
                 "output_key": "outputs/j1/output.mp4", "frames": 10}
    return kind, base | fields


def run(events):  # type: ignore[no-untyped-def]
    snap = None
    for kind, e in events:
        new = fold(snap, kind, e)
        snap = new if new is not None else snap
    return snap


def test_happy_path() -> None:
    snap = run([ev("requested"), ev("progress", 1, percent=50.0), ev("completed", 2)])
    assert snap["state"] == "complete" and snap["percent"] == 100.0 and snap["output_key"] == "outputs/j1/output.mp4"


def test_terminal_is_final_and_duplicates_count_once() -> None:
    done = ev("completed", 5)
    snap = run([ev("requested"), done])
    assert fold(snap, *done) is None  # same event again
    assert fold(snap, *ev("completed", 6, outcome="failed", error="x")) is None
    assert fold(snap, *ev("progress", 7, percent=99.0)) is None


def test_progress_never_goes_backwards_within_an_attempt() -> None:
    snap = run([ev("requested"), ev("progress", 1, percent=60.0, state="processing")])
    assert fold(snap, *ev("progress", 2, percent=30.0, state="processing")) is None
    assert fold(snap, *ev("progress", 2, percent=70.0, state="tracking")) is None  # an earlier stage


def test_a_new_attempt_restarts_progress_and_old_attempts_are_ignored() -> None:
    snap = run([ev("requested"), ev("progress", 1, percent=60.0), ev("progress", 2, state="interrupted", percent=60.0)])
    assert snap["state"] == "interrupted"
    assert fold(snap, *ev("progress", 3, percent=80.0)) is None  # straggler of the interrupted attempt
    snap = fold(snap, *ev("progress", 4, attempt=2, percent=5.0))
    assert snap["attempt"] == 2 and snap["percent"] == 5.0
    assert fold(snap, *ev("progress", 5, attempt=1, percent=90.0)) is None


def test_a_failure_keeps_its_reason() -> None:
    snap = run([ev("requested"), ev("completed", 1, outcome="failed", error_code="engine_error", error="no video stream")])
    assert snap["state"] == "failed" and snap["error"] == "no video stream"


event_strategy = st.one_of(
    st.builds(lambda a, p, s, t: ev("progress", t, attempt=a, percent=p, state=s),
              st.integers(1, 3), st.floats(0, 100), st.sampled_from(sorted(STAGE_ORDER) + ["interrupted"]), st.integers(0, 100)),
    st.builds(lambda t, cap: ev("progress", t, state="queued", percent=0.0, max_output_height=cap, message=cap and "capped"),
              st.integers(0, 100), st.sampled_from([None, 1080])),
    st.builds(lambda t: ev("requested", t), st.integers(0, 100)),
    st.builds(lambda a, o, t: ev("completed", t, attempt=a, outcome=o), st.integers(1, 3), st.sampled_from(["complete", "failed"]), st.integers(0, 100)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event_strategy, max_size=25), st.randoms())
def test_invariants_hold_for_any_order_with_duplicates(events, rnd) -> None:  # type: ignore[no-untyped-def]
    stream = events + [rnd.choice(events) for _ in range(len(events) // 2)] if events else []
    rnd.shuffle(stream)
    snap = None
    for kind, e in stream:
        new = fold(snap, kind, e)
        if snap is not None and snap["state"] in TERMINAL:
            assert new is None, "a terminal state changed"
        if new is not None and snap is not None:
            assert new["attempt"] >= snap["attempt"], "attempt went backwards"
            if new["attempt"] == snap["attempt"] and snap["state"] != "interrupted" and new["state"] not in TERMINAL:
                assert new["percent"] >= snap["percent"], "progress went backwards within an attempt"
        snap = new if new is not None else snap
    if snap is not None:
        once_more = [fold(snap, kind, e) for kind, e in stream]
        assert all(x is None for x in once_more), "replaying seen events changed the snapshot"


def test_queued_marker_records_the_cap_without_moving_state_back() -> None:
    snap = run([ev("requested"), ev("progress", 1, percent=20.0, state="tracking")])
    snap = fold(snap, *ev("progress", 2, state="queued", percent=0.0, max_output_height=1080, message="capped at 1080p"))
    assert snap["state"] == "tracking" and snap["percent"] == 20.0
    assert snap["queued_at"] == 2 and snap["max_output_height"] == 1080 and snap["notice"] == "capped at 1080p"
    assert fold(snap, *ev("progress", 3, state="queued", percent=0.0)) is None  # once


def test_old_snapshots_without_new_fields_still_fold() -> None:
    snap = run([ev("requested")])
    for k in ("queued_at", "max_output_height", "notice"):
        del snap[k]
    assert fold(snap, *ev("progress", 1, state="queued", percent=0.0))["queued_at"] == 1


def test_notifications_for_start_interruption_restart_and_end() -> None:
    kinds = []
    snap = None
    for kind, e in [ev("requested"), ev("progress", 1, state="queued", percent=0.0), ev("progress", 2, state="extracting"),
                    ev("progress", 3, state="processing", percent=50.0), ev("progress", 4, state="interrupted", percent=50.0),
                    ev("progress", 5, attempt=2, state="extracting", percent=1.0), ev("completed", 6, attempt=2)]:
        new = fold(snap, kind, e)
        if new is not None:
            kinds += notifications(snap, new)
            snap = new
    assert kinds == [("job.started", "j1:job.started:1"), ("job.interrupted", "j1:job.interrupted:1"),
                     ("job.started", "j1:job.started:2"), ("job.completed", "j1:job.completed")]


@settings(max_examples=300, deadline=None)
@given(st.lists(event_strategy, max_size=25), st.randoms())
def test_each_notification_goes_out_at_most_once(events, rnd) -> None:  # type: ignore[no-untyped-def]
    stream = events + [rnd.choice(events) for _ in range(len(events) // 2)] if events else []
    rnd.shuffle(stream)
    snap, sent = None, []
    for kind, e in stream:
        new = fold(snap, kind, e)
        if new is not None:
            sent += [key for _, key in notifications(snap, new)]
            snap = new
    assert len(sent) == len(set(sent)), "a notification id was produced twice"
    assert sum(1 for k in sent if k.endswith((":job.completed", ":job.failed"))) <= 1
