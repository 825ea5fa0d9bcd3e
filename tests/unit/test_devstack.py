"""Pure logic of the dev stack: port preflight, pid ownership, topic specs, child env."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapmask.devstack import (
    DevStack,
    DevStackError,
    StackInfo,
    pick_free_dev_ports,
    read_stack_info,
    seaweed_socket_paths,
)
from tapmask.devstack_proc import (
    GRPC_OFFSET,
    PortNeed,
    ProcessRecord,
    check_ports,
    identify,
    pid_exists,
    pid_is_ours,
    port_in_use_message,
    port_is_free,
    stop_process,
    tail_line,
)
from tapmask.settings import Settings
from tapmask.topics_admin import TopicSpec, TopicSpecError, load_topic_specs, parse_topic_specs

REPO = Path(__file__).resolve().parents[2]


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(home=tmp_path / "home", **(pick_free_dev_ports() | overrides))


# ------------------------------------------------------------------------------- ports


def test_port_in_use_message_names_port_and_variable(tmp_path):
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        stack = DevStack(_settings(tmp_path, dev_kafka_port=port))
        with pytest.raises(DevStackError) as err:
            check_ports(stack.port_needs())
    assert str(err.value) == (
        f"port {port} (broker) is already in use: set TAPMASK_DEV_KAFKA_PORT to a free port "
        "or run `tapmask dev down`"
    )


def test_grpc_port_in_use_names_the_base_variable(tmp_path):
    ports = pick_free_dev_ports()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports["dev_s3_port"] + GRPC_OFFSET))
        sock.listen()
        stack = DevStack(Settings(home=tmp_path, **ports))
        with pytest.raises(DevStackError) as err:
            check_ports(stack.port_needs())
    message = str(err.value)
    assert f"port {ports['dev_s3_port'] + GRPC_OFFSET} (S3 gRPC" in message
    assert "TAPMASK_DEV_S3_PORT + 10000" in message
    assert "set TAPMASK_DEV_S3_PORT to a free port" in message
    assert "\n" not in message


def test_duplicate_and_out_of_range_ports(tmp_path):
    ports = pick_free_dev_ports()
    clash = Settings(home=tmp_path, **(ports | {"dev_valkey_port": ports["dev_kafka_port"]}))
    with pytest.raises(DevStackError, match="wanted twice.*TAPMASK_DEV_KAFKA_PORT.*TAPMASK_DEV_VALKEY_PORT"):
        check_ports(DevStack(clash).port_needs(), is_free=lambda p: True)
    derived = Settings(home=tmp_path, **(ports | {"dev_s3_port": ports["dev_kafka_port"] - GRPC_OFFSET}))
    with pytest.raises(DevStackError, match="wanted twice"):
        check_ports(DevStack(derived).port_needs(), is_free=lambda p: True)
    too_high = Settings(home=tmp_path, **(ports | {"dev_s3_port": 60000}))
    with pytest.raises(DevStackError, match="port 70000 .*out of range.*TAPMASK_DEV_S3_PORT"):
        check_ports(DevStack(too_high).port_needs(), is_free=lambda p: True)


def test_all_free_ports_pass_and_cover_grpc(tmp_path):
    stack = DevStack(_settings(tmp_path))
    needs = stack.port_needs()
    check_ports(needs)
    ports = {n.port for n in needs}
    s = stack.settings
    assert {s.dev_kafka_port, s.dev_valkey_port, s.dev_s3_port, s.dev_s3_port + GRPC_OFFSET,
            s.dev_seaweed_master_port + GRPC_OFFSET, s.dev_seaweed_volume_port + GRPC_OFFSET,
            s.dev_seaweed_filer_port + GRPC_OFFSET} <= ports
    assert len(needs) == 10


def test_pick_free_dev_ports_distinct_with_grpc_room():
    ports = pick_free_dev_ports()
    values = list(ports.values())
    assert len(set(values)) == 6
    assert all(port_is_free(p) and port_is_free(p + GRPC_OFFSET) for p in values)
    assert all(p + GRPC_OFFSET not in values for p in values)
    Settings(**ports)  # every key is a Settings field


def test_port_message_for_derived_port():
    need = PortNeed(18333, "S3 gRPC", "TAPMASK_DEV_S3_PORT", derived="= TAPMASK_DEV_S3_PORT + 10000")
    assert port_in_use_message(need) == (
        "port 18333 (S3 gRPC, = TAPMASK_DEV_S3_PORT + 10000) is already in use: set "
        "TAPMASK_DEV_S3_PORT to a free port (its +10000 port must be free too) or run "
        "`tapmask dev down`"
    )


def test_unknown_storage_engine(tmp_path):
    stack = DevStack(_settings(tmp_path, broker_storage="tape"))
    with pytest.raises(DevStackError, match="unknown broker storage 'tape'.*TAPMASK_BROKER_STORAGE"):
        stack.preflight()


# -------------------------------------------------------------------------- pid ownership


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_pid_ownership_live_process(sleeper, tmp_path):
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    rec = identify("sleeper", sleeper.pid, argv, tmp_path / "x.log", order=0, port=None)
    assert rec.start_ticks is not None and rec.exe
    assert pid_is_ours(rec)
    # A pid the kernel reused: same number, different start time.
    assert not pid_is_ours(ProcessRecord(**{**rec.__dict__, "start_ticks": rec.start_ticks + 1}))
    # Another boot.
    assert not pid_is_ours(ProcessRecord(**{**rec.__dict__, "boot_id": "not-this-boot"}))
    # Another program altogether (neither command line nor executable match).
    assert not pid_is_ours(ProcessRecord(**{**rec.__dict__, "argv": ["/bin/other"], "exe": "/bin/other"}))
    # A server that rewrote its title (Valkey): the executable still identifies it.
    assert pid_is_ours(ProcessRecord(**{**rec.__dict__, "argv": ["valkey-server *:6379"]}))


def test_pid_ownership_dead_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    rec = identify("gone", proc.pid, proc.args, tmp_path / "x.log", order=0, port=None)
    proc.wait()
    assert not pid_is_ours(rec)
    assert not pid_exists(proc.pid)


def _fake_proc(root: Path, pid: int, *, state="S", start=4242, cmdline=("/bin/srv", "-x"),
               exe="/bin/srv", boot="boot-1") -> None:
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/random").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/random/boot_id").write_text(boot + "\n")
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    fields = [state] + ["0"] * 18 + [str(start)] + ["0"] * 10
    (d / "stat").write_text(f"{pid} (my (odd) srv) " + " ".join(fields) + "\n")
    (d / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmdline) + b"\0")
    if (d / "exe").is_symlink():
        (d / "exe").unlink()
    (d / "exe").symlink_to(exe)


def test_pid_ownership_with_fake_proc(tmp_path):
    root = tmp_path / "proc"
    rec = ProcessRecord(name="srv", pid=777, argv=["/bin/srv", "-x"], log="l", exe="/bin/srv",
                        start_ticks=4242, boot_id="boot-1")
    _fake_proc(root, 777)
    assert pid_is_ours(rec, proc_root=root)
    _fake_proc(root, 777, start=9999)  # recycled pid
    assert not pid_is_ours(rec, proc_root=root)
    _fake_proc(root, 777, boot="boot-2")  # after a reboot
    assert not pid_is_ours(rec, proc_root=root)
    _fake_proc(root, 777, state="Z")  # exited, not reaped
    assert not pid_is_ours(rec, proc_root=root)
    _fake_proc(root, 777, cmdline=("bash",), exe="/bin/bash")  # same start tick, other program
    assert not pid_is_ours(rec, proc_root=root)
    assert not pid_is_ours(ProcessRecord(**{**rec.__dict__, "pid": 778}), proc_root=root)


def test_stop_process_never_signals_a_recycled_pid(sleeper, tmp_path):
    argv = sleeper.args
    rec = identify("sleeper", sleeper.pid, argv, tmp_path / "x.log", order=0, port=None)
    stale = ProcessRecord(**{**rec.__dict__, "start_ticks": rec.start_ticks - 1})
    assert stop_process(stale, term_timeout=0.5) == "not running"
    time.sleep(0.2)
    assert sleeper.poll() is None
    assert stop_process(rec, term_timeout=5) == "stopped"
    assert sleeper.wait(timeout=5) == -signal.SIGTERM


def test_stop_process_kills_after_grace(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    rec = identify("stubborn", proc.pid, proc.args, tmp_path / "x.log", order=0, port=None)
    t0 = time.monotonic()
    assert stop_process(rec, term_timeout=0.5) == "killed"
    assert time.monotonic() - t0 < 5
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_process_record_roundtrip(tmp_path):
    rec = ProcessRecord(name="tansu", pid=12, argv=["tansu", "broker"], log="/x.log", order=1,
                        port=9092, exe="/bin/tansu", start_ticks=5, boot_id="b", stop_timeout_s=3.0)
    path = tmp_path / "tansu.pid"
    path.write_text(rec.to_json())
    assert ProcessRecord.read(path) == rec
    path.write_text("1234\n")  # not ours (plain pid file)
    assert ProcessRecord.read(path) is None


# ----------------------------------------------------------------------------- topics

TOPICS = """
[[topic]]
name = "a.status"
key = "job_id"
schema = "JobStatus"
partitions = 3
[topic.config]
"cleanup.policy" = "compact"

[[topic]]
name = "b.events"
partitions = 2
replication = 1
[topic.config]
retention.ms = 86400000
"segment.bytes" = "1048576"

[[topic]]
name = "c.plain"
"""


def test_load_topic_specs(tmp_path):
    path = tmp_path / "topics.toml"
    path.write_text(TOPICS)
    specs = load_topic_specs(path)
    assert specs == [
        TopicSpec("a.status", 3, 1, "job_id", "JobStatus", {"cleanup.policy": "compact"}),
        TopicSpec("b.events", 2, 1, None, None, {"retention.ms": "86400000", "segment.bytes": "1048576"}),
        TopicSpec("c.plain", 1, 1, None, None, {}),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[topic]]\nkey = "x"\n', "has no `name`"),
        ('[[topic]]\nname = "a"\n[[topic]]\nname = "a"\n', "declared twice"),
        ('[[topic]]\nname = "a"\npartitions = 0\n', "partitions"),
        ('[[topic]]\nname = "a"\nreplicas = 3\n', "unknown keys"),
        ('topic = "a"\n', "array of tables"),
        ("[[topic]\n", "invalid TOML"),
    ],
)
def test_bad_topic_specs(tmp_path, text, error):
    path = tmp_path / "topics.toml"
    path.write_text(text)
    with pytest.raises(TopicSpecError, match=error):
        load_topic_specs(path)


def test_missing_topic_file(tmp_path):
    with pytest.raises(TopicSpecError, match="not found"):
        load_topic_specs(tmp_path / "nope.toml")


def test_repo_topics_file_parses():
    path = REPO / "infra" / "topics.toml"
    if not path.exists():
        pytest.skip("infra/topics.toml not written yet")
    specs = load_topic_specs()
    assert specs and all(isinstance(s, TopicSpec) for s in specs)
    assert parse_topic_specs({"topic": []}) == []


# ---------------------------------------------------------------------- env, stack.json


def test_child_env_points_at_the_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPMASK_S3_PUBLIC_ENDPOINT", "http://stale:1")
    settings = Settings(home=tmp_path / "h", dev_kafka_port=29092, dev_s3_port=28333,
                        dev_valkey_port=26379, redis_url="redis://x:1/3", log_json=True,
                        s3_public_endpoint=None, topic_prefix="t1.")
    env = DevStack(settings).child_env()
    assert env["TAPMASK_KAFKA_BOOTSTRAP"] == "127.0.0.1:29092"
    assert env["TAPMASK_S3_ENDPOINT"] == "http://127.0.0.1:28333"
    assert env["TAPMASK_REDIS_URL"] == "redis://127.0.0.1:26379/3"
    assert env["TAPMASK_HOME"] == str((tmp_path / "h").resolve())
    assert env["TAPMASK_TOPIC_PREFIX"] == "t1."
    assert env["TAPMASK_LOG_JSON"] == "true"
    assert env["TAPMASK_API_URL"] == "http://127.0.0.1:8000"
    assert "TAPMASK_S3_PUBLIC_ENDPOINT" not in env
    assert env["PATH"] == os.environ["PATH"]
    # A child reading Settings() from this env sees the same stack.
    monkeypatch.setattr(os, "environ", env)
    child = Settings()
    assert child.kafka_bootstrap == "127.0.0.1:29092" and child.dev_kafka_port == 29092


def test_stack_info_roundtrip(tmp_path):
    info = StackInfo(
        home=str(tmp_path), storage_engine="s3://tansu/", kafka_bootstrap="127.0.0.1:1",
        s3_endpoint="http://127.0.0.1:2", redis_url="redis://127.0.0.1:3/0",
        api_url="http://127.0.0.1:8000", buckets=["tansu", "tapmask"], topic_prefix="",
        topics=["a"], ports={"kafka": 1}, pids={"tansu": 5},
        processes=[{"name": "tansu", "pid": 5, "port": 1, "log": "x"}],
        started_at="2026-01-01T00:00:00+00:00", ready_after_s=4.2, phases_s={"tansu": 0.1},
        already_running=True,
    )
    (tmp_path / "stack.json").write_text(info.to_json())
    assert "already_running" not in json.loads(info.to_json())
    back = read_stack_info(tmp_path)
    assert back == StackInfo(**{**info.__dict__, "already_running": False})
    assert read_stack_info(tmp_path / "nothing") is None


def test_status_and_down_without_a_stack(tmp_path):
    stack = DevStack(_settings(tmp_path))
    assert stack.status() == []
    assert stack.down() == []
    assert not stack.is_running()


def test_down_ignores_foreign_pid_files(tmp_path, sleeper):
    stack = DevStack(_settings(tmp_path))
    stack.run_dir.mkdir(parents=True)
    (stack.run_dir / "other.pid").write_text(f"{sleeper.pid}\n")  # not a record we wrote
    assert stack.down() == []
    assert sleeper.poll() is None


def test_seaweed_socket_paths():
    argv = ["weed", "server", "-master.port=1000", "-volume.port=2000", "-filer.port=3000", "-s3.port=4000"]
    paths = {str(p): port for p, port in seaweed_socket_paths(argv).items()}
    assert paths == {
        "/tmp/seaweedfs-master-grpc-11000.sock": 11000,
        "/tmp/seaweedfs-volume-grpc-12000.sock": 12000,
        "/tmp/seaweedfs-filer-grpc-13000.sock": 13000,
        "/tmp/seaweedfs-filer-3000.sock": 3000,
        "/tmp/seaweedfs-s3-grpc-14000.sock": 14000,
        "/tmp/seaweedfs-s3-4000.sock": 4000,
    }


def test_tail_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("first\n\x1b[32mINFO\x1b[0m ready in 43ms\n\n")
    assert tail_line(log) == "INFO ready in 43ms"
    assert tail_line(tmp_path / "missing.log") == "(no log)"
    log.write_text("x" * 500)
    assert len(tail_line(log)) == 240
