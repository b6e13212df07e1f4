"""A message in, an answer out: local bus and NATS (SPEC §3, §8)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import nats
import pytest

from tests.support.confdir import write_conf
from tests.support.control import Control
from tests.support.nats import NatsServer
from tests.support.runtime import nexo


def test_nexo_send_prints_the_echo_reply_with_the_shipped_style_config(
        conf_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    done = nexo("--config", str(conf_dir), "send", "cli", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "echo: hello"


def test_reply_carries_the_inbound_event_id_as_correlation_id(conf_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    reply = Control(conf_dir).send("ping")
    assert reply.reply is not None
    assert reply.reply.correlation_id == reply.event_id
    assert reply.reply.text == "echo: ping"


def test_nats_request_on_plugin_inbound_cli_gets_echo_with_correlation_id(
        tmp_path: Path, data_dir: Path, nats_server: NatsServer, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      broker={"type": "nats", "url": nats_server.url, "reconnect_wait": "0.2s"})
    start_runtime(conf).wait_ready()
    Control(conf).status()  # the control socket answers: the runtime is up

    async def ask() -> tuple[dict[str, object], dict[str, object]]:
        nc = await nats.connect(nats_server.url)
        try:
            envelope = {"id": str(uuid.uuid4()), "ts": 0.0, "topic": "plugin.inbound.cli",
                        "source": "test", "payload": {"text": "hi", "sender": "u1"}}
            # The runtime subscribes once the worker is ready; retry until it answers.
            for _ in range(50):
                try:
                    msg = await nc.request("plugin.inbound.cli", json.dumps(envelope).encode(),
                                           timeout=0.5)
                    return envelope, json.loads(msg.data)
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.1)
                except nats.errors.TimeoutError:
                    envelope["id"] = str(uuid.uuid4())
            raise AssertionError("no reply from the runtime over NATS")
        finally:
            await nc.close()

    sent, reply = asyncio.run(ask())
    assert reply["payload"]["text"] == "echo: hi"  # type: ignore[index]
    assert reply["correlation_id"] == sent["id"]


@pytest.mark.slow
def test_plain_json_with_text_is_wrapped_and_answered_over_nats(
        tmp_path: Path, data_dir: Path, nats_server: NatsServer, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      broker={"type": "nats", "url": nats_server.url, "reconnect_wait": "0.2s"})
    start_runtime(conf).wait_ready()

    async def ask() -> dict[str, object]:
        nc = await nats.connect(nats_server.url)
        try:
            for _ in range(50):
                try:
                    msg = await nc.request("plugin.inbound.cli", b'{"text":"hi"}', timeout=0.5)
                    return dict(json.loads(msg.data))
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
            raise AssertionError("no reply")
        finally:
            await nc.close()

    reply = asyncio.run(ask())
    assert reply["payload"]["text"] == "echo: hi"  # type: ignore[index]
    assert reply["correlation_id"]
