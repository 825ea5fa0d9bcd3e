"""The quota agent: free users get ``free_jobs_per_month`` jobs a calendar month (UTC);
Pro users are unlimited. Accepted jobs within quota go to the GPU queue; the others fail
with ``quota_exceeded`` and the user gets a ``quota.exceeded`` notification.

Keyed by user (segment.accepted is keyed by owner_id), so one worker owns a user's count,
kept in a changelog-backed table under ``user:YYYY-MM``. The month is the one in which the
user *asked* (``requested_at``), so a request made at 23:59:59 on the 31st counts in that
month even if it is processed after midnight; a new month is a new key, so the count starts
at zero on the 1st (UTC) with no reset job. The tier is the one the request carries: a user
who upgrades mid-month is unlimited from their next request on; jobs counted while free stay
counted.

Counting is idempotent: a redelivered request is recognised by its job id.

Export size: free output is capped at ``free_max_output_height`` (1080p, applied to the
shorter side so portrait video is treated alike); Pro exports at the source size (4K). The
cap travels in the job spec, and when it actually shrinks the video the job's status carries
a notice saying so.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from processors.app import app, emit, guarded, handler, json_schema, settings, stable_id, topic
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS, JOB_QUEUED, NOTIFICATION, SEGMENT_ACCEPTED
from tapmask.events import envelope, job_failed

usage = app.Table("quota-usage", default=None, partitions=8, schema=json_schema())


def month_of(epoch_ms: int) -> str:
    """The UTC calendar month an event belongs to, e.g. 2026-11."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m")


def usage_key(spec: dict[str, Any]) -> str:
    """The quota table key: the user and the UTC month in which they asked."""
    return f"{spec['owner_id']}:{month_of(spec.get('requested_at') or spec['occurred_at'])}"


def decide(spec: dict[str, Any], used: dict[str, Any] | None, free_limit: int) -> tuple[bool, dict[str, Any] | None]:
    """Whether the job may run, and the user's new usage record (None = unchanged)."""
    if spec["tier"] == "pro":
        return True, None
    used = used or {"count": 0, "jobs": []}
    if spec["job_id"] in used["jobs"]:
        return True, None  # redelivered: already counted
    if used["count"] >= free_limit:
        return False, None
    return True, {"count": used["count"] + 1, "jobs": (used["jobs"] + [spec["job_id"]])[-max(free_limit, 1) * 2 :]}


def output_cap(spec: dict[str, Any], free_max: int) -> tuple[int | None, str | None]:
    """The export height cap of the request's tier, and a notice when it shrinks this video."""
    if spec["tier"] == "pro":
        return None, None
    video = spec["video"]
    w, h = video["width"], video["height"]
    if video.get("rotation", 0) % 180 == 90:
        w, h = h, w
    if min(w, h) <= free_max:
        return free_max, None
    return free_max, (f"free tier: the output is capped at {free_max}p (the source is {w}x{h}); "
                      "upgrade to Pro to export at full resolution (4K)")


def quota_exceeded_notification(spec: dict[str, Any], limit: int, month: str) -> dict[str, Any]:
    """The quota.exceeded notification (stable id: one per job)."""
    payload = {"jobId": spec["job_id"], "videoId": spec["video_id"], "limit": limit, "month": month,
               "message": f"the free tier allows {limit} jobs a month; upgrade to Pro or wait for the 1st (UTC)"}
    return {"event_id": stable_id(spec["job_id"], "quota.exceeded"), "occurred_at": spec["occurred_at"],
            "correlation_id": spec.get("correlation_id"), "kind": "quota.exceeded", "user_id": spec["owner_id"],
            "job_id": spec["job_id"], "payload_json": json.dumps(payload)}


async def _apply_quota(spec: dict[str, Any]) -> None:
    key = usage_key(spec)
    limit = settings.free_jobs_per_month
    allowed, new_usage = decide(spec, usage.get(key), limit)
    if not allowed:
        await emit(JOB_COMPLETED, spec["job_id"], job_failed(
            spec, "quota_exceeded",
            f"quota exceeded: the free tier allows {limit} jobs a month and {key.rsplit(':', 1)[1]} is used up; "
            "upgrade to Pro or wait for the 1st (UTC)", spec["attempt"]), wait=False)
        await emit(NOTIFICATION, spec["owner_id"], quota_exceeded_notification(spec, limit, key.rsplit(":", 1)[1]), wait=False)
        return
    if new_usage is not None:  # count first: a redelivery then finds the job counted
        usage[key] = new_usage
    cap, notice = output_cap(spec, settings.free_max_output_height)
    queued = spec | envelope(spec.get("correlation_id")) | {"max_output_height": cap, "notice": notice}
    await emit(JOB_QUEUED, spec["job_id"], queued, wait=False)
    # Tell the status writer (progress is keyed by job, like its table; job.queued is not co-partitioned).
    await emit(JOB_PROGRESS, spec["job_id"], envelope(spec.get("correlation_id")) | {
        "job_id": spec["job_id"], "attempt": spec["attempt"], "state": "queued", "percent": 0.0, "frames_done": 0,
        "frames_total": spec["video"]["frame_count"], "worker_id": None, "message": notice, "max_output_height": cap,
    }, wait=False)


async def _give_up(spec: dict[str, Any], reason: str) -> None:
    await emit(JOB_COMPLETED, spec["job_id"], job_failed(spec, "internal_error", f"the quota check failed: {reason}", spec["attempt"]))


ACCEPTED = handler("quota", SEGMENT_ACCEPTED, _apply_quota, _give_up)


@app.agent(topic(SEGMENT_ACCEPTED))
async def enforce_quota(stream):  # type: ignore[no-untyped-def]
    """Queue the job, or fail it with quota_exceeded."""
    async for event in stream.events():
        await guarded(ACCEPTED, event)
