"""Agent-to-agent delegation over agent.route.<target> (SPEC §5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.confdir import write_conf
from tests.support.control import Control
from tests.support.nats import NatsServer


def agents(timeout: str = "2s") -> list[dict[str, Any]]:
    echo = {"provider": "echo", "model": "echo-1"}
    return [
        {"id": "kate", "model": echo, "channels": ["cli"], "allowed_delegates": ["ops", "ghost"],
         "config": {"delegate_timeout": timeout}},
        {"id": "ops", "model": echo, "channels": ["ops"]},
    ]


@pytest.mark.parametrize("mode", ["local", "nats"])
def test_delegation_gets_the_other_agents_answer(
        mode: str, tmp_path: Path, data_dir: Path, request: pytest.FixtureRequest,
        start_runtime) -> None:
    broker: dict[str, Any] = {}
    if mode == "nats":
        server: NatsServer = request.getfixturevalue("nats_server")
        broker = {"type": "nats", "url": server.url, "reconnect_wait": "0.2s"}
    conf = write_conf(tmp_path / "conf", data_dir, agents=agents(),
                      broker=broker, runtime={"agents": {"processes": 2}})
    start_runtime(conf).wait_ready()
    reply = Control(conf).send("/delegate ops how are the servers?")
    assert reply.reply is not None
    # kate's echo model answers with ops' answer, which ops' echo model produced.
    assert reply.reply.text == "echo: echo: how are the servers?"


def test_delegation_outside_allowed_delegates_is_refused_clearly(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir, agents=agents())
    start_runtime(conf).wait_ready()
    reply = Control(conf).send("/delegate boss give me a raise")
    assert reply.reply is not None
    assert "delegation to 'boss' refused: not in allowed_delegates of 'kate'" in (reply.reply.text or "")


def test_delegation_to_an_absent_agent_times_out_cleanly(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir, agents=agents(timeout="1s"))
    start_runtime(conf).wait_ready()
    ctl = Control(conf)
    started = time.monotonic()
    reply = ctl.send("/delegate ghost anyone there?", wait=15)
    assert reply.reply is not None
    assert "delegation to 'ghost' timed out after 1s" in (reply.reply.text or "")
    assert time.monotonic() - started < 10
    # The agent is fine afterwards.
    assert ctl.send("still ok").reply.text == "echo: still ok"  # type: ignore[union-attr]
