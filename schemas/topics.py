"""The topic map: which event travels on which topic, keyed by what.

Read from the one declarative file, ``infra/topics.toml``; the constants below are the
logical names code refers to (``Settings.topic`` adds an optional prefix).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
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
RETRY = "tapmask.retry.v1"


class TopicSpecError(ValueError):
    """The topic spec file is missing or malformed."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in `infra/topics.toml`."""

    name: str
    partitions: int = 1
    replication: int = 1
    key: str | None = None  # name of the record-key field, documentation for producers
    schema: str | None = None  # Avro schema name of the values (schemas/avro/<schema>.avsc)
    config: dict[str, str] = field(default_factory=dict)  # e.g. {"cleanup.policy": "compact"}


def _flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """Kafka config keys contain dots; unquoted in TOML they become nested tables."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, full + "."))
        elif isinstance(value, bool):
            flat[full] = "true" if value else "false"
        else:
            flat[full] = str(value)
    return flat


def parse_topic_specs(data: Mapping, source: str = "topics.toml") -> list[TopicSpec]:
    """Topic specs from already-parsed TOML data."""
    tables = data.get("topic", [])
    if not isinstance(tables, list):
        raise TopicSpecError(f"{source}: `topic` must be an array of tables ([[topic]])")
    specs: list[TopicSpec] = []
    names: set[str] = set()
    known = {"name", "key", "schema", "partitions", "replication", "config"}
    for index, table in enumerate(tables, start=1):
        where = f"{source}: topic #{index}"
        if not isinstance(table, Mapping):
            raise TopicSpecError(f"{where} is not a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise TopicSpecError(f"{where} has unknown keys {unknown}")
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise TopicSpecError(f"{where} has no `name`")
        if name in names:
            raise TopicSpecError(f"{source}: topic {name!r} is declared twice")
        names.add(name)
        partitions = table.get("partitions", 1)
        replication = table.get("replication", 1)
        for label, value in (("partitions", partitions), ("replication", replication)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TopicSpecError(f"{source}: topic {name!r} `{label}` must be an integer >= 1")
        config = table.get("config", {})
        if not isinstance(config, Mapping):
            raise TopicSpecError(f"{source}: topic {name!r} `config` must be a table")
        specs.append(
            TopicSpec(
                name=name,
                partitions=partitions,
                replication=replication,
                key=table.get("key"),
                schema=table.get("schema"),
                config=_flatten(config),
            )
        )
    return specs


def load_topic_specs(path: Path | str | None = None) -> list[TopicSpec]:
    """Read the `[[topic]]` tables of `path` (default: ``$TAPMASK_TOPICS_FILE`` or infra/topics.toml)."""
    path = Path(path or os.environ.get("TAPMASK_TOPICS_FILE") or DEFAULT_SPEC)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TopicSpecError(f"topic spec file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopicSpecError(f"{path}: invalid TOML: {exc}") from None
    return parse_topic_specs(data, str(path))


@lru_cache(maxsize=1)
def schema_by_topic() -> dict[str, str]:
    """Logical topic name → Avro schema short name."""
    return {t.name: t.schema for t in load_topic_specs()}
