"""Spot interruption notices from the instance-metadata service.

AWS answers ``GET /latest/meta-data/spot/instance-action`` with 404 until the instance is
about to be reclaimed, then 200 and ``{"action": "terminate", "time": "..."}`` about two
minutes ahead. IMDSv2 wants a session token (``PUT /latest/api/token``); the watcher asks for
one and carries on without it where the endpoint does not offer tokens (IMDSv1, tests).

The watcher polls in a daemon thread and calls ``on_notice(detail)`` once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

log = structlog.get_logger()
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per poll


def _token_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/latest/api/token", "", ""))


_token: dict[str, tuple[str, float]] = {}


def _imds_token(http: httpx.Client, url: str) -> str | None:
    """An IMDSv2 session token (cached for 5 minutes), or None where none is offered."""
    cached = _token.get(url)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    try:
        tok = http.put(_token_url(url), headers={"X-aws-ec2-metadata-token-ttl-seconds": "360"})
    except httpx.HTTPError:
        return None
    if tok.status_code != 200 or not tok.text:
        return None
    _token[url] = (tok.text, time.monotonic() + 300)
    return tok.text


def check_notice(http: httpx.Client, url: str) -> dict | None:
    """One poll: the notice as a dict, or None when there is none (404, or unreachable)."""
    token = _imds_token(http, url)
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    try:
        r = http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        log.debug("spot.poll_failed", error=str(exc))
        return None
    if r.status_code == 401:
        _token.pop(url, None)  # expired token: fetch a new one next time
    if r.status_code != 200:
        return None
    try:
        body = json.loads(r.text)
    except ValueError:
        body = {"raw": r.text[:200]}
    if isinstance(body, dict) and body.get("action", "terminate") in ("terminate", "stop", "hibernate"):
        return body
    return None


class SpotWatcher:
    """Polls ``url`` every ``interval_s`` until a notice arrives or ``stop()`` is called."""

    def __init__(self, url: str, interval_s: float, on_notice: Callable[[dict], None]) -> None:
        self.url, self.interval_s, self.on_notice = url, interval_s, on_notice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spot-watcher", daemon=True)
        self.notice: dict | None = None

    def start(self) -> SpotWatcher:
        self._thread.start()
        log.info("spot.watching", url=self.url, interval_s=self.interval_s)
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        timeout = httpx.Timeout(min(2.0, max(0.2, self.interval_s)))
        with httpx.Client(timeout=timeout) as http:
            while not self._stop.is_set():
                notice = check_notice(http, self.url)
                if notice is not None:
                    self.notice = notice
                    log.warning("spot.notice", notice=notice)
                    self.on_notice(notice)
                    return
                self._stop.wait(self.interval_s)
