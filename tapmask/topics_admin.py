"""Idempotent topic creation from the declarative topic map.

`schemas.topics.load_topic_specs()` reads `infra/topics.toml`; `ensure_topics()` creates the missing
topics with confluent-kafka's AdminClient (a topic that already exists is fine and is left
as it is). The dev stack calls both on `tapmask dev up`; production can apply the same file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.topics import TopicSpec, TopicSpecError, load_topic_specs, parse_topic_specs  # noqa: F401 - re-exported


@dataclass(frozen=True)
class TopicResult:
    """What `ensure_topics` did for one topic."""

    name: str  # the real (prefixed) name
    created: bool  # False: it already existed


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
