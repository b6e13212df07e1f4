"""docker-compose.yml keeps the deployment contract of SPEC §9 (and the seed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexo_actors.config.units import parse_duration

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker-compose.yml"
DOCKER_RUNTIME = REPO / "conf" / "docker" / "runtime.yaml"
SEED_SECRETS = ["minimax_api_key", "minimax_group_id", "google_client_id", "google_client_secret"]
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def nexo(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["nexo"]
    return service


@pytest.fixture(scope="module")
def nats(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["nats"]
    return service


def compose_seconds(value: str | int | float) -> float:
    """A compose duration (`10s`, `1m30s`, `500ms`) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    parts = _GO_DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {value!r}"
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Bind mounts by source: {source: (target, mode)} for the short syntax."""
    out: dict[str, tuple[str, str]] = {}
    for entry in service.get("volumes") or []:
        assert isinstance(entry, str), f"use the short syntax for {entry!r}"
        source, target, *rest = entry.split(":")
        out[source] = (target, rest[0] if rest else "rw")
    return out


def secret_names(service: dict[str, Any]) -> list[str]:
    return [s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []]


# --- services -----------------------------------------------------------------


def test_the_stack_has_exactly_nats_and_nexo(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"nats", "nexo"}


def test_nats_is_2_10_alpine_with_jetstream_and_monitoring(nats: dict[str, Any]) -> None:
    assert nats["image"] == "nats:2.10-alpine"
    command = nats["command"]
    assert isinstance(command, list)
    assert "-js" in command
    assert command[command.index("-m") + 1] == "8222"


def test_nats_jetstream_store_is_on_a_named_volume(compose: dict[str, Any], nats: dict[str, Any]) -> None:
    command = nats["command"]
    store = command[command.index("-sd") + 1]
    volume_sources = {source for source, (target, _) in mounts(nats).items() if target == store}
    assert volume_sources, f"nothing mounted at the JetStream store {store}"
    (name,) = volume_sources
    assert name in (compose.get("volumes") or {}), f"{name} is not a declared named volume"


def test_nats_publishes_client_and_monitoring_ports(nats: dict[str, Any]) -> None:
    assert {"4222:4222", "8222:8222"} <= {str(p) for p in nats["ports"]}


def test_nats_healthcheck_hits_healthz_with_busybox_wget(nats: dict[str, Any]) -> None:
    check = nats["healthcheck"]
    test = check["test"]
    assert test[0] == "CMD"
    assert test[1] == "wget"
    assert any(re.fullmatch(r"http://(localhost|127\.0\.0\.1):8222/healthz", arg) for arg in test)
    for key in ("interval", "timeout"):
        assert compose_seconds(check[key]) > 0
    assert check["retries"] >= 1


def test_nexo_is_built_from_the_dockerfile(nexo: dict[str, Any]) -> None:
    build = nexo["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context == "."
    assert (REPO / "Dockerfile").is_file()
    assert nexo["image"] == "nexo-actors:latest"


def test_nexo_command_selects_the_docker_config(nexo: dict[str, Any]) -> None:
    # The image's entrypoint is `dumb-init -- nexo`: the command is nexo's
    # arguments, so the container runs `nexo --config /app/config/docker`.
    assert "entrypoint" not in nexo
    assert nexo["command"] == ["--config", "/app/config/docker"]


def test_nexo_environment(nexo: dict[str, Any]) -> None:
    env = environment(nexo)
    assert env["LOG_LEVEL"] == "info"
    assert env["AGENT_ENV"] == "production"
    # `docker compose exec nexo nexo ...` must use the daemon's config, not ./conf.
    assert env["NEXO_CONFIG"] == "/app/config/docker"


def test_nexo_has_1gb_of_shm_for_chromium(nexo: dict[str, Any]) -> None:
    assert str(nexo["shm_size"]).lower() == "1gb"


def test_nexo_publishes_health_and_metrics_ports(nexo: dict[str, Any]) -> None:
    assert {str(p) for p in nexo["ports"]} == {"8080:8080", "9090:9090"}


def test_config_and_extensions_are_read_only_and_data_is_writable(nexo: dict[str, Any]) -> None:
    m = mounts(nexo)
    assert m["./conf"] == ("/app/config", "ro")
    assert m["./extensions"] == ("/app/extensions", "ro")
    assert m["./data"] == ("/app/data", "rw")


def test_nexo_uses_the_seed_secrets(nexo: dict[str, Any]) -> None:
    assert secret_names(nexo) == SEED_SECRETS


def test_every_secret_a_service_uses_is_declared_with_a_file(compose: dict[str, Any]) -> None:
    declared = compose.get("secrets") or {}
    for name, service in compose["services"].items():
        for secret in secret_names(service):
            assert secret in declared, f"service {name} uses secret {secret}, never declared"
            assert declared[secret] == {"file": f"./secrets/{secret}.txt"}


def test_every_declared_secret_has_an_example_file(compose: dict[str, Any]) -> None:
    readme = (REPO / "secrets" / "README.md").read_text(encoding="utf-8")
    for name, spec in (compose.get("secrets") or {}).items():
        example = REPO / (spec["file"] + ".example")
        assert example.is_file(), f"{example} is missing"
        assert f"secrets/{name}.txt" in readme


def test_nexo_waits_for_a_healthy_nats(nexo: dict[str, Any]) -> None:
    assert nexo["depends_on"] == {"nats": {"condition": "service_healthy"}}


def test_nexo_healthcheck_is_the_seeds(nexo: dict[str, Any]) -> None:
    check = nexo["healthcheck"]
    assert check["test"] == ["CMD", "curl", "-f", "http://127.0.0.1:8080/ready"]
    assert compose_seconds(check["interval"]) == 10
    assert compose_seconds(check["timeout"]) == 3
    assert check["retries"] == 3
    assert compose_seconds(check["start_period"]) == 30


def test_stop_grace_period_is_above_the_runtime_shutdown_grace(nexo: dict[str, Any]) -> None:
    runtime = yaml.safe_load(DOCKER_RUNTIME.read_text(encoding="utf-8"))
    grace = parse_duration(runtime["shutdown"]["grace"])
    assert grace == 5.0
    assert compose_seconds(nexo["stop_grace_period"]) > grace


def test_nexo_is_restarted_when_it_exits(nexo: dict[str, Any]) -> None:
    assert nexo["restart"] == "unless-stopped"


def test_nexo_runs_as_the_image_user_or_uid_10001(nexo: dict[str, Any]) -> None:
    user = nexo.get("user")
    assert user is None or str(user).split(":")[0] == "10001"


def test_compose_duration_parser() -> None:
    assert compose_seconds("10s") == 10
    assert compose_seconds("1m30s") == 90
    assert compose_seconds("500ms") == 0.5
    with pytest.raises(AssertionError):
        compose_seconds("10 seconds")
