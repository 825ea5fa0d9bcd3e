"""One real embedded stack per test session: Tansu, SeaweedFS, Valkey, plus the API, the Faust
worker and a GPU consumer, all on free ports in a temporary folder, started by the same code
as `tapmask dev up` and stopped at the end."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tapmask.devstack import DevStack, StackInfo, pick_free_dev_ports
from tapmask.devstack_proc import pick_free_port_pairs
from tapmask.services import service_specs
from tapmask.settings import Settings


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("tapmask-stack")
    ports = pick_free_dev_ports()
    api_port = pick_free_port_pairs(1, low=22700, high=23500)[0]
    return Settings(
        home=home,
        api_port=api_port,
        kafka_bootstrap=f"127.0.0.1:{ports['dev_kafka_port']}",
        s3_endpoint=f"http://127.0.0.1:{ports['dev_s3_port']}",
        redis_url=f"redis://127.0.0.1:{ports['dev_valkey_port']}/0",
        dev_start_timeout_s=float(os.environ.get("TAPMASK_TEST_START_TIMEOUT_S", "120")),
        progress_interval_s=0.5,
        # Webhook receivers in tests listen on loopback, and retries must come in seconds.
        webhook_allow_loopback=True,
        webhook_retry_schedule_s="1,1,1,2,2",
        webhook_jitter=0.1,
        **ports,
    )


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[StackInfo]:
    """The running stack; its logs are printed when start-up fails."""
    dev = DevStack(stack_settings)
    try:
        info = dev.up(service_specs(stack_settings, dev.logs_dir))
    except Exception:
        for log in sorted(Path(dev.logs_dir).glob("*.log")):
            print(f"---- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        dev.down()
        raise
    yield info
    dev.down()


@pytest.fixture(scope="session")
def api_url(stack: StackInfo, stack_settings: Settings) -> str:
    return stack_settings.resolved_api_url()


@pytest.fixture(scope="session")
def mint(stack_settings: Settings) -> Callable[..., str]:
    """Mint a JWT the stack's API accepts: ``mint("alice", tier="free")``."""
    from api.auth import mint_token

    def _mint(user: str = "e2e-user", tier: str = "pro", region: str = "eu", ttl_s: int | None = None) -> str:
        return mint_token(stack_settings, user, tier, region, ttl_s)

    return _mint


@pytest.fixture(scope="session")
def api_token(mint: Callable[..., str]) -> str:
    """A Pro user's token (auth is required on every route but health)."""
    return mint("e2e-user", "pro")
