"""The rules of job state, as pure functions: fold an event into a job's snapshot, and say
which notifications a change of snapshot deserves.

The status agent is the only writer of the compacted status topic and applies these rules:
terminal states never change, progress never goes backwards within an attempt, a newer
attempt supersedes an older one, and duplicates (same event id) or late events change
nothing. Kept free of Kafka so it can be tested on any order of events.

Event kinds: ``requested`` (segment.requested), ``progress`` (job.progress; its state
``queued`` comes from the quota agent when the job enters the GPU queue, ``interrupted`` from
a GPU consumer losing its spot instance) and ``completed`` (job.completed).
"""

from __future__ import annotations

from typing import Any

TERMINAL = frozenset({"complete", "failed"})
# Forward order of the working stages; "interrupted" ends an attempt without being terminal.
STAGE_ORDER = {"queued": 0, "validating": 1, "extracting": 2, "tracking": 3, "processing": 4, "encoding": 5}
RECENT_IDS = 32  # event ids kept per job for de-duplication


def _base(job_id: str, at: int) -> dict[str, Any]:
    return {
        "job_id": job_id, "video_id": "", "owner_id": "", "state": "queued", "percent": 0.0,
        "frames_done": 0, "frames_total": 0, "attempt": 1, "mode": "", "error_code": None,
        "error": None, "output_bucket": None, "output_key": None, "masks_key": None,
        "created_at": at, "updated_at": at, "seen_event_ids": [],
        "queued_at": None, "max_output_height": None, "notice": None,
    }


def fold(snapshot: dict[str, Any] | None, kind: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The job's new snapshot after ``event`` of ``kind`` (requested | progress | completed),
    or None when the event changes nothing (duplicate, late, or illegal transition)."""
    if snapshot is not None and event["event_id"] in snapshot["seen_event_ids"]:
        return None
    # Older snapshots lack newer fields: fill them from the base.
    snap = _base(event["job_id"], event["occurred_at"]) | (dict(snapshot) if snapshot is not None else {})
    if kind == "requested":
        if snapshot is not None and snapshot["owner_id"]:
            return None  # a duplicate request for a job already known
        snap.update(video_id=event["video_id"], owner_id=event["owner_id"], mode=event["mode"],
                    created_at=min(snap["created_at"], event["occurred_at"]))
    elif kind == "progress" and event["state"] == "queued":
        # Quota put the job on the GPU queue. It may arrive after the GPU consumer's first
        # progress (different producers): record when and the tier's cap, never move back.
        if snap["state"] in TERMINAL or snap["queued_at"] is not None or event["attempt"] < snap["attempt"]:
            return None
        snap.update(queued_at=event["occurred_at"], max_output_height=event.get("max_output_height"),
                    notice=event.get("message") or snap.get("notice"))
    elif kind == "progress":
        if not _progress_applies(snap, event):
            return None
        if event["attempt"] > snap["attempt"]:
            snap.update(percent=0.0, frames_done=0)
        # An interruption may report less than the attempt reached: keep the high-water mark.
        snap.update(state=event["state"], attempt=event["attempt"],
                    percent=max(snap["percent"], max(0.0, min(100.0, float(event["percent"])))),
                    frames_done=max(snap["frames_done"], event["frames_done"]), frames_total=event["frames_total"])
    elif kind == "completed":
        if snap["state"] in TERMINAL:
            return None  # a duplicate completion counts once
        complete = event["outcome"] == "complete"
        snap.update(state="complete" if complete else "failed", attempt=max(snap["attempt"], event["attempt"]),
                    error_code=event.get("error_code"), error=event.get("error"),
                    output_bucket=event.get("output_bucket"), output_key=event.get("output_key"),
                    masks_key=event.get("masks_key"))
        if event.get("video_id") and not snap["video_id"]:
            snap["video_id"] = event["video_id"]
        if not snap["owner_id"]:
            snap["owner_id"] = event["owner_id"]
        if complete:
            snap.update(percent=100.0, frames_done=event.get("frames") or snap["frames_done"])
    else:
        raise ValueError(f"unknown event kind {kind!r}")
    snap["updated_at"] = max(snap["updated_at"], event["occurred_at"])
    snap["seen_event_ids"] = (list(snap["seen_event_ids"]) + [event["event_id"]])[-RECENT_IDS:]
    return snap


def _progress_applies(snap: dict[str, Any], event: dict[str, Any]) -> bool:
    if snap["state"] in TERMINAL or event["attempt"] < snap["attempt"]:
        return False
    if event["attempt"] > snap["attempt"]:
        return True  # a redelivered job starts a new attempt
    if snap["state"] == "interrupted":
        return False  # the attempt is over; its stragglers change nothing
    if event["state"] == "interrupted":
        return True
    if event["state"] not in STAGE_ORDER:
        return False
    return STAGE_ORDER[event["state"]] >= STAGE_ORDER.get(snap["state"], 0) and float(event["percent"]) >= snap["percent"]


WORKING = frozenset(STAGE_ORDER) - {"queued"}


def notifications(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str]]:
    """What a user should hear about when a job's snapshot goes from ``old`` to ``new``:
    a list of (kind, dedup key). The dedup key is stable (job, kind, attempt), so a status
    event folded twice after a crash produces the same notification id, not a second one."""
    job, attempt = new["job_id"], new["attempt"]
    before = old["state"] if old is not None else None
    old_attempt = old["attempt"] if old is not None else 0
    out: list[tuple[str, str]] = []
    if new["state"] in WORKING and (before not in WORKING or attempt > old_attempt):
        out.append(("job.started", f"{job}:job.started:{attempt}"))
    elif new["state"] == "interrupted" and (before != "interrupted" or attempt > old_attempt):
        out.append(("job.interrupted", f"{job}:job.interrupted:{attempt}"))
    elif new["state"] == "complete" and before != "complete":
        out.append(("job.completed", f"{job}:job.completed"))
    elif new["state"] == "failed" and before != "failed":
        out.append(("job.failed", f"{job}:job.failed"))
    return out
