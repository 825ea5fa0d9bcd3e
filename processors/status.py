"""The status agent: the single writer of the compacted job-status topic.

It folds requested, progress and completed events (all keyed by job_id and co-partitioned)
into the latest snapshot per job with the rules of ``status_fold`` and writes the snapshot
to ``tapmask.job.status.v1`` whenever it changes. Its table (changelog-backed) holds the
snapshots so a restarted worker resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

import structlog

from processors.app import app, emit, guarded, json_schema, topic
from processors.status_fold import fold
from schemas.topics import JOB_COMPLETED, JOB_PROGRESS, JOB_STATUS, SEGMENT_REQUESTED

log = structlog.get_logger()

KIND_BY_TOPIC = {SEGMENT_REQUESTED: "requested", JOB_PROGRESS: "progress", JOB_COMPLETED: "completed"}

snapshots = app.Table("job-snapshots", default=None, partitions=8, schema=json_schema())

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
        new = fold(snapshots.get(job_id), kind, record)
        if new is None:
            return
        await emit(JOB_STATUS, job_id, new)
        snapshots[job_id] = new
        log.info("status.changed", job_id=job_id, state=new["state"], percent=new["percent"])

    return apply


FOLDERS = {name: _folder(kind) for name, kind in KIND_BY_TOPIC.items()}


@app.agent(status_inputs)
async def write_status(stream):  # type: ignore[no-untyped-def]
    """Fold each job event into its snapshot; publish the snapshot when it changed."""
    async for event in stream.events():
        name = _logical(event.message.topic)
        await guarded("status", event, name, FOLDERS[name])
