"""Fixtures of the sidecar tests: a config with the sidecar on free loopback ports.

Every gunicorn process a test's runtime launched is gone after the test, even
when the test failed half-way (its runtime killed with SIGKILL, say).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.sidecar.helpers import Sidecar, sidecar_processes
from tests.support.confdir import write_conf
from tests.support.waiting import free_port


@pytest.fixture(autouse=True)
def no_sidecar_left(data_dir: Path) -> Iterator[None]:
    """Set up first, torn down last: kills any sidecar process left by the test."""
    yield
    for proc in sidecar_processes(data_dir):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
            proc.wait(5)
        except psutil.Error:
            pass


@pytest.fixture
def sidecar() -> Sidecar:
    return Sidecar(health_port=free_port(), metrics_port=free_port())


@pytest.fixture
def sidecar_conf(tmp_path: Path, data_dir: Path, sidecar: Sidecar) -> Callable[..., Path]:
    """sidecar_conf(sidecar_settings={...}, runtime={...}, **write_conf kwargs) -> config dir."""

    def make(sidecar_settings: dict[str, Any] | None = None, runtime: dict[str, Any] | None = None,
             **kwargs: Any) -> Path:
        doc = dict(runtime or {})
        doc["sidecar"] = {"enabled": True, **sidecar.binds, **(sidecar_settings or {})}
        return write_conf(tmp_path / "conf", data_dir, runtime=doc, **kwargs)

    return make
