"""The quota agent: free users get ``free_jobs_per_month`` jobs a calendar month (UTC);
Pro users are unlimited. Accepted jobs within quota go to the GPU queue; the others fail
with ``quota_exceeded``.

Keyed by user (segment.accepted is keyed by owner_id), so one worker owns a user's count.
Counting is idempotent: a redelivered request is recognised by its job id.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from processors.app import app, emit, guarded, json_schema, settings, topic
from schemas.topics import JOB_COMPLETED, JOB_QUEUED, SEGMENT_ACCEPTED
from tapmask.events import envelope, job_failed

usage = app.Table("quota-usage", default=None, partitions=8, schema=json_schema())


def month_of(epoch_ms: int) -> str:
    """The UTC calendar month an event belongs to, e.g. 2026-11."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m")


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


async def _apply_quota(spec: dict[str, Any]) -> None:
    key = f"{spec['owner_id']}:{month_of(spec['occurred_at'])}"
    allowed, new_usage = decide(spec, usage.get(key), settings.free_jobs_per_month)
    if not allowed:
        limit = settings.free_jobs_per_month
        await emit(JOB_COMPLETED, spec["job_id"], job_failed(
            spec, "quota_exceeded", f"the free tier allows {limit} jobs a month; upgrade to Pro or wait for the 1st", spec["attempt"]))
        return
    if new_usage is not None:  # count first: a redelivery then finds the job counted
        usage[key] = new_usage
    await emit(JOB_QUEUED, spec["job_id"], spec | envelope(spec.get("correlation_id")))


@app.agent(topic(SEGMENT_ACCEPTED))
async def enforce_quota(stream):  # type: ignore[no-untyped-def]
    """Queue the job, or fail it with quota_exceeded."""
    async for event in stream.events():
        await guarded("quota", event, SEGMENT_ACCEPTED, _apply_quota)
