"""The topic map: which event travels on which topic, keyed by what.

Read from the one declarative file, ``infra/topics.toml``; the constants below are the
logical names code refers to (``Settings.topic`` adds an optional prefix).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "infra" / "topics.toml"

VIDEO_UPLOADED = "tapmask.video.uploaded.v1"
VIDEO_VALIDATED = "tapmask.video.validated.v1"
SEGMENT_REQUESTED = "tapmask.segment.requested.v1"
SEGMENT_ACCEPTED = "tapmask.segment.accepted.v1"
JOB_QUEUED = "tapmask.job.queued.v1"
JOB_PROGRESS = "tapmask.job.progress.v1"
JOB_COMPLETED = "tapmask.job.completed.v1"
JOB_STATUS = "tapmask.job.status.v1"
NOTIFICATION = "tapmask.notification.v1"
AUDIT = "tapmask.audit.v1"
DLQ = "tapmask.dlq.v1"


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the declarative spec."""

    name: str
    key: str
    schema: str
    partitions: int
    replication: int = 1
    config: dict[str, str] = field(default_factory=dict)


def load_topic_specs(path: Path | str | None = None) -> list[TopicSpec]:
    """Parse the topic spec file (default: ``$TAPMASK_TOPICS_FILE`` or infra/topics.toml)."""
    spec_path = Path(path or os.environ.get("TAPMASK_TOPICS_FILE") or DEFAULT_SPEC)
    with spec_path.open("rb") as fh:
        data = tomllib.load(fh)
    return [
        TopicSpec(
            name=t["name"],
            key=t["key"],
            schema=t["schema"],
            partitions=int(t["partitions"]),
            replication=int(t.get("replication", 1)),
            config={k: str(v) for k, v in t.get("config", {}).items()},
        )
        for t in data["topic"]
    ]


@lru_cache(maxsize=1)
def schema_by_topic() -> dict[str, str]:
    """Logical topic name → Avro schema short name."""
    return {t.name: t.schema for t in load_topic_specs()}
