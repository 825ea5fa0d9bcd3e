"""The status agent's snapshot table has the compacted status topic as its changelog: one record
per change, in the Avro ``JobStatus`` form every reader of the topic reads, and Faust rebuilds
the table from those same records (tombstones included)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from processors.app import PublishedTable, app, settings
from processors.status import snapshots, status_inputs
from processors.status_fold import fold
from schemas import serde
from schemas.topics import JOB_STATUS, load_topic_specs


def _snapshot(job_id: str = "j1") -> dict[str, Any]:
    snap = fold(None, "requested", {"event_id": "e1", "occurred_at": 1_700_000_000_000, "job_id": job_id,
                                    "video_id": "v1", "owner_id": "u1", "mode": "blur"})
    assert snap is not None
    return snap


def test_the_changelog_is_the_status_topic_with_the_inputs_partition_count() -> None:
    changelog = snapshots.changelog_topic
    assert changelog.get_topic_name() == settings.topic(JOB_STATUS)
    assert not changelog.internal  # infra/topics.toml declares it, not Faust
    counts = {t.name: t.partitions for t in load_topic_specs()}
    # Faust co-assigns a table's changelog partitions with its inputs' by number.
    assert {counts[t.removeprefix(settings.topic_prefix)] for t in status_inputs.topics} == {counts[JOB_STATUS]}


def test_records_are_avro_jobstatus_keyed_by_the_job_id_text() -> None:
    snap = _snapshot()
    schema = snapshots.changelog_topic.schema
    value = app.serializers.dumps_value(None, snap, serializer=schema.value_serializer)
    assert value == serde.encode("JobStatus", snap)  # what the API's view decodes
    assert serde.decode("JobStatus", value) == snap
    # What Faust hands the table when it reads the topic back (recovery, standby).
    assert app.serializers.loads_key(str, b"j1", serializer=schema.key_serializer) == "j1"
    assert app.serializers.loads_value(None, value, serializer=schema.value_serializer) == snap
    assert app.serializers.loads_value(None, None, serializer=schema.value_serializer) is None  # tombstone


def _record(key: str, value: dict[str, Any] | None, partition: int = 0) -> Any:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(value=None if value is None else b"x",
                                                                        partition=partition))


def _fresh_table() -> PublishedTable:
    table = PublishedTable(app, name="test-snapshots", default=None, partitions=8,
                           changelog_topic=snapshots.changelog_topic, key_type=str, value_type=None)
    table.topic_name = JOB_STATUS
    return table


def test_rebuilding_from_the_topic_takes_the_latest_record_and_honours_tombstones() -> None:
    table = _fresh_table()
    a1, b1 = _snapshot("a"), _snapshot("b")
    a2 = a1 | {"state": "failed", "error_code": "engine_error"}
    table.apply_changelog_batch([_record("a", a1), _record("b", b1), _record("a", a2), _record("b", None)])
    assert table.get("a") == a2
    assert table.get("b") is None  # the API tombstoned it (its video was deleted)


def test_setting_an_entry_sends_no_changelog_record_of_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's own status record is the changelog record: Faust must not send a second one
    (nor its JSON form to a topic the API reads as Avro)."""
    table = _fresh_table()
    sent: list[Any] = []
    monkeypatch.setattr(table, "send_changelog", lambda *a, **k: sent.append(a))
    table["a"] = _snapshot("a")  # outside a stream: a plain Faust table would need an event here
    del table["a"]
    assert sent == [] and table.get("a") is None
