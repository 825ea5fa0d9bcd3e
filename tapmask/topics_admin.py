"""The declarative topic map (`infra/topics.toml`) and idempotent topic creation.

`load_topic_specs()` reads the `[[topic]]` tables; `ensure_topics()` creates the missing
topics with confluent-kafka's AdminClient (a topic that already exists is fine and is left
as it is). The dev stack calls both on `tapmask dev up`; production can apply the same file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TOPICS_FILE = Path(__file__).resolve().parents[1] / "infra" / "topics.toml"


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


@dataclass(frozen=True)
class TopicResult:
    """What `ensure_topics` did for one topic."""

    name: str  # the real (prefixed) name
    created: bool  # False: it already existed


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
    """Read the `[[topic]]` tables of `path` (default: this checkout's infra/topics.toml)."""
    path = Path(path) if path is not None else DEFAULT_TOPICS_FILE
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TopicSpecError(f"topic spec file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopicSpecError(f"{path}: invalid TOML: {exc}") from None
    return parse_topic_specs(data, str(path))


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    prefix: str = "",
    *,
    client_config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[TopicResult]:
    """Create the topics of `specs` (named `prefix + spec.name`) that do not exist yet.

    Idempotent: an existing topic counts as success and is not altered. `client_config`
    adds AdminClient settings (security, for production). Raises `RuntimeError` naming
    every topic that could not be created.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    specs = list(specs)
    if not specs:
        return []
    admin = AdminClient({"bootstrap.servers": bootstrap, **dict(client_config or {})})
    new_topics = [
        NewTopic(
            f"{prefix}{spec.name}",
            num_partitions=spec.partitions,
            replication_factor=spec.replication,
            config=dict(spec.config),
        )
        for spec in specs
    ]
    futures = admin.create_topics(new_topics, request_timeout=timeout_s, operation_timeout=timeout_s)
    results: list[TopicResult] = []
    failures: list[str] = []
    try:
        _collect(new_topics, futures, timeout_s, results, failures)
    finally:
        # A future keeps the exception it raised, whose traceback holds this frame, which
        # holds the futures: without this the AdminClient lives (and logs reconnection
        # errors) until the cyclic garbage collector runs.
        futures.clear()
        del admin
    if failures:
        raise RuntimeError("could not create topics: " + "; ".join(failures))
    return results


def _collect(new_topics, futures, timeout_s, results, failures) -> None:
    from confluent_kafka import KafkaError, KafkaException

    for topic in new_topics:
        name = topic.topic
        try:
            futures[name].result(timeout=timeout_s + 5)
            results.append(TopicResult(name, created=True))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                results.append(TopicResult(name, created=False))
            else:
                failures.append(f"{name}: {error.str() if isinstance(error, KafkaError) else exc}")
        except Exception as exc:  # noqa: BLE001 - timeouts and transport errors alike
            failures.append(f"{name}: {exc!r}")
