"""Low-level helpers of the embedded dev stack: ports, process identity, start and stop.

Kept apart from `tapmask.devstack` so that the pure parts (port preflight messages, the
"is this pid still the process we started?" check) can be unit tested without binaries.

A process we start is identified by a `ProcessRecord` written to `home/run/NAME.pid` (JSON).
Before signalling a pid we check that the live process is the one recorded: same boot, same
start time (field 22 of /proc/PID/stat) and same command line or executable. A pid the
kernel recycled for someone else's process is therefore never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROC = Path("/proc")
LOOPBACK = "127.0.0.1"
# SeaweedFS opens a gRPC port at every HTTP port + this offset.
GRPC_OFFSET = 10000


class DevStackError(RuntimeError):
    """A one-line, user-facing reason why the dev stack could not do what was asked."""


# --------------------------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortNeed:
    """One TCP port the stack will listen on, and the setting that chooses it."""

    port: int
    label: str  # e.g. "broker", "S3 gRPC"
    env_var: str  # e.g. "TAPMASK_DEV_KAFKA_PORT"
    derived: str = ""  # e.g. "= TAPMASK_DEV_S3_PORT + 10000" for ports that follow another


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind `host:port` now (SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = LOOPBACK, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_in_use_message(need: PortNeed) -> str:
    """The one-line error for a port that is taken."""
    what = f"port {need.port} ({need.label}{', ' + need.derived if need.derived else ''})"
    hint = f"set {need.env_var} to a free port"
    if need.derived:
        hint += f" (its +{GRPC_OFFSET} port must be free too)"
    return f"{what} is already in use: {hint} or run `tapmask dev down`"


def check_ports(needs: list[PortNeed], is_free=port_is_free) -> None:
    """Raise `DevStackError` naming the first port that is invalid, duplicated or taken."""
    seen: dict[int, PortNeed] = {}
    for need in needs:
        if not 0 < need.port < 65536:
            raise DevStackError(
                f"port {need.port} ({need.label}) is out of range: set {need.env_var} to a "
                f"port between 1 and {65535 - (GRPC_OFFSET if need.derived else 0)}"
            )
        if need.port in seen:
            other = seen[need.port]
            raise DevStackError(
                f"port {need.port} is wanted twice, for {other.label} ({other.env_var}"
                f"{' ' + other.derived if other.derived else ''}) and {need.label} "
                f"({need.env_var}{' ' + need.derived if need.derived else ''}): "
                f"choose different ports"
            )
        seen[need.port] = need
    for need in needs:
        if not is_free(need.port):
            raise DevStackError(port_in_use_message(need))


def pick_free_port_pairs(count: int, low: int = 20000, high: int = 22700) -> list[int]:
    """`count` distinct ports p, each with p and p + 10000 free now.

    The default range keeps both below Linux's ephemeral range (32768+), so outgoing
    connections do not grab them between the pick and the bind.
    """
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(5000):
        if len(chosen) == count:
            return chosen
        port = random.randint(low, high)
        if {port, port + GRPC_OFFSET} & taken:
            continue
        if port_is_free(port) and port_is_free(port + GRPC_OFFSET):
            chosen.append(port)
            taken.update({port, port + GRPC_OFFSET})
    raise DevStackError(f"could not find {count} free ports between {low} and {high}")


# ------------------------------------------------------------------------- process identity


@dataclass
class ProcessRecord:
    """What we remember about a process we started (the JSON in `home/run/NAME.pid`)."""

    name: str
    pid: int
    argv: list[str]
    log: str
    order: int = 0  # start order; `down` stops in reverse
    port: int | None = None  # the port `status` probes
    exe: str | None = None  # /proc/PID/exe right after start
    start_ticks: int | None = None  # field 22 of /proc/PID/stat right after start
    boot_id: str | None = None
    started_at: float = field(default_factory=time.time)
    stop_timeout_s: float | None = None  # SIGTERM grace before SIGKILL; None: the caller's

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def read(cls, path: Path) -> ProcessRecord | None:
        """The record in a pid file, or None if it is missing or unreadable."""
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class ProcInfo:
    """What the kernel says about a live (non-zombie) pid."""

    pid: int
    cmdline: list[str]
    exe: str | None
    start_ticks: int | None


def boot_id(proc_root: Path = PROC) -> str | None:
    try:
        return (proc_root / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def proc_info(pid: int, proc_root: Path = PROC) -> ProcInfo | None:
    """Identity of `pid` from /proc, or None when it does not exist or is a zombie."""
    base = proc_root / str(pid)
    try:
        stat = (base / "stat").read_text()
        raw_cmdline = (base / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        return None
    post = stat[stat.rfind(")") + 2 :].split()
    if not post or post[0] in ("Z", "X"):
        return None
    try:
        start_ticks = int(post[19])
    except (IndexError, ValueError):
        start_ticks = None
    try:
        exe = os.readlink(base / "exe")
    except OSError:
        exe = None
    cmdline = [part.decode(errors="replace") for part in raw_cmdline.split(b"\0")]
    if cmdline and cmdline[-1] == "":
        cmdline.pop()
    return ProcInfo(pid=pid, cmdline=cmdline, exe=exe, start_ticks=start_ticks)


def _has_proc(proc_root: Path) -> bool:
    return (proc_root / "self").exists() or (proc_root / "1").exists()


def pid_is_ours(record: ProcessRecord, proc_root: Path = PROC) -> bool:
    """Whether `record.pid` is alive and still the very process `record` describes.

    With /proc: the boot id and start time must match exactly, and so must either the
    command line or the executable (some servers, Valkey among them, rewrite their
    command line to show a title, but their executable stays the same).
    Without /proc (macOS): the pid must be alive and `ps` must show the same program.
    """
    if record.pid <= 0:
        return False
    if not _has_proc(proc_root):
        return _pid_is_ours_ps(record)
    info = proc_info(record.pid, proc_root)
    if info is None:
        return False
    if record.boot_id is not None and boot_id(proc_root) not in (None, record.boot_id):
        return False
    if record.start_ticks is not None and info.start_ticks != record.start_ticks:
        return False
    same_cmdline = info.cmdline == list(record.argv)
    same_exe = record.exe is not None and info.exe == record.exe
    return same_cmdline or same_exe


def _pid_is_ours_ps(record: ProcessRecord) -> bool:  # pragma: no cover - non-Linux
    import subprocess

    if not pid_exists(record.pid):
        return False
    try:
        out = subprocess.run(
            ["ps", "-p", str(record.pid), "-o", "command="],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out) and out.split()[0].rsplit("/", 1)[-1] == record.argv[0].rsplit("/", 1)[-1]


def identify(name: str, pid: int, argv: list[str], log: Path, order: int, port: int | None,
             stop_timeout_s: float | None = None, proc_root: Path = PROC) -> ProcessRecord:
    """The record of a process just started (reads its start time and executable)."""
    info = proc_info(pid, proc_root) if _has_proc(proc_root) else None
    return ProcessRecord(
        name=name, pid=pid, argv=list(argv), log=str(log), order=order, port=port,
        exe=info.exe if info else None,
        start_ticks=info.start_ticks if info else None,
        boot_id=boot_id(proc_root) if info else None,
        stop_timeout_s=stop_timeout_s,
    )


# ----------------------------------------------------------------------------- stopping


def pid_exists(pid: int, proc_root: Path = PROC) -> bool:
    """Whether `pid` exists and is not a zombie.

    With /proc a zombie is recognised without reaping it (so a `Popen` that owns it still
    gets its exit status); without /proc our own exited child is reaped to tell.
    """
    if _has_proc(proc_root):
        return proc_info(pid, proc_root) is not None
    with contextlib.suppress(ChildProcessError, OSError):  # pragma: no cover - non-Linux
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:  # pragma: no cover - non-Linux
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float, proc_root: Path = PROC) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_exists(pid, proc_root):
            return True
        time.sleep(0.05)
    return not pid_exists(pid, proc_root)


def stop_process(record: ProcessRecord, term_timeout: float = 10.0,
                 max_grace: float | None = None, proc_root: Path = PROC) -> str:
    """Stop the process of `record` if (and only if) it is still ours.

    SIGTERM to its process group (it leads one: started with start_new_session), wait up
    to `record.stop_timeout_s` (when set, else `term_timeout`; never more than
    `max_grace`), then SIGKILL. Returns "stopped", "killed" or "not running" (which
    includes a pid now used by another process: that one is left alone).
    """
    if not pid_is_ours(record, proc_root):
        return "not running"
    pid = record.pid
    try:
        group = os.getpgid(pid) == pid
    except OSError:
        group = False
    _signal(pid, signal.SIGTERM, group)
    outcome = "stopped"
    grace = record.stop_timeout_s if record.stop_timeout_s is not None else term_timeout
    if max_grace is not None:
        grace = min(grace, max_grace)
    if not _wait_gone(pid, grace, proc_root):
        if pid_is_ours(record, proc_root):
            _signal(pid, signal.SIGKILL, group)
        outcome = "killed"
        _wait_gone(pid, 5.0, proc_root)
    if group:
        # Children the leader left behind (still in its group, so the pgid is not reused).
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return outcome


def tail_line(path: Path | str, max_chars: int = 240) -> str:
    """The last non-empty line of a log file, without colour codes, shortened."""
    import re

    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode(errors="replace")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "(no log)"
        return f"(log unreadable: {exc.strerror})"
    clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", data)
    lines = [line.strip() for line in clean.splitlines() if line.strip()]
    if not lines:
        return "(log empty)"
    last = lines[-1]
    return last if len(last) <= max_chars else last[: max_chars - 3] + "..."
