"""The REST API against the real stack, misuse included: tokens, other users' ids, uploads that
are too big, cut off or not videos, huge JSON, duplicate requests, rate limits, quota, SSE,
downloads with audit, deletion with tombstones — and two more API replicas (in this process)
that must answer like the stack's own API."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from api.app import create_app
from schemas import serde
from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
W, H, FPS = 320, 180, 10


class Replica:
    """One more API process-equivalent: the real app on its own port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("replica did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def replicas(stack: Any, stack_settings: Settings) -> Iterator[tuple[Replica, Replica]]:
    """Replica a: dev mode, free tier limited to 10 MiB and 1 job a month. Replica b: the same
    but dev mode off, 30 requests a minute, CORS for one origin."""
    common = {"free_max_upload_bytes": 10 * MiB, "free_jobs_per_month": 1}
    a = Replica(stack_settings.model_copy(update=common))
    b = Replica(stack_settings.model_copy(update=common | {"dev_mode": False, "rate_limit_per_minute": 30,
                                                           "cors_origins": "http://web.example"}))
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("api-clips") / "tiny.mp4", seconds=1.0, width=W, height=H, fps=FPS)


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} | extra


def upload(url: str, token: str, path: Path, name: str | None = None, **headers: str) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(f"{url}/api/v1/upload", files={"file": (name or path.name, fh, "video/mp4")},
                          headers=auth(token, **headers), timeout=60)


def wait_valid(url: str, token: str, video_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        v = httpx.get(f"{url}/api/v1/videos/{video_id}", headers=auth(token)).json()
        if v.get("state") not in ("validating", None) or time.monotonic() > deadline:  # None: not yet seen here
            assert v["state"] == "valid", v
            return v
        time.sleep(0.2)


def segment_body(video_id: str) -> dict[str, Any]:
    x, y = sample_object_center(0, W, H, FPS)
    return {"videoId": video_id, "points": [{"x": x, "y": y, "frame": 0, "label": 1}], "mode": "blur"}


def upload_keys(settings: Settings) -> set[str]:
    resp = s3_client(settings).list_objects_v2(Bucket=settings.s3_bucket, Prefix="uploads/")
    return {o["Key"] for o in resp.get("Contents", [])}


def open_multipart_uploads(settings: Settings) -> set[str]:
    resp = s3_client(settings).list_multipart_uploads(Bucket=settings.s3_bucket, Prefix="uploads/")
    return {u["UploadId"] for u in resp.get("Uploads", [])}


def find_record(settings: Settings, topic: str, schema: str | None, match: Callable[[bytes | None, Any], bool],
                timeout_s: float = 20.0) -> Any:
    """Read ``topic`` from the beginning until a record matches (key bytes, decoded value or None)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        md = consumer.list_topics(settings.topic(topic), timeout=10).topics[settings.topic(topic)]
        consumer.assign([TopicPartition(settings.topic(topic), p, OFFSET_BEGINNING) for p in md.partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                value = None if msg.value() is None or schema is None else serde.decode(schema, msg.value())
                if match(msg.key(), value):
                    return value if value is not None else True
        raise AssertionError(f"no matching record on {topic}")
    finally:
        consumer.close()


# ---- auth ----------------------------------------------------------------------------------
def test_every_route_but_health_needs_a_token(replicas: tuple[Replica, Replica], api_url: str) -> None:
    a, _ = replicas
    spec = httpx.get(f"{api_url}/openapi.json").json()
    hexid = "0123456789abcdef0123"
    checked = 0
    for path, ops in spec["paths"].items():
        for method in ops:
            if path in ("/healthz", "/readyz", "/api/v1/dev/token"):
                continue
            r = httpx.request(method.upper(), f"{api_url}{path.replace('{video_id}', hexid).replace('{job_id}', hexid)}")
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
            checked += 1
    assert checked >= 11


def test_expired_forged_and_misdirected_tokens_are_401(api_url: str, stack_settings: Settings, mint: Callable[..., str]) -> None:
    now = int(time.time())
    good = {"sub": "mallory", "tier": "pro", "aud": stack_settings.jwt_audience, "iss": stack_settings.jwt_issuer, "iat": now, "exp": now + 60}
    none_header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(json.dumps(good).encode()).decode()
    bad = {
        "expired": mint("mallory", ttl_s=-600),
        "alg-none": f"{none_header}.{body}.",
        "wrong-key": jwt.encode(good, "not-the-secret-but-long-enough-0000000", algorithm="HS256"),
        "wrong-audience": jwt.encode(good | {"aud": "another-service"}, stack_settings.jwt_secret, algorithm="HS256"),
        "wrong-issuer": jwt.encode(good | {"iss": "evil"}, stack_settings.jwt_secret, algorithm="HS256"),
        "garbage": "abc.def.ghi",
    }
    for name, token in bad.items():
        r = httpx.get(f"{api_url}/api/v1/me", headers=auth(token))
        assert r.status_code == 401, name
        assert r.json()["detail"], name
    assert httpx.get(f"{api_url}/api/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401
    me = httpx.get(f"{api_url}/api/v1/me", headers=auth(mint("mallory", "free"))).json()
    assert me["userId"] == "mallory" and me["tier"] == "free" and me["quota"]["limit"] == 5


def test_dev_token_route_only_in_dev_mode(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    r = httpx.post(f"{a.url}/api/v1/dev/token", json={"user": "web-dev", "tier": "free"})
    assert r.status_code == 200
    me = httpx.get(f"{a.url}/api/v1/me", headers=auth(r.json()["token"])).json()
    assert (me["userId"], me["tier"]) == ("web-dev", "free")
    assert httpx.post(f"{b.url}/api/v1/dev/token", json={}).status_code == 404
    assert httpx.post(f"{a.url}/api/v1/dev/token", json={"user": "../../root"}).status_code == 422


# ---- the whole flow over three API instances -------------------------------------------------
def test_flow_other_users_sse_download_masks_delete_across_replicas(
    replicas: tuple[Replica, Replica], api_url: str, stack_settings: Settings, mint: Callable[..., str], clip: Path
) -> None:
    a, b = replicas
    alice, bob = mint("alice", "pro"), mint("bob", "pro")
    up = upload(a.url, alice, clip, name="../../etc/passwd.mp4", **{"X-Request-Id": "rid-upload-1"})
    assert up.status_code == 201, up.text
    vid = up.json()["videoId"]
    assert up.headers["x-request-id"] == "rid-upload-1"
    video = wait_valid(b.url, alice, vid)  # replica b learns of it from Kafka
    wait_valid(a.url, alice, vid)  # each replica follows the topics at its own pace (else 409 + Retry-After)
    assert video["filename"] == "passwd.mp4" and video["sha256"] == up.json()["sha256"]
    assert {k for k in upload_keys(stack_settings) if vid in k} == {f"uploads/{vid}/source"}

    seg = httpx.post(f"{a.url}/api/v1/segment", json=segment_body(vid), headers=auth(alice, **{"X-Request-Id": "rid-seg-1"}))
    assert seg.status_code == 202, seg.text
    job = seg.json()["jobId"]
    ev = find_record(stack_settings, "tapmask.segment.requested.v1", "SegmentRequested", lambda k, v: k == job.encode())
    assert ev["correlation_id"] == "rid-seg-1"

    # Bob sees none of it.
    for method, path in [("GET", f"/api/v1/videos/{vid}"), ("DELETE", f"/api/v1/video/{vid}"), ("GET", f"/api/v1/status/{job}"),
                         ("GET", f"/api/v1/download/{job}"), ("GET", f"/api/v1/download/{job}/masks"), ("GET", f"/api/v1/events/{job}")]:
        assert httpx.request(method, f"{a.url}{path}", headers=auth(bob)).status_code == 403, path
    assert httpx.get(f"{a.url}/api/v1/events/{job}", params={"token": bob}).status_code == 403
    assert httpx.post(f"{a.url}/api/v1/segment", json=segment_body(vid), headers=auth(bob)).status_code == 403
    assert all(j["jobId"] != job for j in httpx.get(f"{a.url}/api/v1/jobs", headers=auth(bob)).json()["items"])
    assert all(v["videoId"] != vid for v in httpx.get(f"{a.url}/api/v1/videos", headers=auth(bob)).json()["items"])

    # Live progress over SSE on replica b, token in the query (as EventSource sends it).
    events: list[tuple[str, str]] = []
    with httpx.stream("GET", f"{b.url}/api/v1/events/{job}", params={"token": alice}, timeout=180) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, line[6:]))
                if name == "end":
                    break
    assert events[0][0] == "status" and events[-1] == ("end", json.dumps({"state": "complete"}))
    percents = [json.loads(d)["percent"] for n, d in events if n == "status"]
    assert percents == sorted(percents) and percents[-1] == 100.0

    # Every instance answers alike.
    answers = [httpx.get(f"{u}/api/v1/status/{job}", headers=auth(alice)).json() for u in (a.url, b.url, api_url)]
    assert answers[0] == answers[1] == answers[2] and answers[0]["state"] == "complete"
    assert answers[0]["downloadUrl"] == f"/api/v1/download/{job}"
    lists = [httpx.get(f"{u}/api/v1/jobs", headers=auth(alice)).json() for u in (a.url, b.url)]
    assert lists[0] == lists[1] and lists[0]["items"][0]["jobId"] == job

    # Download: a presigned URL that works, and an audit record of it.
    d = httpx.get(f"{b.url}/api/v1/download/{job}", headers=auth(alice, **{"X-Request-Id": "rid-dl-1"}))
    assert d.status_code == 200 and d.json()["expiresIn"] == 86400
    assert len(httpx.get(d.json()["url"]).content) > 1000
    audit = find_record(stack_settings, "tapmask.audit.v1", "AuditEvent", lambda k, v: v is not None and v["correlation_id"] == "rid-dl-1")
    assert (audit["user_id"], audit["action"], audit["resource_id"]) == ("alice", "download", job)

    # Masks as a zip archive (the consumer uploads them under outputs/{job}/masks/).
    s3 = s3_client(stack_settings)
    frames = video["metadata"]["frame_count"]
    m = httpx.get(f"{a.url}/api/v1/download/{job}/masks", headers=auth(alice))
    assert m.status_code == 200 and m.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(BytesIO(m.content)).namelist()
    assert sorted(names) == [f"masks-{job}/{i:06d}.png" for i in range(frames)] + [f"masks-{job}/masks.json"]

    # Delete: S3 emptied, jobs tombstoned, gone on every instance, audited.
    r = httpx.delete(f"{a.url}/api/v1/video/{vid}", headers=auth(alice, **{"X-Request-Id": "rid-del-1"}))
    assert r.status_code == 200 and r.json()["jobIds"] == [job] and r.json()["objectsDeleted"] >= 4
    left = [o["Key"] for p in (f"uploads/{vid}/", f"outputs/{job}/")
            for o in s3.list_objects_v2(Bucket=stack_settings.s3_bucket, Prefix=p).get("Contents", [])]
    assert left == []
    assert find_record(stack_settings, "tapmask.job.status.v1", None, lambda k, v: k == job.encode() and v is None)
    find_record(stack_settings, "tapmask.audit.v1", "AuditEvent", lambda k, v: v is not None and v["correlation_id"] == "rid-del-1"
                and v["action"] == "delete")
    deadline = time.monotonic() + 20
    for u in (a.url, b.url, api_url):
        while httpx.get(f"{u}/api/v1/status/{job}", headers=auth(alice)).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(f"{u}/api/v1/status/{job}", headers=auth(alice)).status_code == 404, u
        assert httpx.get(f"{u}/api/v1/videos/{vid}", headers=auth(alice)).status_code == 404, u


# ---- uploads -------------------------------------------------------------------------------
def _raw_request(port: int, head: bytes, body_parts: list[bytes], read_answer: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        if not read_answer:
            return b""
        return sock.recv(65536)


def records_to_end(settings: Settings, topic: str, schema: str) -> list[Any]:
    """Every record of ``topic`` from the beginning up to its end now (decoded; tombstones skipped)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        name = settings.topic(topic)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                for p in consumer.list_topics(name, timeout=10).topics[name].partitions}
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in todo])
        values: list[Any] = []
        while todo:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                if msg.value() is not None:
                    values.append(serde.decode(schema, msg.value()))
                if msg.offset() >= ends[msg.partition()][1] - 1:
                    todo.discard(msg.partition())
        return values
    finally:
        consumer.close()


def test_uploads_too_big_cut_off_or_not_video_leave_nothing(replicas: tuple[Replica, Replica], stack_settings: Settings,
                                                           mint: Callable[..., str], clip: Path, tmp_path: Path) -> None:
    a, _ = replicas
    free = mint("uploader-free", "free")
    before_keys, before_mp = upload_keys(stack_settings), open_multipart_uploads(stack_settings)
    head = clip.read_bytes()[:4096]

    # Over the free tier's 10 MiB while streaming (chunked: no Content-Length to check first).
    boundary = "tapmaskboundary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
               f"Content-Type: video/mp4\r\n\r\n").encode() + head
        for _ in range(12):
            yield b"\0" * MiB
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{a.url}/api/v1/upload", content=body(), headers=auth(free, **{"content-type": f"multipart/form-data; boundary={boundary}"}))
    assert r.status_code == 413 and "free tier" in r.json()["detail"]
    # The same with a declared size: refused before a byte of the body is read.
    ans = _raw_request(a.port, (f"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {free}\r\n"
                                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {200 * MiB}\r\n\r\n").encode(),
                       [], read_answer=True)
    assert ans.startswith(b"HTTP/1.1 413")
    # Cut off: Content-Length says 20 MiB, 9 MiB arrive (one S3 part written), then the client goes away.
    pro = mint("uploader-pro", "pro")
    start = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.mp4\"\r\n\r\n").encode() + head
    _raw_request(a.port, (f"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {pro}\r\n"
                          f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {20 * MiB}\r\n\r\n").encode(),
                 [start] + [b"\0" * MiB] * 9, read_answer=False)
    # A text file named .mp4.
    fake = tmp_path / "holiday.mp4"
    fake.write_text("just text, renamed\n" * 200)
    r = upload(a.url, free, fake)
    assert r.status_code == 415

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (upload_keys(stack_settings) != before_keys or open_multipart_uploads(stack_settings) != before_mp):
        time.sleep(0.3)
    assert upload_keys(stack_settings) == before_keys
    assert open_multipart_uploads(stack_settings) == before_mp
    # ...and no record of them: no video in any list, no video.uploaded or upload audit event
    # (the scan does see an accepted upload's event).
    ok = upload(a.url, mint("uploader-ok", "pro"), clip)
    assert ok.status_code == 201, ok.text
    users = {"uploader-free", "uploader-pro"}
    for token in (free, pro):
        for replica in replicas:
            assert httpx.get(f"{replica.url}/api/v1/videos", headers=auth(token)).json()["total"] == 0
    uploaded = records_to_end(stack_settings, "tapmask.video.uploaded.v1", "VideoUploaded")
    assert ok.json()["videoId"] in {v["video_id"] for v in uploaded}
    assert not [v for v in uploaded if v["owner_id"] in users]
    audit = records_to_end(stack_settings, "tapmask.audit.v1", "AuditEvent")
    assert not [v for v in audit if v["user_id"] in users and v["action"] == "upload"]


def test_huge_json_body_is_413(api_url: str, api_token: str) -> None:
    big = b'{"videoId": "' + b"a" * (2 * MiB) + b'"}'
    r = httpx.post(f"{api_url}/api/v1/segment", content=big, headers=auth(api_token, **{"content-type": "application/json"}))
    assert r.status_code == 413
    r = httpx.post(f"{api_url}/api/v1/segment", content=iter([big[:MiB], big[MiB:]]),
                   headers=auth(api_token, **{"content-type": "application/json"}))
    assert r.status_code == 413


# ---- idempotency, rate limits, quota, lists, CORS ---------------------------------------------
def test_concurrent_duplicates_with_one_idempotency_key_make_one_resource(
    replicas: tuple[Replica, Replica], api_url: str, stack_settings: Settings, mint: Callable[..., str], clip: Path
) -> None:
    a, b = replicas
    user = mint(f"idem-{uuid.uuid4().hex[:8]}", "pro")
    key = uuid.uuid4().hex
    urls = [a.url, b.url, api_url, a.url]
    with ThreadPoolExecutor(4) as pool:
        ups = list(pool.map(lambda u: upload(u, user, clip, **{"Idempotency-Key": key}), urls))
    assert [r.status_code for r in ups] == [201] * 4, [r.text for r in ups]
    assert len({r.json()["videoId"] for r in ups}) == 1
    vid = ups[0].json()["videoId"]
    # Each replica follows the topics on its own (api/README.md, "Status view"): the burst
    # below goes to all three, so every one of them must have seen the video valid.
    for url in dict.fromkeys(urls):
        wait_valid(url, user, vid)
    assert httpx.get(f"{a.url}/api/v1/videos", headers=auth(user)).json()["total"] == 1

    skey = uuid.uuid4().hex
    with ThreadPoolExecutor(6) as pool:
        segs = list(pool.map(lambda u: httpx.post(f"{u}/api/v1/segment", json=segment_body(vid), headers=auth(user, **{"Idempotency-Key": skey})),
                             urls + urls[:2]))
    assert [r.status_code for r in segs] == [202] * 6, [r.text for r in segs]
    assert len({r.json()["jobId"] for r in segs}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in segs) == 5
    deadline = time.monotonic() + 20  # the winner may have been another replica: wait for Kafka
    while True:
        jobs = httpx.get(f"{a.url}/api/v1/jobs", params={"videoId": vid}, headers=auth(user)).json()
        if jobs["total"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert jobs["total"] == 1
    other = segment_body(vid) | {"mode": "pixelate"}
    r = httpx.post(f"{a.url}/api/v1/segment", json=other, headers=auth(user, **{"Idempotency-Key": skey}))
    assert r.status_code == 422 and "different request" in r.json()["detail"]


def test_rate_limit_is_429_with_retry_after(replicas: tuple[Replica, Replica], mint: Callable[..., str]) -> None:
    _, b = replicas
    token = mint(f"rl-{uuid.uuid4().hex[:8]}", "pro")
    with httpx.Client(base_url=b.url, headers=auth(token)) as c:
        codes = [c.get("/api/v1/me") for _ in range(70)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in codes)
    assert 1 <= int(limited[0].headers["retry-after"]) <= 61


def test_free_quota_refusal_and_me(replicas: tuple[Replica, Replica], mint: Callable[..., str], clip: Path) -> None:
    a, _ = replicas
    token = mint(f"free-{uuid.uuid4().hex[:8]}", "free")
    me = httpx.get(f"{a.url}/api/v1/me", headers=auth(token)).json()
    assert me["quota"]["limit"] == 1 and me["quota"]["left"] == 1 and me["quota"]["resetsAt"].endswith("-01T00:00:00Z")
    assert me["maxUploadBytes"] == 10 * MiB
    vid = upload(a.url, token, clip).json()["videoId"]
    wait_valid(a.url, token, vid)
    outside = segment_body(vid) | {"points": [{"x": W + 1, "y": 5, "frame": 0, "label": 1}]}
    assert httpx.post(f"{a.url}/api/v1/segment", json=outside, headers=auth(token)).status_code == 422
    badbox = segment_body(vid) | {"box": {"x0": 50, "y0": 50, "x1": 10, "y1": 10, "frame": 0}}
    assert httpx.post(f"{a.url}/api/v1/segment", json=badbox, headers=auth(token)).status_code == 422
    assert httpx.post(f"{a.url}/api/v1/segment", json=segment_body(vid), headers=auth(token)).status_code == 202
    me = httpx.get(f"{a.url}/api/v1/me", headers=auth(token)).json()
    assert me["quota"]["used"] == 1 and me["quota"]["left"] == 0
    r = httpx.post(f"{a.url}/api/v1/segment", json=segment_body(vid), headers=auth(token))
    assert r.status_code == 402 and "quota_exceeded" in r.json()["detail"] and "resets" in r.json()["detail"]


def test_lists_are_paginated(replicas: tuple[Replica, Replica], mint: Callable[..., str], clip: Path) -> None:
    a, _ = replicas
    token = mint(f"pages-{uuid.uuid4().hex[:8]}", "pro")
    ids = [upload(a.url, token, clip).json()["videoId"] for _ in range(3)]
    p1 = httpx.get(f"{a.url}/api/v1/videos", params={"limit": 2}, headers=auth(token)).json()
    assert p1["total"] == 3 and len(p1["items"]) == 2 and p1["nextOffset"] == 2
    p2 = httpx.get(f"{a.url}/api/v1/videos", params={"limit": 2, "offset": 2}, headers=auth(token)).json()
    assert len(p2["items"]) == 1 and p2["nextOffset"] is None
    assert [v["videoId"] for v in p1["items"] + p2["items"]] == ids[::-1]
    assert httpx.get(f"{a.url}/api/v1/videos", params={"limit": 1000}, headers=auth(token)).status_code == 422


def test_cors_allows_only_the_configured_origin(replicas: tuple[Replica, Replica]) -> None:
    _, b = replicas
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,idempotency-key"}
    ok = httpx.options(f"{b.url}/api/v1/segment", headers={"Origin": "http://web.example"} | pre)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://web.example"
    bad = httpx.options(f"{b.url}/api/v1/segment", headers={"Origin": "http://evil.example"} | pre)
    assert "access-control-allow-origin" not in bad.headers


def test_request_id_is_in_the_api_log_lines_and_never_the_query_string(
    api_url: str, stack_settings: Settings, mint: Callable[..., str]
) -> None:
    """The stack's own API process logs one line per call with the caller's request id; an
    odd id is replaced, and an SSE token in the query string never reaches the log."""
    token = mint("log-reader", "pro")
    r = httpx.get(f"{api_url}/api/v1/jobs", headers=auth(token, **{"X-Request-Id": "rid-log-check-1"}))
    assert r.status_code == 200 and r.headers["x-request-id"] == "rid-log-check-1"
    odd = httpx.get(f"{api_url}/api/v1/me", headers=auth(token, **{"X-Request-Id": "bad id\twith tab"}))
    assert odd.headers["x-request-id"] != "bad id\twith tab" and len(odd.headers["x-request-id"]) == 32
    missing = httpx.get(f"{api_url}/api/v1/events/{'0' * 32}", params={"token": token},
                        headers={"X-Request-Id": "rid-log-check-2"})
    assert missing.status_code == 404
    log_file = Path(stack_settings.home) / "logs" / "api.log"
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = log_file.read_text(errors="replace").splitlines()
        if any("rid-log-check-2" in line for line in lines):
            break
        time.sleep(0.2)
    mine = [line for line in lines if "rid-log-check-1" in line]
    assert mine and "api.request" in mine[-1] and "path=/api/v1/jobs" in mine[-1] and "status=200" in mine[-1], mine
    assert any(odd.headers["x-request-id"] in line and "path=/api/v1/me" in line for line in lines)
    sse = [line for line in lines if "rid-log-check-2" in line]
    assert sse and "status=404" in sse[-1]
    assert not any(token in line for line in lines), "a token reached the log"
