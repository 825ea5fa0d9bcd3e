"""The TapMask processes `tapmask dev up` starts on top of the embedded stack."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tapmask.devstack import ProcessSpec
from tapmask.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def _log_says(path: Path, needle: str) -> bool:
    try:
        return needle in path.read_text(errors="replace")
    except OSError:
        return False


def _api_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def service_specs(settings: Settings, logs_dir: Path, consumers: int = 1) -> list[ProcessSpec]:
    """API, Faust worker and GPU consumer(s), each with a readiness check."""
    py = sys.executable
    specs = [
        ProcessSpec(
            name="processors",
            argv=[py, "-m", "processors", "worker", "--loglevel", "info", "--without-web"],
            ready_check=lambda: _log_says(logs_dir / "processors.log", "[^Worker]: Ready"),
            cwd=REPO_ROOT,
        ),
        ProcessSpec(
            name="api",
            argv=[py, "-m", "uvicorn", "api.main:app", "--host", settings.api_host, "--port", str(settings.api_port), "--no-access-log"],
            ready_check=lambda: _api_ready(settings.resolved_api_url()),
            port=settings.api_port,
            port_env="TAPMASK_API_PORT",
            cwd=REPO_ROOT,
        ),
    ]
    # A GPU consumer exits after TAPMASK_CONSUMER_IDLE_TIMEOUT_S without work (default 5 min,
    # so a scaler can remove it); the dev stack has no scaler to start it again, so its
    # consumers stay unless that variable was set explicitly.
    consumer_env = {} if "consumer_idle_timeout_s" in settings.model_fields_set else {"TAPMASK_CONSUMER_IDLE_TIMEOUT_S": "0"}
    for i in range(consumers):
        name = "gpu-consumer" if consumers == 1 else f"gpu-consumer-{i + 1}"
        specs.append(
            ProcessSpec(
                name=name,
                argv=[py, "-m", "gpu_consumers"],
                env=dict(consumer_env),
                ready_check=lambda n=name: _log_says(logs_dir / f"{n}.log", "consumer.assigned"),
                cwd=REPO_ROOT,
            )
        )
    return specs
