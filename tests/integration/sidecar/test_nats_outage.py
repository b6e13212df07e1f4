"""A NATS outage as the sidecar reports it: /ready, the breaker gauge, `nexo health`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sidecar.helpers import Sidecar, reasons, value
from tests.support.nats import NatsServer
from tests.support.runtime import RuntimeProcess, nexo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

StartRuntime = Callable[..., RuntimeProcess]


def nats_broker(server: NatsServer, mode: str) -> dict[str, Any]:
    return {"type": "nats", "url": server.url, "reconnect_wait": "0.2s",
            "breaker": {"backoff": "1s", "max_backoff": "2s"}, "fallback": {"mode": mode}}


def breaker(sidecar: Sidecar) -> float | None:
    return value(sidecar.scrape(), "circuit_breaker_state", breaker="nats")


def health(conf: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    result = nexo("--config", str(conf), "health", "--json", *flags, timeout=20)
    return result.returncode, json.loads(result.stdout)


def test_outage_with_disk_queue_stays_ready_degraded_and_breaker_opens_then_closes(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        nats_server: NatsServer) -> None:
    conf = sidecar_conf(broker=nats_broker(nats_server, "local_queue"))
    start_runtime(conf).wait_ready()
    wait_until(lambda: sidecar.ready()[0] == 200, timeout=20, what="/ready 200 with NATS up")
    assert breaker(sidecar) == 0.0
    assert value(sidecar.scrape(), "nats_connected") == 1.0
    code, doc = health(conf, "--strict")
    assert code == 0 and doc["ok"] is True, doc

    nats_server.kill()
    wait_until(lambda: breaker(sidecar) == 1.0, timeout=20, what="circuit_breaker_state{nats} = 1")
    status, ready = sidecar.ready()
    assert status == 200, ready
    assert "broker" in [subsystem for subsystem, _ in reasons(ready, "degraded")]
    assert value(sidecar.scrape(), "nats_connected") == 0.0
    # Not strict: the runtime is ready (degraded), so every probe passes.
    code, doc = health(conf)
    assert code == 0, doc
    # Strict: a breaker that is not closed fails the check.
    code, doc = health(conf, "--strict")
    assert code == 1, doc
    assert doc["counters"]["breakers"]["nats"] in ("open", "half-open")
    assert any("circuit breaker nats" in p for p in doc["problems"])

    nats_server.start()
    wait_until(lambda: breaker(sidecar) == 0.0, timeout=30, what="the breaker to close again")
    wait_until(lambda: not reasons(sidecar.ready()[1], "degraded"), timeout=20,
               what="/ready without the broker degraded")
    assert health(conf, "--strict")[0] == 0


def test_outage_with_drop_fallback_makes_ready_503_for_the_broker(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        nats_server: NatsServer) -> None:
    conf = sidecar_conf(broker=nats_broker(nats_server, "drop"))
    start_runtime(conf).wait_ready()
    wait_until(lambda: sidecar.ready()[0] == 200, timeout=20, what="/ready 200 with NATS up")
    nats_server.kill()

    def broker_not_ready() -> bool:
        status, doc = sidecar.ready()
        return status == 503 and "broker" in [s for s, _ in reasons(doc)]

    wait_until(broker_not_ready, timeout=20, what="/ready 503 with reason broker")
    code, doc = health(conf)
    assert code == 1 and doc["ready"]["status"] == 503
