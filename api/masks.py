"""The masks of a job as one zip archive, streamed from S3 as it is built.

The engine uploads per-frame masks under ``outputs/{job_id}/masks/``. Rather than ask the
consumer for a second copy as an archive, the API zips them on the fly: objects are read
from S3 in chunks and written into a zip that goes to the client as it grows (zipfile writes
to a non-seekable stream with data descriptors), so memory stays flat for any number of
frames. If a consumer does upload an archive (a ``masks_key`` ending in ``.zip``), the
route hands out a presigned URL to it instead.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

from tapmask.storage import list_keys

CHUNK = 1 << 20


def masks_prefix(job_id: str) -> str:
    """Where a job's masks live."""
    return f"outputs/{job_id}/masks/"


def list_masks(s3: Any, bucket: str, job_id: str, masks_key: str | None = None) -> list[str]:
    """Every object key under the job's masks prefix (or under ``masks_key`` when it is a prefix)."""
    prefix = masks_key if masks_key and masks_key.endswith("/") else masks_prefix(job_id)
    return list_keys(s3, bucket, prefix)


class _Sink:
    """A write-only, non-seekable file whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.buf += data
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def zip_stream(s3: Any, bucket: str, keys: list[str], folder: str) -> Iterator[bytes]:
    """Yield a zip archive of ``keys`` (stored, not deflated: masks are PNG already)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        for key in keys:
            name = folder + key.rsplit("/", 1)[-1]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            with zf.open(name, mode="w", force_zip64=True) as member:
                while chunk := body.read(CHUNK):
                    member.write(chunk)
                    if len(sink.buf) >= CHUNK:
                        yield sink.take()
            if sink.buf:
                yield sink.take()
    if sink.buf:
        yield sink.take()
