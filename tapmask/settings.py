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
    kafka_session_timeout_ms: int = 6000  # consumer session timeout: a dead member's partitions move on after this
    kafka_heartbeat_interval_ms: int = 1000  # consumer heartbeat interval
    # The GPU consumer keeps polling while a job runs, so this bound is never approached.
    kafka_max_poll_interval_ms: int = 300000
    kafka_client_id: str = "tapmask"  # client.id prefix seen by the broker
    topic_prefix: str = ""  # lets tests or tenants share a broker without clashing

    # S3-compatible object storage.
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_public_endpoint: str | None = None  # host used in presigned URLs, when it differs
    s3_region: str = "us-east-1"  # S3 region (EU buckets for EU users in production)
    s3_access_key: str = "tapmask"  # S3 access key
    s3_secret_key: str = "tapmask-secret"  # S3 secret key
    s3_bucket: str = "tapmask"  # bucket of uploads (uploads/{video_id}/source) and outputs (outputs/{job_id}/...)
    presign_ttl_s: int = 24 * 3600  # lifetime of presigned download URLs (24 h)

    # Valkey / Redis.
    redis_url: str = "redis://127.0.0.1:6379/0"

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000  # port the API listens on
    api_url: str | None = None  # how clients (CLI demo) reach the API; derived when unset
    max_upload_bytes: int = 2 * 1024**3  # absolute cap on an upload, above the tier limits
    # The user `tapmask demo` signs in as (with a token it mints in dev mode).
    dev_user_id: str = "dev-user"
    dev_user_tier: str = "pro"  # tier of that user

    # Authentication (JWT) and request limits.
    dev_mode: bool = True  # enables POST /api/v1/dev/token; docker-compose sets it false
    jwt_alg: str = "HS256"  # HS256 (jwt_secret) or RS256 (jwt_public_key_file / jwks_file)
    # HS256 signing secret: replace it in production (docker-compose refuses to start without one).
    jwt_secret: str = "tapmask-dev-secret-change-me-in-production"
    jwt_public_key_file: Path | None = None  # PEM public key for RS256
    jwks_file: Path | None = None  # JWKS file for RS256, key picked by kid
    jwt_private_key_file: Path | None = None  # only for minting RS256 dev tokens (tapmask token)
    jwt_audience: str = "tapmask-api"  # required aud claim
    jwt_issuer: str = "tapmask"  # required iss claim
    jwt_leeway_s: int = 10  # clock skew allowed on exp/iat
    jwt_ttl_s: int = 3600  # lifetime of minted dev tokens
    free_max_upload_bytes: int = 100 * 1024**2  # upload limit of the free tier, enforced while streaming
    pro_max_upload_bytes: int = 2 * 1024**3  # upload limit of the Pro tier
    max_json_bytes: int = 64 * 1024  # largest JSON body accepted (413 above)
    rate_limit_per_minute: int = 600  # per user, every authenticated route
    upload_rate_limit_per_minute: int = 30  # per user, POST /upload
    idempotency_ttl_s: int = 24 * 3600  # how long an Idempotency-Key is remembered (Valkey)
    idempotency_wait_s: float = 15.0  # how long a duplicate waits for the first request
    cors_origins: str = ""  # comma-separated origins allowed cross-origin; empty = none
    sse_heartbeat_s: float = 15.0  # keep-alive comment interval on the events stream
    sse_poll_s: float = 0.25  # how often the events stream looks for a new snapshot

    # Processors (Faust).
    faust_app_id: str = "tapmask-processors"
    # Longest a fetch of the Faust worker waits on the broker for new data; a broker may hold an
    # empty fetch this long, so it bounds each agent hop's latency (Faust's own value: 1500).
    kafka_fetch_max_wait_ms: int = 50
    free_jobs_per_month: int = 5  # monthly job quota of the free tier (Pro: unlimited)

    # Webhooks: retry delays in seconds after the first attempt (Standard Webhooks style, about
    # 3 days in all), each scaled by a random factor in [1 - jitter, 1 + jitter].
    webhook_retry_schedule_s: str = "5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_jitter: float = 0.2  # random factor applied to each retry delay
    webhook_timeout_s: float = 10.0  # timeout of one webhook delivery
    webhook_max_retry_after_s: float = 86400.0  # a Retry-After longer than this is capped
    webhook_concurrency: int = 32  # deliveries in flight per worker
    webhook_poll_interval_s: float = 0.25  # how often a worker looks for due deliveries
    webhook_lease_s: float = 60.0  # a claimed delivery is retried after this if its worker died
    # Development only: accept endpoint URLs on loopback (the tests' receiver). Private,
    # link-local and cloud-metadata addresses are always refused.
    webhook_allow_loopback: bool = False
    webhook_log_size: int = 200  # delivery-log entries kept per endpoint
    # E-mail notifications, sent only when smtp_host is set.
    smtp_host: str | None = None
    smtp_port: int = 25  # SMTP port
    smtp_from: str = "TapMask <noreply@tapmask.local>"  # From address of notification e-mails
    smtp_user: str | None = None  # SMTP login
    smtp_password: str | None = None  # SMTP password
    smtp_starttls: bool = False  # use STARTTLS
    smtp_timeout_s: float = 10.0  # SMTP timeout
    # The free tier's export height cap (Pro exports at the source size, 4K included).
    free_max_output_height: int = 1080

    # GPU consumers.
    consumer_group: str = "tapmask-gpu"
    device: str = "cpu"  # the classical engine runs on the CPU; reserved for a learned (GPU) engine
    work_dir: Path | None = None  # scratch space for downloads and encodes; temp dir when unset
    progress_interval_s: float = 1.0  # how often a running job reports progress (at most)
    consumer_idle_timeout_s: float = 300.0  # exit after this long without work (0 = never)

    # Retryable failures (S3/broker hiccups, out of memory): this many tries per job, waiting
    # backoff_s, then x factor, between them; then the job fails and goes to the DLQ.
    consumer_retry_attempts: int = 3
    consumer_retry_backoff_s: float = 2.0  # first retry delay
    consumer_retry_backoff_factor: float = 2.0  # delay multiplier between retries
    # A job whose worker died this many times without finishing it (crash loop) is failed.
    consumer_max_crashes: int = 10
    # Instance-metadata spot notice, polled while running (empty = no watcher). On AWS:
    # http://169.254.169.254/latest/meta-data/spot/instance-action (404 until a notice).
    spot_metadata_url: str = ""
    spot_poll_interval_s: float = 5.0  # how often the spot endpoint is polled
    # What runs a job: "video" (the engine), "noop" (copy input to output: runner overhead),
    # "sleep:SECONDS" (a cancellable job of that length: redelivery benchmarks).
    consumer_backend: str = "video"
    # Frames per resumable chunk; a redelivered job resumes after its last finished chunk.
    consumer_chunk_frames: int = 250
    # Append one JSON line per committed job offset here (audit trail; the chaos test reads it).
    consumer_commit_log: Path | None = None
    consumer_fetch_wait_max_ms: int = 100  # librdkafka fetch.wait.max.ms of the GPU consumer
    # Extra librdkafka settings of the GPU consumer, as JSON (security, tuning).
    consumer_kafka_config_json: str = ""

    # Embedded dev stack.
    broker_storage: str = "s3"  # "s3" (durable, on the embedded SeaweedFS) or "memory"
    dev_kafka_port: int = 9092  # embedded broker port
    dev_s3_port: int = 8333  # embedded S3 port (port + 10000 is used for gRPC)
    dev_seaweed_master_port: int = 9333  # SeaweedFS master port (+ 10000 for gRPC)
    dev_seaweed_volume_port: int = 8080  # SeaweedFS volume port (+ 10000 for gRPC)
    dev_seaweed_filer_port: int = 8888  # SeaweedFS filer port (+ 10000 for gRPC)
    dev_valkey_port: int = 6379  # embedded Valkey port
    dev_start_timeout_s: float = 60.0  # how long `dev up` waits for each part to answer

    # Logging.
    log_level: str = "INFO"  # log level
    log_json: bool = False  # JSON log lines instead of console ones

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
