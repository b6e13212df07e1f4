"""The sidecar tells the truth about a wedged runtime, and survives its own crash."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.sidecar.helpers import Sidecar, actors, reasons, value
from tests.support.runtime import RuntimeProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

StartRuntime = Callable[..., RuntimeProcess]


def test_sigstopped_runtime_is_unresponsive_on_ready_and_not_healthy(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    rt = start_runtime(sidecar_conf()).wait_ready()
    assert sidecar.ready()[0] == 200
    assert sidecar.health() == 200
    os.kill(rt.pid, signal.SIGSTOP)
    try:
        asked = time.monotonic()
        status, doc = sidecar.ready(timeout=10)
        took = time.monotonic() - asked
        assert status == 503
        assert ("runtime", "runtime unresponsive") in reasons(doc)
        assert took < 3.0, f"/ready took {took:.2f}s to say unresponsive"
        assert sidecar.health(timeout=10) != 200
    finally:
        os.kill(rt.pid, signal.SIGCONT)
    wait_until(lambda: sidecar.ready()[0] == 200, timeout=10, what="/ready 200 after SIGCONT")
    wait_until(lambda: sidecar.health() == 200, timeout=10, what="/health 200 after SIGCONT")


def test_killed_gunicorn_master_is_restarted_and_counted(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    conf = sidecar_conf()
    rt = start_runtime(conf).wait_ready()
    before = actors(conf)["sidecar"]
    assert before["status"] == "running" and before["restarts"] == 0 and before["pid"] > 0
    os.kill(before["pid"], signal.SIGKILL)
    rt.wait_for_log(r"sidecar killed by SIGKILL; restarting", timeout=10)

    def restarted() -> Any:
        record = actors(conf)["sidecar"]
        if record["status"] == "running" and record["pid"] not in (0, before["pid"]):
            return record
        return None

    after = wait_until(restarted, timeout=30, interval=0.2, what="a new gunicorn master")
    assert after["restarts"] == 1
    assert after["last_error"] == "killed by SIGKILL"
    assert sidecar.health() == 200
    assert value(sidecar.scrape(), "actor_restarts_total", actor="sidecar") == 1.0
    # The old master's workers went with it (a zombie waiting for init to reap
    # it holds no port and runs no code).
    old_workers = [int(p) for p in str(before["details"]["worker_pids"]).split(",") if p]
    assert old_workers
    for pid in old_workers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_killed_gunicorn_worker_is_replaced_by_its_master(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    conf = sidecar_conf()
    rt = start_runtime(conf).wait_ready()
    before = actors(conf)["sidecar"]
    workers = [int(p) for p in str(before["details"]["worker_pids"]).split(",") if p]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)

    def replaced() -> Any:
        record = actors(conf)["sidecar"]
        pids = {int(p) for p in str(record["details"]["worker_pids"]).split(",") if p}
        return record if len(pids) == 2 and workers[0] not in pids else None

    after = wait_until(replaced, timeout=20, interval=0.2, what="gunicorn to replace its worker")
    # gunicorn's own business (child_exit hook ran, mark_process_dead included):
    # the master is the same, and the runtime counted no sidecar restart.
    assert after["pid"] == before["pid"] and after["restarts"] == 0
    assert sidecar.health() == 200
    assert "Traceback" not in rt.stderr
