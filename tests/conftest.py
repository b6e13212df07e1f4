"""Shared fixtures: a real nats-server, config dirs, runtime processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.confdir import write_conf
from tests.support.nats import NatsServer
from tests.support.runtime import RuntimeProcess


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server on a free loopback port; stop()/start()/kill() it to test outages."""
    server = NatsServer(store_dir=tmp_path / "nats-store").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def conf_dir(tmp_path: Path, data_dir: Path) -> Path:
    """The default test config: agent kate on channel cli, local bus, sidecar off."""
    return write_conf(tmp_path / "conf", data_dir)


@pytest.fixture
def runtimes() -> Iterator[list[RuntimeProcess]]:
    """Collects runtime processes a test starts; every one is stopped at teardown."""
    started: list[RuntimeProcess] = []
    try:
        yield started
    finally:
        for rt in started:
            rt.stop()


@pytest.fixture
def start_runtime(runtimes: list[RuntimeProcess]):  # type: ignore[no-untyped-def]
    """start_runtime(conf_dir, **kw) -> a started RuntimeProcess, stopped at teardown."""

    def start(config_dir: Path, **kwargs) -> RuntimeProcess:  # type: ignore[no-untyped-def]
        rt = RuntimeProcess(config_dir, **kwargs)
        runtimes.append(rt)
        return rt.start()

    return start
