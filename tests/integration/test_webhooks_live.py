"""Webhooks over the real stack: endpoints registered through the API, notifications on the
real broker, deliveries to a real HTTP receiver on 127.0.0.1 that checks the signature itself.

The stack runs with a retry schedule of seconds (TAPMASK_WEBHOOK_RETRY_SCHEDULE_S, set in
test_processors_live before the stack starts) and loopback allowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from schemas.topics import DLQ, NOTIFICATION
from tapmask.events import EventProducer, now_ms
from tapmask.settings import Settings
from tests.integration.test_processors_live import TopicReader  # also sets the stack's webhook env

pytestmark = pytest.mark.integration


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written from the specification, not from TapMask's code."""
    key = base64.b64decode(secret[len("whsec_"):])
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.split(",", 1)[1], expected)
               for sig in headers["webhook-signature"].split(" ") if sig.startswith("v1,"))


class Receiver:
    """A small HTTP server: records what it gets, answers ``status_for(path)``."""

    def __init__(self, port: int = 0, status_for: dict[str, int] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.status_for = status_for or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.received.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                self.send_response(outer.status_for.get(self.path, 200))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def user_and_auth(stack: Any, stack_settings: Settings) -> tuple[str, dict[str, str]]:
    """A user of the test's own and the headers the API wants for it (JWT when auth has landed)."""
    try:
        from api.auth import mint_token
    except ImportError:  # the stand-in: every caller is the dev user
        return stack_settings.dev_user_id, {}
    user = f"wh-{uuid.uuid4().hex[:8]}"
    return user, {"authorization": f"Bearer {mint_token(stack_settings, user, 'pro', 'eu')}"}


@pytest.fixture(scope="module")
def api(api_url: str, user_and_auth: tuple[str, dict[str, str]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=user_and_auth[1], timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def producer(stack: Any, stack_settings: Settings) -> Iterator[EventProducer]:
    p = EventProducer(stack_settings)
    yield p
    p.close()


def notify(producer: EventProducer, user: str, kind: str, event_id: str | None = None) -> str:
    event_id = event_id or uuid.uuid4().hex
    job = uuid.uuid4().hex
    producer.publish(NOTIFICATION, user, {
        "event_id": event_id, "occurred_at": now_ms(), "correlation_id": None, "kind": kind, "user_id": user,
        "job_id": job, "payload_json": json.dumps({"jobId": job, "state": kind.split(".")[1]})})
    return event_id


def wait_for(cond: Any, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_endpoint_urls_on_private_addresses_are_refused(api: httpx.Client) -> None:
    for url in ("http://10.0.0.5/hook", "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/x",
                "http://[fd00:ec2::254]/", "ftp://example.com/x"):
        r = api.post("/api/v1/webhooks", json={"url": url})
        assert r.status_code == 422, (url, r.text)
        assert "url:" in r.json()["detail"]
    r = api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "eventTypes": ["job.sparkled"]})
    assert r.status_code == 422 and "eventTypes" in r.json()["detail"]


def test_a_receiver_that_is_down_gets_every_delivery_once_it_is_back(
        api: httpx.Client, producer: EventProducer, user_and_auth: tuple[str, dict[str, str]], stack_settings: Settings) -> None:
    user = user_and_auth[0]
    down_port = free_port()  # nothing listens here yet: connection refused
    always = Receiver(status_for={"/gone": 410, "/fail": 500})
    dlq = TopicReader(stack_settings, DLQ)
    back: Receiver | None = None
    try:
        made = {}
        for name, url in (("main", f"http://127.0.0.1:{down_port}/hook"), ("gone", f"http://127.0.0.1:{always.port}/gone"),
                          ("fail", f"http://127.0.0.1:{always.port}/fail")):
            r = api.post("/api/v1/webhooks", json={"url": url})
            assert r.status_code == 201, r.text
            made[name] = r.json()
            assert made[name]["secret"].startswith("whsec_")
        listed = api.get("/api/v1/webhooks").json()["endpoints"]
        assert {e["id"] for e in listed} >= {e["id"] for e in made.values()}
        assert all("secret" not in e for e in listed)

        kinds = ["job.started", "job.completed", "job.failed", "job.interrupted", "quota.exceeded"]
        ids = [notify(producer, user, k) for k in kinds]
        notify(producer, user, "job.completed", event_id=ids[1])  # the same notification again
        expected = {f"msg_{i}" for i in ids}

        # While it is down the log shows retries.
        main_id = made["main"]["id"]
        assert wait_for(lambda: any(e["outcome"] == "retrying" for e in
                                    api.get(f"/api/v1/webhooks/{main_id}/deliveries").json()["deliveries"]), 30)
        time.sleep(2.0)
        back = Receiver(port=down_port)
        assert wait_for(lambda: {r["headers"]["webhook-id"] for r in back.received} >= expected, 60), back.received

        got = [r for r in back.received if r["headers"]["webhook-id"] in expected]
        for r in got:
            assert verify(made["main"]["secret"], r["headers"], r["body"]), r["headers"]
            body = json.loads(r["body"])
            assert body["type"] in kinds and "data" in body and body["timestamp"].endswith("Z")
        # one delivery per notification: the repeated notification was not sent again
        assert sorted(r["headers"]["webhook-id"] for r in got) == sorted(expected)
        log = api.get(f"/api/v1/webhooks/{main_id}/deliveries").json()["deliveries"]
        assert {e["webhookId"] for e in log if e["outcome"] == "delivered"} == expected

        # 410 Gone disables the endpoint.
        gone = made["gone"]["id"]
        assert wait_for(lambda: api.get(f"/api/v1/webhooks/{gone}").json()["disabled"], 30)
        assert "410" in api.get(f"/api/v1/webhooks/{gone}").json()["disabledReason"]

        # A receiver that always fails: retried on the schedule, then dead-lettered, every message.
        def dead() -> set[str]:
            dlq.poll()
            return {rec["error"].split(" ")[1] for _, rec, _ in dlq.seen
                    if rec and rec["service"] == "notifications" and made["fail"]["id"] in rec["error"]}
        assert wait_for(lambda: dead() >= expected, 60), dead()
        fails = [r for r in always.received if r["path"] == "/fail" and r["headers"]["webhook-id"] == f"msg_{ids[0]}"]
        schedule = stack_settings.webhook_retry_schedule_s.split(",")
        assert len(fails) == len(schedule) + 1  # the first try and every retry of the schedule
        assert all(verify(made["fail"]["secret"], r["headers"], r["body"]) for r in fails)
        assert len({r["headers"]["webhook-id"] for r in fails}) == 1  # the id is stable across retries

        # Delete: gone from the list, 404 after.
        assert api.delete(f"/api/v1/webhooks/{main_id}").status_code == 204
        assert api.get(f"/api/v1/webhooks/{main_id}").status_code == 404
    finally:
        dlq.close()
        always.close()
        if back is not None:
            back.close()
