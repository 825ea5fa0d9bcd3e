"""Avro (de)serialisation of TapMask events, shared by every producer and consumer.

Wire format: Avro *single-object encoding* from the Avro specification — the two bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's parsing
canonical form, then the Avro binary body. A consumer written by someone else needs nothing
but the ``.avsc`` files to decode it: the fingerprint names the writer schema, and Avro
schema resolution maps it onto the reader's current schema. A Kafka header
``tapmask-schema`` also carries the schema's full name for people reading raw topics.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).parent / "avro"
RELEASED_DIR = Path(__file__).parent / "released"
MAGIC = b"\xc3\x01"
HEADER_SCHEMA = "tapmask-schema"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SerdeError(ValueError):
    """Bytes that are not a TapMask event this code can read, or a record its schema rejects."""


@dataclass(frozen=True)
class LoadedSchema:
    """A parsed schema with its fingerprint."""

    name: str  # short name, e.g. "JobStatus"
    parsed: Any
    fingerprint: bytes


def _load(path: Path) -> LoadedSchema:
    raw = json.loads(path.read_text())
    parsed = parse_schema(raw, _write_hint=False)
    canonical = to_parsing_canonical_form(raw)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return LoadedSchema(name=raw["name"], parsed=parsed, fingerprint=fp)


@lru_cache(maxsize=1)
def current_schemas() -> dict[str, LoadedSchema]:
    """The schemas this code writes (and reads into), by short name."""
    return {p.stem: _load(p) for p in sorted(SCHEMA_DIR.glob("*.avsc"))}


@lru_cache(maxsize=1)
def known_writer_schemas() -> dict[bytes, LoadedSchema]:
    """Every schema an event on the wire may have been written with, by fingerprint."""
    known = {s.fingerprint: s for s in current_schemas().values()}
    for p in sorted(RELEASED_DIR.glob("*.avsc")):
        s = _load(p)
        known.setdefault(s.fingerprint, s)
    return known


def encode(schema_name: str, record: dict[str, Any]) -> bytes:
    """Serialise ``record`` with the current schema ``schema_name`` (single-object encoding)."""
    try:
        schema = current_schemas()[schema_name]
    except KeyError as exc:
        raise SerdeError(f"unknown schema {schema_name!r}") from exc
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise SerdeError(f"record does not match schema {schema_name}: {exc}") from exc
    return buf.getvalue()


def writer_fingerprint(data: bytes) -> bytes:
    """The fingerprint in an encoded event's header."""
    if len(data) < 10 or data[:2] != MAGIC:
        raise SerdeError("not an Avro single-object encoded event (bad magic)")
    return data[2:10]


def decode(schema_name: str, data: bytes) -> dict[str, Any]:
    """Read an event into the current schema ``schema_name``, whatever released version wrote it."""
    fp = writer_fingerprint(data)
    writer = known_writer_schemas().get(fp)
    if writer is None:
        raise SerdeError(f"unknown writer schema fingerprint {fp.hex()}")
    reader = current_schemas()[schema_name]
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises several types for corrupt bodies
        raise SerdeError(f"cannot decode {schema_name} from {writer.name}: {exc}") from exc
    return _epoch_millis(record)


def _epoch_millis(value: Any) -> Any:
    """fastavro reads timestamp-millis as datetime; TapMask code works in epoch milliseconds."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (aware - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: _epoch_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_epoch_millis(v) for v in value]
    return value


def decode_any(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode with the writer's own schema; returns (schema name, record)."""
    writer = known_writer_schemas().get(writer_fingerprint(data))
    if writer is None:
        raise SerdeError("unknown writer schema fingerprint")
    return writer.name, decode(writer.name, data)


def fingerprint_int(data: bytes) -> int:
    """The writer fingerprint as the little-endian integer the Avro spec defines."""
    return struct.unpack("<Q", writer_fingerprint(data))[0]
