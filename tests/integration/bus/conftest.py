"""Fixtures of the bus fault tests: everything they start is stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nexo_actors.config.schema import Broker
from tests.integration.bus.helpers import InProcessBridge, Probe
from tests.support.bridge_process import BridgeProcess


@pytest.fixture
def make_bridge(tmp_path: Path) -> Iterator[Callable[..., InProcessBridge]]:
    """make_bridge(settings, db=None, instance_id=...) -> a running in-process bridge."""
    started: list[InProcessBridge] = []

    def make(settings: Broker, db: Path | None = None, **kwargs: Any) -> InProcessBridge:
        bridge = InProcessBridge(settings, db or tmp_path / "queue" / "broker.db", **kwargs)
        started.append(bridge)
        return bridge

    try:
        yield make
    finally:
        for bridge in reversed(started):
            bridge.close()


@pytest.fixture
def make_probe() -> Iterator[Callable[[str], Probe]]:
    """make_probe(url) -> an external nats-py client, closed at teardown."""
    started: list[Probe] = []

    def make(url: str) -> Probe:
        probe = Probe(url)
        started.append(probe)
        return probe

    try:
        yield make
    finally:
        for probe in started:
            probe.close()


@pytest.fixture
def bridge_process() -> Iterator[Callable[..., BridgeProcess]]:
    """bridge_process(db=..., broker=...) -> a started tests/support/bridge_process.py child."""
    started: list[BridgeProcess] = []

    def start(**kwargs: Any) -> BridgeProcess:
        proc = BridgeProcess(**kwargs)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.close()
