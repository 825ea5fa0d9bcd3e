"""docker-compose.yml has the production shape and speaks the same settings as the code.

Docker cannot run here, so this checks the file itself: every TAPMASK_* variable it sets is
a real setting, Kafka runs in KRaft mode from the official image, and GPU consumers ask for
the NVIDIA runtime."""

from __future__ import annotations

from pathlib import Path

import yaml

from tapmask.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return dict(env)


def test_services_present() -> None:
    assert {"kafka", "s3", "valkey", "api", "processors", "gpu-consumer", "init"} <= set(COMPOSE["services"])


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_gpu_consumers_use_the_nvidia_runtime() -> None:
    devices = COMPOSE["services"]["gpu-consumer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_tapmask_variable_is_a_setting() -> None:
    fields = {f"TAPMASK_{name.upper()}" for name in Settings.model_fields}
    for name, service in COMPOSE["services"].items():
        for var in _env(service):
            if var.startswith("TAPMASK_"):
                assert var in fields, f"{name}: {var} is not a TapMask setting"


def test_services_point_at_the_compose_servers() -> None:
    env = _env(COMPOSE["services"]["api"])
    assert env["TAPMASK_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["TAPMASK_S3_ENDPOINT"].startswith("http://s3:")
    assert env["TAPMASK_REDIS_URL"].startswith("redis://valkey:")


def test_production_has_no_dev_sign_in_and_needs_a_real_secret() -> None:
    env = _env(COMPOSE["services"]["api"])
    assert env["TAPMASK_DEV_MODE"] == "false"
    assert ":?" in env["TAPMASK_JWT_SECRET"], "the JWT secret must be required, never defaulted"
