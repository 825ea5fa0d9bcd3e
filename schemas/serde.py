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
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).parent / "avro"
RELEASED_DIR = Path(__file__).parent / "released"
MAGIC = b"\xc3\x01"
HEADER_SCHEMA = "tapmask-schema"


class SerdeError(ValueError):
    """Bytes that are not a TapMask event this code can read, or a record its schema rejects."""


@dataclass(frozen=True)
class LoadedSchema:
    """A parsed schema with its fingerprint."""

    name: str  # short name, e.g. "JobStatus"
    parsed: Any
    fingerprint: bytes
    # The same schema without logical types: timestamps read as the epoch-ms ints TapMask uses.
    parsed_plain: Any = None


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(v) for v in schema]
    return schema


def _load(path: Path) -> LoadedSchema:
    raw = json.loads(path.read_text())
    # Parsed once with fastavro's marker, so (de)serialising does not parse the schema again
    # on every call (that doubled the cost of each event).
    parsed = parse_schema(raw)
    canonical = to_parsing_canonical_form(raw)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return LoadedSchema(name=raw["name"], parsed=parsed, fingerprint=fp, parsed_plain=parse_schema(_strip_logical(raw)))


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
        # Without logical types timestamps stay epoch-ms ints: no datetime round trip, no walk
        # over the record. The same writer as reader reads without schema resolution.
        record = fastavro.schemaless_reader(io.BytesIO(memoryview(data)[10:]), writer.parsed_plain,
                                            None if writer is reader else reader.parsed_plain)
    except Exception as exc:  # fastavro raises several types for corrupt bodies
        raise SerdeError(f"cannot decode {schema_name} from {writer.name}: {exc}") from exc
    return record  # type: ignore[no-any-return]


def decode_any(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode with the writer's own schema; returns (schema name, record)."""
    writer = known_writer_schemas().get(writer_fingerprint(data))
    if writer is None:
        raise SerdeError("unknown writer schema fingerprint")
    return writer.name, decode(writer.name, data)


def fingerprint_int(data: bytes) -> int:
    """The writer fingerprint as the little-endian integer the Avro spec defines."""
    return struct.unpack("<Q", writer_fingerprint(data))[0]
