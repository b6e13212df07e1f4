"""`nexo health [--json] [--strict]` against a real sidecar (and against none)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sidecar.helpers import Sidecar
from tests.support.runtime import RuntimeProcess, nexo

pytestmark = pytest.mark.slow

StartRuntime = Callable[..., RuntimeProcess]


def test_health_json_is_one_valid_document_with_key_counters(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    conf = sidecar_conf()
    start_runtime(conf).wait_ready()
    for message in ("one", "two"):
        assert nexo("--config", str(conf), "send", "cli", message).returncode == 0
    result = nexo("--config", str(conf), "health", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["live"]["status"] == 200
    assert doc["ready"]["status"] == 200 and doc["ready"]["document"]["ready"] is True
    assert doc["metrics"]["status"] == 200
    counters = doc["counters"]
    assert counters["messages_processed"] == 2.0
    assert counters["messages_processed_by_agent"] == {"kate": 2.0}
    assert counters["dead_letters"] == 0.0 and counters["disk_queue_pending"] == 0.0
    assert counters["breakers"] == {"nats": "closed"} and counters["nats_connected"] == 0.0

    text = nexo("--config", str(conf), "health")
    assert text.returncode == 0
    assert "messages processed 2 (kate 2)" in text.stdout
    assert "breakers: nats closed" in text.stdout
    assert text.stdout.strip().endswith("healthy")

    # An operator mid-edit: another file is invalid, the running runtime is fine.
    (conf / "agents.yaml").write_text("agents:\n  - id: kate\n    modl: typo\n")
    assert nexo("--config", str(conf), "check-config").returncode == 1
    again = nexo("--config", str(conf), "health", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["ok"] is True


def test_health_fails_fast_when_nothing_serves(sidecar_conf: Callable[..., Path]) -> None:
    conf = sidecar_conf()
    started = time.monotonic()
    result = nexo("--config", str(conf), "health", "--json", timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert {p.split(":")[0] for p in doc["problems"]} == {"live", "ready", "metrics"}
    assert took < 10.0, f"nexo health took {took:.1f}s with nothing listening"
