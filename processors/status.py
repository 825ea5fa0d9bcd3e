"""The status agent: the single writer of the compacted job-status topic.

It folds requested, progress and completed events (all keyed by job_id and co-partitioned)
into the latest snapshot per job with the rules of ``status_fold`` and writes the snapshot
to ``tapmask.job.status.v1`` whenever it changes. Its table holds the snapshots, and the
status topic is that table's changelog (``processors.app.PublishedTable``): each change is one
record, the Avro ``JobStatus`` keyed by job_id that the API's view and every other reader
read, and a restarted worker rebuilds the table from the same records (a tombstone the API
wrote for a deleted video's job removes the job from the table too).

A change that a user should hear about (job started, completed, failed, interrupted) also
goes out on ``tapmask.notification.v1`` with an id derived from (job, kind, attempt), so a
re-folded event after a crash repeats the same notification id and the webhook/e-mail
dispatcher de-duplicates it.

Video events (uploaded, validated) are keyed by video, not job, so they are not folded here:
the API's view reads them directly; a job is only created for a validated video.
"""

from __future__ import annotations

from typing import Any

import json

import structlog

from processors.app import app, emit, guarded, handler, published_table, stable_id, topic
from processors.status_fold import fold, notifications
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS, JOB_STATUS, NOTIFICATION, SEGMENT_REQUESTED

log = structlog.get_logger().bind()  # built once (app.py configured structlog): a proxy rebuilds its logger per call

KIND_BY_TOPIC = {SEGMENT_REQUESTED: "requested", JOB_PROGRESS: "progress", JOB_COMPLETED: "completed"}

snapshots = published_table("job-snapshots", JOB_STATUS)

status_inputs = app.topic(
    *[topic(name).get_topic_name() for name in KIND_BY_TOPIC],
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)


def _logical(real_topic: str) -> str:
    for name in KIND_BY_TOPIC:
        if real_topic.endswith(name):
            return name
    raise KeyError(real_topic)


def _folder(kind: str):  # type: ignore[no-untyped-def]
    async def apply(record: dict[str, Any]) -> None:
        job_id = record["job_id"]
        old = snapshots.get(job_id)
        new = fold(old, kind, record)
        if new is None:
            return
        # Written before any await: a retried event of the same job may be folded meanwhile
        # (processors/app.py), and must build on this snapshot, not on ``old``.
        snapshots[job_id] = new
        try:
            # The notifications first: should one fail, no status record is out yet, and the
            # retry folds the event again from ``old`` (re-sent notifications keep their ids).
            for note_kind, dedup in notifications(old, new):
                if new["owner_id"]:
                    await emit(NOTIFICATION, new["owner_id"], notification(note_kind, dedup, new, record), wait=False)
            await snapshots.publish(job_id)  # the status record, which is also the table's changelog
        except BaseException:
            if snapshots.get(job_id) == new:  # not published: let the retry fold this event again
                if old is None:
                    del snapshots[job_id]
                else:
                    snapshots[job_id] = old
            raise
        log.debug("status.changed", job_id=job_id, state=new["state"], percent=new["percent"])

    return apply


def job_payload(snap: dict[str, Any]) -> dict[str, Any]:
    """What a webhook or e-mail says about a job (public fields only)."""
    data = {
        "jobId": snap["job_id"], "videoId": snap["video_id"], "state": snap["state"], "attempt": snap["attempt"],
        "mode": snap["mode"], "percent": round(float(snap["percent"]), 1), "errorCode": snap["error_code"],
        "error": snap["error"], "statusUrl": f"/api/v1/status/{snap['job_id']}",
    }
    if snap["state"] == "complete":
        data["downloadUrl"] = f"/api/v1/download/{snap['job_id']}"
    if snap.get("notice"):
        data["notice"] = snap["notice"]
    return data


def notification(kind: str, dedup: str, snap: dict[str, Any], cause: dict[str, Any]) -> dict[str, Any]:
    """A Notification event with a stable id (same job, kind and attempt → same id)."""
    return {
        "event_id": stable_id(dedup), "occurred_at": cause["occurred_at"], "correlation_id": cause.get("correlation_id"),
        "kind": kind, "user_id": snap["owner_id"], "job_id": snap["job_id"], "payload_json": json.dumps(job_payload(snap)),
    }


FOLDERS = {name: handler("status", name, _folder(kind)) for name, kind in KIND_BY_TOPIC.items()}


@app.agent(status_inputs)
async def write_status(stream):  # type: ignore[no-untyped-def]
    """Fold each job event into its snapshot; publish the snapshot when it changed."""
    async for event in stream.events():
        name = _logical(event.message.topic)
        await guarded(FOLDERS[name], event)
