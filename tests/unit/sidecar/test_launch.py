"""What the runtime hands the sidecar process, and the gunicorn settings it runs with."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nexo_actors.cli import _base_url, _key_counters
from nexo_actors.config import load_config
from nexo_actors.sidecar.process import SidecarProcess, probe_host
from nexo_actors.sidecar.serve import gunicorn_options, parse_args
from nexo_actors.supervision import ChildRegistry
from tests.support.confdir import write_conf

SECRET = "sk-unit-7d1c0e55"


def test_child_gets_binds_and_timeouts_but_no_secret_and_no_metrics_dir_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key").write_text(SECRET)
    conf = write_conf(tmp_path / "conf", tmp_path / "data", runtime={"sidecar": {
        "enabled": True, "health_bind": "0.0.0.0:8080", "metrics_bind": "0.0.0.0:9090"}},
        llm={"providers": {"echo": {"prefix": "echo: "},
                           "vault": {"api_flavor": "echo", "api_key": f"${{file:{secrets / 'key'}}}"}}})
    monkeypatch.setenv("CONFIG_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("LEAKY_API_KEY", SECRET)
    monkeypatch.setenv("HARMLESS", "kept")
    config = load_config(conf)
    sidecar = SidecarProcess(config, ChildRegistry())
    argv = sidecar.argv()
    assert SECRET not in " ".join(argv)
    args = parse_args(argv[3:])
    assert (args.health_bind, args.metrics_bind, args.workers) == ("0.0.0.0:8080", "0.0.0.0:9090", 2)
    assert args.control_socket == config.control_socket and args.metrics_dir == config.metrics_dir
    env = sidecar.environment()
    assert "PROMETHEUS_MULTIPROC_DIR" not in env and "LEAKY_API_KEY" not in env
    assert env["HARMLESS"] == "kept"


def test_gunicorn_options_are_valid_gunicorn_types() -> None:
    args = argparse.Namespace(workers=2, threads=4, graceful_timeout=0.5, control_timeout=2.0,
                              parent_pid=0, parent_check_interval=0.5, metrics_dir=Path("/x"))
    options = gunicorn_options(args, ["127.0.0.1:1", "127.0.0.1:2"])
    assert options["graceful_timeout"] == 1 and isinstance(options["timeout"], int)
    assert options["worker_class"] == "gthread" and options["control_socket_disable"] is True
    assert options["bind"] == ["127.0.0.1:1", "127.0.0.1:2"]


def test_wildcard_binds_are_probed_on_loopback() -> None:
    assert probe_host("0.0.0.0") == "127.0.0.1" and probe_host("::") == "::1"
    assert probe_host("10.1.2.3") == "10.1.2.3"
    assert _base_url("0.0.0.0:8080") == "http://127.0.0.1:8080"
    assert _base_url("[::]:9090") == "http://[::1]:9090"


def test_key_counters_summarise_a_scrape() -> None:
    text = "\n".join([
        "# TYPE messages_processed counter",
        'messages_processed_total{agent="kate"} 3.0',
        'messages_processed_total{agent="ops"} 1.0',
        "# TYPE circuit_breaker_state gauge",
        'circuit_breaker_state{breaker="nats"} 1.0',
        "# TYPE dead_letters gauge",
        "dead_letters 2.0",
        "# TYPE actor_restarts counter",
        'actor_restarts_total{actor="sidecar"} 1.0',
        'actor_restarts_total{actor="agent-worker-0"} 0.0', ""])
    counters = _key_counters(text)
    assert counters["messages_processed"] == 4.0
    assert counters["messages_processed_by_agent"] == {"kate": 3.0, "ops": 1.0}
    assert counters["breakers"] == {"nats": "open"}
    assert counters["dead_letters"] == 2.0 and counters["disk_queue_pending"] is None
    assert counters["restarts"] == {"sidecar": 1.0}
