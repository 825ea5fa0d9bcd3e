"""A small client of the TapMask REST API, used by `tapmask demo` and the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    """The API answered with an error; carries the status code and the reason it gave."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status, self.reason = status, reason


class TapMaskClient:
    """Upload, segment, poll, download. ``token`` is a JWT sent as ``Authorization: Bearer``
    (every route but health needs one; ``tapmask token`` or ``POST /api/v1/dev/token`` mint one)."""

    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def _check(self, resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("detail", resp.text)
            except ValueError:
                reason = resp.text
            raise ApiError(resp.status_code, str(reason))
        return resp.json()

    def upload(self, path: Path) -> dict[str, Any]:
        """POST /api/v1/upload."""
        with path.open("rb") as fh:
            return self._check(self.http.post("/api/v1/upload", files={"file": (path.name, fh, "application/octet-stream")}))

    def wait_validated(self, video_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll the video until validation has decided."""
        deadline = time.monotonic() + timeout_s
        while True:
            video = self._check(self.http.get(f"/api/v1/videos/{video_id}"))
            if video["state"] != "validating" or time.monotonic() > deadline:
                return video
            time.sleep(0.2)

    def segment(self, video_id: str, x: float, y: float, frame: int = 0, mode: str = "blur", **extra: Any) -> dict[str, Any]:
        """POST /api/v1/segment with one positive point."""
        body = {"videoId": video_id, "point": {"x": x, "y": y, "frame": frame}, "mode": mode} | extra
        return self._check(self.http.post("/api/v1/segment", json=body))

    def status(self, job_id: str) -> dict[str, Any]:
        """GET /api/v1/status/{job_id}."""
        return self._check(self.http.get(f"/api/v1/status/{job_id}"))

    def wait_done(self, job_id: str, timeout_s: float = 300.0, on_update: Callable[[dict[str, Any]], None] | None = None,
                  poll_s: float = 0.5) -> dict[str, Any]:
        """Poll the job until it is complete or failed (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status(job_id)
            if on_update:
                on_update(st)
            if st["state"] in ("complete", "failed") or time.monotonic() > deadline:
                return st
            time.sleep(poll_s)

    def me(self) -> dict[str, Any]:
        """GET /api/v1/me."""
        return self._check(self.http.get("/api/v1/me"))

    def delete_video(self, video_id: str) -> dict[str, Any]:
        """DELETE /api/v1/video/{video_id}."""
        return self._check(self.http.delete(f"/api/v1/video/{video_id}"))

    def download(self, job_id: str, dest: Path) -> Path:
        """Fetch the presigned URL and download the output to ``dest``."""
        url = self._check(self.http.get(f"/api/v1/download/{job_id}"))["url"]
        with httpx.stream("GET", url, timeout=120) as resp:
            resp.raise_for_status()
            with dest.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        return dest
