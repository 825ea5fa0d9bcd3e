"""The upload producer: streams a multipart body into S3 and announces it as ``video.uploaded``.

The body is parsed as it arrives and sent to S3 in multipart-upload parts, so memory stays
flat whatever the file size; the container is sniffed from the first bytes and the size
limit enforced while streaming. Any refusal aborts the S3 upload, so nothing half-written
is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from producers.formats import SNIFF_BYTES, SUPPORTED, sniff_container
from schemas.topics import VIDEO_UPLOADED
from tapmask.events import EventProducer, envelope

PART_BYTES = 8 * 1024 * 1024  # S3 parts must be >= 5 MiB except the last


class UploadRejected(Exception):
    """The upload was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class StoredUpload:
    """What was written to S3."""

    key: str
    filename: str
    container: str
    size_bytes: int
    sha256: str


class _S3PartWriter:
    """Feeds bytes into one S3 multipart upload, checking format and size as they come."""

    def __init__(self, s3: Any, bucket: str, key: str, max_bytes: int) -> None:
        self.s3, self.bucket, self.key, self.max_bytes = s3, bucket, key, max_bytes
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()
        self.size = 0
        self.sha = hashlib.sha256()
        self.container: str | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise UploadRejected(413, f"file is larger than the {self.max_bytes // (1024 * 1024)} MB limit")
        self.sha.update(data)
        self.buffer += data
        if self.container is None and len(self.buffer) >= SNIFF_BYTES:
            self._check_format()
        if len(self.buffer) >= PART_BYTES:
            self._flush_part()

    def _check_format(self) -> None:
        self.container = sniff_container(bytes(self.buffer[:SNIFF_BYTES]))
        if self.container is None:
            raise UploadRejected(415, f"not a supported video: expected one of {', '.join(SUPPORTED)} (checked from the file's content)")

    def _flush_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        resp = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer))
        self.parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        self.buffer.clear()

    def finish(self) -> None:
        if self.size == 0:
            raise UploadRejected(400, "the uploaded file is empty")
        if self.container is None:
            self._check_format()
        if self.upload_id is None:  # small file: one plain PUT
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._flush_part()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # best effort: the lifecycle rule removes stragglers
                pass


async def stream_multipart_to_s3(
    body: AsyncIterator[bytes], content_type: str, s3: Any, bucket: str, key: str, max_bytes: int, field: str = "file"
) -> StoredUpload:
    """Parse a multipart/form-data body and store its ``field`` part at ``key``."""
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadRejected(400, "send the video as multipart/form-data with a 'file' field")

    writer = _S3PartWriter(s3, bucket, key, max_bytes)
    state: dict[str, Any] = {"header_field": b"", "headers": {}, "in_file": False, "filename": None, "seen_file": False, "done": False}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        name = state["header_field"].lower()
        state["headers"][name] = state["headers"].get(name, b"") + data[start:end]

    def on_header_end() -> None:
        state["header_field"] = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        is_file = disp.get(b"name") == field.encode() and not state["seen_file"]
        state["in_file"] = is_file
        if is_file:
            state["seen_file"] = True
            state["filename"] = disp.get(b"filename", b"video").decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            writer.write(data[start:end])

    def on_part_end() -> None:
        state["in_file"] = False

    def on_end() -> None:
        state["done"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in body:
            # Callbacks may upload an S3 part: keep that blocking I/O off the event loop.
            await asyncio.to_thread(parser.write, chunk)
        if not state["seen_file"]:
            raise UploadRejected(400, f"no '{field}' field in the form")
        if not state["done"]:
            raise UploadRejected(400, "the upload was cut off before the end of the form")
        await asyncio.to_thread(writer.finish)
    except UploadRejected:
        writer.abort()
        raise
    except Exception as exc:
        writer.abort()
        if type(exc).__name__ in ("MultipartParseError", "ClientDisconnect"):
            raise UploadRejected(400, f"malformed or interrupted upload: {exc}") from exc
        raise
    return StoredUpload(
        key=key,
        filename=safe_display_name(state["filename"] or "video"),
        container=writer.container or "",
        size_bytes=writer.size,
        sha256=writer.sha.hexdigest(),
    )


def safe_display_name(name: str) -> str:
    """The user's file name reduced to a harmless display name (no directories, no controls)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable() and ch not in '"<>|:*?')
    return (cleaned.strip(" .") or "video")[:200]


def publish_uploaded(
    producer: EventProducer, *, video_id: str, owner_id: str, stored: StoredUpload, bucket: str, correlation_id: str | None, region: str = "eu",
    extra: list[tuple[str, str, dict[str, Any] | None]] | None = None,
) -> dict[str, Any]:
    """Announce a stored upload on ``video.uploaded`` (with ``extra`` events, e.g. its audit
    record, in the same acknowledged batch); returns the event."""
    event = envelope(correlation_id) | {
        "video_id": video_id,
        "owner_id": owner_id,
        "region": region,
        "filename": stored.filename,
        "container": stored.container,
        "size_bytes": stored.size_bytes,
        "sha256": stored.sha256,
        "s3_bucket": bucket,
        "s3_key": stored.key,
    }
    producer.publish_many([(VIDEO_UPLOADED, video_id, event), *(extra or [])])
    return event
