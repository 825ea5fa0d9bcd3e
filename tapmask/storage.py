"""S3 access: the client factory, presigned URLs, and a seekable reader over ranged GETs."""

from __future__ import annotations

import io
from typing import Any

import boto3
from botocore.config import Config

from tapmask.settings import Settings


def s3_client(settings: Settings, *, public: bool = False) -> Any:
    """A boto3 S3 client; ``public=True`` signs URLs for the endpoint users can reach."""
    endpoint = settings.s3_public_endpoint if public and settings.s3_public_endpoint else settings.s3_endpoint
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def presigned_get(settings: Settings, bucket: str, key: str, filename: str | None = None) -> str:
    """A GET URL for ``key`` valid ``settings.presign_ttl_s`` seconds."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    return s3_client(settings, public=True).generate_presigned_url(
        "get_object", Params=params, ExpiresIn=settings.presign_ttl_s
    )


class S3RangeReader(io.RawIOBase):
    """A read-only, seekable file over an S3 object, fetched in ranged GETs.

    Lets PyAV probe a video while downloading only the bytes it reads (headers, index).
    """

    def __init__(self, client: Any, bucket: str, key: str, block_size: int = 1 << 20) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        self._pos = 0
        self._block_size = block_size
        self._cache: dict[int, bytes] = {}
        self.bytes_fetched = 0

    @property
    def size(self) -> int:
        """Object size in bytes."""
        return self._size

    def readable(self) -> bool:  # noqa: D102
        return True

    def seekable(self) -> bool:  # noqa: D102
        return True

    def tell(self) -> int:  # noqa: D102
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:  # noqa: D102
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block(self, index: int) -> bytes:
        if index not in self._cache:
            start = index * self._block_size
            end = min(self._size, start + self._block_size) - 1
            body = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end}")["Body"]
            data = body.read()
            self.bytes_fetched += len(data)
            if len(self._cache) > 16:  # keep memory bounded
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = data
        return self._cache[index]

    def readinto(self, b: Any) -> int:  # noqa: D102
        if self._pos >= self._size:
            return 0
        block = self._block(self._pos // self._block_size)
        offset = self._pos % self._block_size
        n = min(len(b), len(block) - offset)
        b[:n] = block[offset : offset + n]
        self._pos += n
        return n


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` (all pages), sorted; folder markers left out."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return sorted(keys)


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many were deleted."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:  # one page is at most 1,000 keys: what one DeleteObjects call takes
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
            deleted += len(objs)
    return deleted
