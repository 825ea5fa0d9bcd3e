"""The event contract: every schema parses, round-trips, and can read every released version."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest
from fastavro.utils import generate_many

from schemas import serde
from schemas.topics import load_topic_specs

SCHEMAS = sorted(serde.current_schemas())
RELEASED = sorted(serde.RELEASED_DIR.glob("*.avsc"))


def test_every_topic_names_an_existing_schema() -> None:
    specs = load_topic_specs()
    assert len(specs) >= 10
    for spec in specs:
        assert spec.schema in serde.current_schemas(), spec.name
    status = next(s for s in specs if s.name == "tapmask.job.status.v1")
    assert status.config["cleanup.policy"] == "compact"


@pytest.mark.parametrize("name", SCHEMAS)
def test_round_trip(name: str) -> None:
    schema = serde.current_schemas()[name]
    for record in generate_many(schema.parsed, 20):
        data = serde.encode(name, record)
        assert data[:2] == b"\xc3\x01"
        assert serde.writer_fingerprint(data) == schema.fingerprint
        assert serde.decode(name, data) == record
        assert serde.decode_any(data) == (name, record)


def test_fingerprint_is_the_avro_crc64_of_the_canonical_form() -> None:
    # Known value from the Avro specification's test vectors: "int" → 0x7275d51a3f395c8f
    assert fastavro.schema.fingerprint('"int"', "CRC-64-AVRO") == bytes.fromhex("8f5c393f1ad57572").hex()


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(serde.SerdeError, match="bad magic"):
        serde.decode("JobStatus", b"not avro at all")
    with pytest.raises(serde.SerdeError, match="unknown writer schema"):
        serde.decode("JobStatus", b"\xc3\x01" + b"\x00" * 8 + b"body")
    with pytest.raises(serde.SerdeError, match="does not match schema"):
        serde.encode("JobStatus", {"job_id": 1})


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.name)
def test_current_code_reads_every_released_version(path: Path) -> None:
    """Fails when a schema change (a new field without default, a changed type, a removed
    enum symbol...) would stop today's consumers from reading events already on the topics."""
    writer = fastavro.parse_schema(json.loads(path.read_text()))
    name = path.name.split(".")[0]
    reader = serde.current_schemas()[name]
    for record in generate_many(writer, 25):
        import io

        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        fastavro.schemaless_reader(buf, writer, reader.parsed)


def test_an_incompatible_change_is_caught() -> None:
    """The check above can fail: a required field added without a default breaks old events."""
    released = json.loads((serde.RELEASED_DIR / "JobProgress.1.avsc").read_text())
    changed = json.loads(json.dumps(released))
    changed["fields"].append({"name": "gpu_model", "type": "string"})  # no default
    writer, reader = fastavro.parse_schema(released), fastavro.parse_schema(changed)
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, next(iter(generate_many(writer, 1))))
    buf.seek(0)
    with pytest.raises(Exception):
        fastavro.schemaless_reader(buf, writer, reader)


def test_every_current_schema_is_released() -> None:
    """A new schema or version must be copied to schemas/released/ when it ships."""
    released = {serde._load(p).fingerprint for p in RELEASED}
    for name, schema in serde.current_schemas().items():
        assert schema.fingerprint in released, f"{name}: copy schemas/avro/{name}.avsc to schemas/released/{name}.N.avsc"
