"""Every setting of every TapMask process, read from environment variables.

One class so that the API, the Faust worker, the GPU consumers and the dev stack agree on
names. Each field `foo_bar` is read from `TAPMASK_FOO_BAR`; the README lists them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration with sane defaults for the embedded dev stack on one machine."""

    model_config = SettingsConfigDict(env_prefix="TAPMASK_", extra="ignore")

    # Where the embedded stack keeps data, logs and pid files.
    home: Path = Path(".tapmask")

    # Kafka (Tansu in dev, Apache Kafka in production: same client code, only these differ).
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    # The GPU consumer keeps polling while a job runs, so this bound is never approached.
    kafka_max_poll_interval_ms: int = 300000
    kafka_client_id: str = "tapmask"
    topic_prefix: str = ""  # lets tests or tenants share a broker without clashing

    # S3-compatible object storage.
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_public_endpoint: str | None = None  # host used in presigned URLs, when it differs
    s3_region: str = "us-east-1"
    s3_access_key: str = "tapmask"
    s3_secret_key: str = "tapmask-secret"
    s3_bucket: str = "tapmask"
    presign_ttl_s: int = 24 * 3600

    # Valkey / Redis.
    redis_url: str = "redis://127.0.0.1:6379/0"

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str | None = None  # how clients (CLI demo) reach the API; derived when unset
    max_upload_bytes: int = 2 * 1024**3
    status_view_ready_timeout_s: float = 60.0
    # The caller of every request until JWT auth lands.
    dev_user_id: str = "dev-user"
    dev_user_tier: str = "pro"

    # Processors (Faust).
    faust_app_id: str = "tapmask-processors"
    free_jobs_per_month: int = 5

    # GPU consumers.
    consumer_group: str = "tapmask-gpu"
    device: str = "cpu"
    work_dir: Path | None = None  # scratch space for downloads and encodes; temp dir when unset
    progress_interval_s: float = 1.0
    consumer_idle_timeout_s: float = 0.0  # exit after this long without work (0 = never)

    # Embedded dev stack.
    broker_storage: str = "s3"  # "s3" (durable, on the embedded SeaweedFS) or "memory"
    dev_kafka_port: int = 9092
    dev_s3_port: int = 8333
    dev_seaweed_master_port: int = 9333
    dev_seaweed_volume_port: int = 8080
    dev_seaweed_filer_port: int = 8888
    dev_valkey_port: int = 6379
    dev_start_timeout_s: float = 60.0

    log_level: str = "INFO"
    log_json: bool = False

    def resolved_api_url(self) -> str:
        """Base URL of the API as a client on this machine reaches it."""
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    def topic(self, name: str) -> str:
        """The real topic name for a logical topic name (adds the optional prefix)."""
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings()
