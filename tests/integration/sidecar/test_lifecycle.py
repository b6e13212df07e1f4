"""The sidecar across the runtime's life: boot window, shutdown window, ports, parent death."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sidecar.helpers import Sidecar, actors, port_free, reasons, sidecar_processes
from tests.support.runtime import RuntimeProcess, nexo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

StartRuntime = Callable[..., RuntimeProcess]


class ReadyPoller:
    """Polls /ready from a thread and records (status, reasons) in order; None = no answer."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.seen: list[tuple[int | None, list[tuple[str, str]]]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyPoller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.done.wait(0.01):
            try:
                status, doc = self.sidecar.ready(timeout=3.0)
                entry: tuple[int | None, list[tuple[str, str]]] = (status, reasons(doc))
            except (OSError, ValueError):
                entry = (None, [])
            with self.lock:
                if not self.seen or self.seen[-1] != entry:
                    self.seen.append(entry)

    def index(self, status: int, detail: str | None = None, after: int = 0) -> int | None:
        with self.lock:
            for i, (seen, why) in enumerate(self.seen[after:], start=after):
                if seen == status and (detail is None or ("runtime", detail) in why):
                    return i
        return None


def test_ready_is_503_starting_then_200_then_503_shutting_down(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    # kate may delegate to an agent nobody runs: a `/delegate ghost` turn stays
    # in flight (delegate_timeout), which keeps the shutdown window open while
    # the worker is given its grace to finish.
    conf = sidecar_conf(agents=[{"id": "kate", "model": {"provider": "echo", "model": "echo-1"},
                                 "channels": ["cli"], "allowed_delegates": ["ghost"],
                                 "config": {"delegate_timeout": "30s"}}])
    with ReadyPoller(sidecar) as poller:
        rt = start_runtime(conf, env={"NEXO_TEST_READY_DELAY": "2"})
        wait_until(lambda: poller.index(503, "starting") is not None, timeout=30,
                   what="/ready 503 `starting` while the worker delays its handshake")
        starting = poller.index(503, "starting")
        assert starting is not None
        wait_until(lambda: poller.index(200, after=starting) is not None, timeout=30,
                   what="/ready 200 once the worker is ready")
        rt.wait_ready()
        sent = nexo("--config", str(conf), "send", "cli", "/delegate ghost hold on", "--wait", "0")
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: actors(conf)["agent:kate"]["details"]["in_flight"] == 1, timeout=20,
                   what="the delegating turn to be in flight")
        ready_at = poller.index(200, after=starting)
        assert ready_at is not None
        sigterm = time.monotonic()
        rt.send_signal(signal.SIGTERM)
        wait_until(lambda: poller.index(503, "shutting down", after=ready_at) is not None, timeout=5,
                   what="/ready 503 `shutting down` during the SIGTERM handling")
        code = rt.wait_exit(timeout=10)
        elapsed = time.monotonic() - sigterm
    assert code == 0, rt.stderr
    assert elapsed < 5.0, f"runtime took {elapsed:.2f}s to exit after SIGTERM"


def test_sigterm_stops_the_sidecar_within_the_grace_and_frees_both_ports(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        data_dir: Path) -> None:
    rt = start_runtime(sidecar_conf()).wait_ready()
    assert sidecar.health() == 200
    assert sidecar_processes(data_dir), "no gunicorn process found for this runtime"
    sigterm = time.monotonic()
    rt.send_signal(signal.SIGTERM)
    code = rt.wait_exit(timeout=10)
    elapsed = time.monotonic() - sigterm
    assert code == 0, rt.stderr
    assert elapsed < 5.0, f"runtime took {elapsed:.2f}s to exit after SIGTERM"
    # Every process holding the listeners is gone by the time the runtime exits.
    assert sidecar_processes(data_dir) == []
    assert port_free(sidecar.health_port) and port_free(sidecar.metrics_port)


def test_health_port_in_use_fails_the_boot_naming_port_and_setting(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", sidecar.health_port))
        squatter.listen()
        rt = start_runtime(sidecar_conf())
        code = rt.wait_exit(timeout=30)
    assert code == 1
    assert f"port {sidecar.health_port} is already in use" in rt.stderr
    assert "runtime.sidecar.health_bind" in rt.stderr


def test_sidecar_exits_when_the_runtime_is_killed(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        data_dir: Path) -> None:
    rt = start_runtime(sidecar_conf()).wait_ready()
    assert sidecar.health() == 200
    os.kill(rt.pid, signal.SIGKILL)
    rt.wait_exit(timeout=10)
    # parent_check_interval (0.5 s) + graceful_timeout (1 s), with slack for a loaded machine.
    wait_until(lambda: not sidecar_processes(data_dir), timeout=10,
               what="the orphaned gunicorn master and workers to exit")
    assert port_free(sidecar.health_port) and port_free(sidecar.metrics_port)


def test_endpoints_answer_only_on_their_own_port(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    start_runtime(sidecar_conf()).wait_ready()
    answers: dict[str, Any] = {
        "health@health": sidecar.get("/health")[0],
        "ready@health": sidecar.get("/ready")[0],
        "metrics@health": sidecar.get("/metrics")[0],
        "health@metrics": sidecar.get("/health", port=sidecar.metrics_port)[0],
        "ready@metrics": sidecar.get("/ready", port=sidecar.metrics_port)[0],
        "metrics@metrics": sidecar.get("/metrics", port=sidecar.metrics_port)[0],
    }
    assert answers == {"health@health": 200, "ready@health": 200, "metrics@health": 404,
                       "health@metrics": 404, "ready@metrics": 404, "metrics@metrics": 200}


def test_next_instance_kills_the_sidecar_a_killed_runtime_left_behind(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        data_dir: Path) -> None:
    conf = sidecar_conf()
    first = start_runtime(conf).wait_ready()
    old = actors(conf)["sidecar"]["pid"]
    # Frozen, the orphan cannot notice its runtime is gone and free the ports
    # by itself: only the next instance can get them back.
    os.killpg(old, signal.SIGSTOP)
    os.kill(first.pid, signal.SIGKILL)
    # Not wait_exit(): the frozen sidecar still holds the stderr pipe open.
    assert first.proc is not None
    first.proc.wait(10)
    second = start_runtime(conf).wait_ready()
    second.wait_for_log(r"killed the sidecar left by a previous instance")
    assert sidecar.health() == 200
    assert actors(conf)["sidecar"]["pid"] not in (0, old)
    assert all(p.pid != old for p in sidecar_processes(data_dir))


def test_second_sigterm_kills_the_sidecar_and_it_is_not_restarted(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        data_dir: Path) -> None:
    conf = sidecar_conf(agents=[{"id": "kate", "model": {"provider": "echo", "model": "echo-1"},
                                 "channels": ["cli"], "allowed_delegates": ["ghost"],
                                 "config": {"delegate_timeout": "30s"}}])
    rt = start_runtime(conf).wait_ready()
    assert nexo("--config", str(conf), "send", "cli", "/delegate ghost hold on", "--wait", "0"
                ).returncode == 0
    wait_until(lambda: actors(conf)["agent:kate"]["details"]["in_flight"] == 1, timeout=20,
               what="the delegating turn to be in flight")
    rt.send_signal(signal.SIGTERM)
    rt.wait_for_log(r"shutting down")
    rt.send_signal(signal.SIGTERM)
    rt.wait_for_log(r"second signal during shutdown")
    assert rt.wait_exit(timeout=10) == 0, rt.stderr
    assert "restarting in" not in rt.stderr and "sidecar restarted" not in rt.stderr
    assert sidecar_processes(data_dir) == []
    assert port_free(sidecar.health_port) and port_free(sidecar.metrics_port)
