"""Webhook signing (against the Standard Webhooks reference vector and an independent
verifier), the URL guard, and the retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import pytest

from processors.webhooks import (EVENT_TYPES, UrlRefused, body_of, check_url, new_secret, next_delay, retry_after_s,
                                 schedule_of, sign, signed_headers)
from tapmask.settings import Settings


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks reference libraries' tests.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_an_independent_check() -> None:
    secret, body = new_secret(), b'{"type":"job.completed"}'
    h = signed_headers(secret, "msg_1", body, timestamp=1700000000)
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"] == "1700000000"
    assert h["webhook-signature"] == f"v1,{expected}"
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.10/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://169.254.10.10/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://0.0.0.0/", "public"),
    ("ftp://8.8.8.8/x", "https://"),
    ("https://user:pw@8.8.8.8/x", "credentials"),
    ("https:///nohost", "no host"),
])
def test_private_and_odd_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        check_url(url, allow_loopback=False)


def test_loopback_only_with_the_development_setting() -> None:
    assert check_url("http://127.0.0.1:9/x", allow_loopback=True) == "http://127.0.0.1:9/x"
    with pytest.raises(UrlRefused, match="private"):
        check_url("http://10.0.0.1/x", allow_loopback=True)
    assert check_url("https://8.8.8.8/hook", allow_loopback=False) == "https://8.8.8.8/hook"


def test_the_default_schedule_spans_about_three_days() -> None:
    sched = schedule_of(Settings())
    assert 2.5 * 86400 <= sum(sched) <= 3.5 * 86400
    assert sched == sorted(sched) and sched[0] <= 10


def test_next_delay_jitter_retry_after_and_the_end() -> None:
    sched, rnd = [5.0, 300.0], random.Random(1)
    for _ in range(200):
        d = next_delay(1, sched, 0.2, None, 3600, rnd)
        assert 4.0 <= d <= 6.0
    assert next_delay(1, sched, 0.0, 120.0, 3600) == 120.0  # Retry-After longer than the schedule wins
    assert next_delay(2, sched, 0.0, 10.0, 3600) == 300.0  # ...but never shortens it
    assert next_delay(1, sched, 0.0, 10**9, 3600) == 3600  # and is capped
    assert next_delay(3, sched, 0.2, None, 3600) is None  # schedule spent → dead letter


def test_retry_after_parsing() -> None:
    assert retry_after_s("30") == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_body_is_standard_webhooks_shaped() -> None:
    body = json.loads(body_of({"kind": "job.completed", "occurred_at": 0, "payload_json": '{"jobId": "j"}'}))
    assert body == {"type": "job.completed", "timestamp": "1970-01-01T00:00:00Z", "data": {"jobId": "j"}}
    assert "quota.exceeded" in EVENT_TYPES
