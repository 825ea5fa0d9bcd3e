"""The spot-notice watcher against a local HTTP server shaped like the instance-metadata
service, and the retry rules."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gpu_consumers.engine.errors import JobCancelled, UndecodableVideo
from gpu_consumers.retry import backoff_s, classify, describe
from gpu_consumers.spot import SpotWatcher


class MetadataServer:
    """404 on the spot path until ``notice`` is set; offers IMDSv2 tokens when ``v2``."""

    def __init__(self, v2: bool = True) -> None:
        self.notice: dict | None = None
        self.v2 = v2
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_PUT(self) -> None:  # noqa: N802
                code = 200 if outer.v2 else 405
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"tok" if code == 200 else b"")

            def do_GET(self) -> None:  # noqa: N802
                if outer.v2 and self.headers.get("X-aws-ec2-metadata-token") != "tok":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(outer.notice).encode() if outer.notice else b"Not Found"
                self.send_response(200 if outer.notice else 404)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/latest/meta-data/spot/instance-action"

    def close(self) -> None:
        self.server.shutdown()


def test_watcher_fires_once_when_the_notice_appears() -> None:
    for v2 in (True, False):
        srv = MetadataServer(v2=v2)
        seen: list[dict] = []
        w = SpotWatcher(srv.url, 0.05, seen.append).start()
        time.sleep(0.3)
        assert seen == []
        srv.notice = {"action": "terminate", "time": "2026-11-21T18:00:00Z"}
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == [srv.notice]
        w.stop()
        srv.close()


def test_unreachable_endpoint_is_no_notice() -> None:
    seen: list[dict] = []
    w = SpotWatcher("http://127.0.0.1:9/latest/meta-data/spot/instance-action", 0.05, seen.append).start()
    time.sleep(0.3)
    w.stop()
    assert seen == []


def test_failure_classes_and_backoff() -> None:
    assert classify(JobCancelled("x")) == "cancelled"
    assert classify(UndecodableVideo("bad")) == "permanent"
    assert classify(MemoryError()) == "oom"
    assert classify(type("OutOfMemoryError", (RuntimeError,), {})("CUDA")) == "oom"
    assert classify(ConnectionError("reset")) == "retryable"
    assert [backoff_s(n) for n in (1, 2)] == [2.0, 4.0]
    assert describe(UndecodableVideo("The file is not a video.")) == "The file is not a video."
    assert "TimeoutError" in describe(TimeoutError("slow"))
