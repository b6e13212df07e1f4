"""Agent workers die, hang and crash-loop; nothing accepted is lost (SPEC §5)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.confdir import write_conf
from tests.support.control import Control
from tests.support.metrics import sample
from tests.support.nats import NatsServer
from tests.support.probe import Probe
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def agent(agent_id: str, channel: str, **extra: Any) -> dict[str, Any]:
    return {"id": agent_id, "model": {"provider": "echo", "model": "echo-1"}, "channels": [channel],
            **extra}


def envelope(channel: str, text: str) -> bytes:
    return json.dumps({"id": str(uuid.uuid4()), "ts": time.time(),
                       "topic": f"plugin.inbound.{channel}", "source": "test",
                       "payload": {"text": text, "sender": "load"}}).encode()


def actor(ctl: Control, name: str) -> dict[str, Any]:
    return next(a for a in ctl.actors_json() if a["name"] == name)


def test_kill_a_worker_under_load_every_event_answered_exactly_once(
        tmp_path: Path, data_dir: Path, nats_server: NatsServer, start_runtime) -> None:
    channels = [f"c{i}" for i in range(4)]
    conf = write_conf(
        tmp_path / "conf", data_dir,
        agents=[agent(f"a{i}", ch) for i, ch in enumerate(channels)],
        broker={"type": "nats", "url": nats_server.url, "reconnect_wait": "0.2s"},
        runtime={"agents": {"processes": 4, "heartbeat_interval": "0.2s"}})
    rt = start_runtime(conf).wait_ready()
    ctl = Control(conf)
    wait_until(lambda: ctl.ready().ready, what="runtime ready")
    probe = Probe(nats_server.url)
    try:
        probe.subscribe("plugin.outbound.>")
        victim = actor(ctl, "agent:a1")
        # Freeze the victim first so it is certainly holding events when it dies.
        os.kill(victim["pid"], signal.SIGSTOP)
        sent: list[str] = []
        for i in range(1000):
            data = envelope(channels[i % 4], f"m{i}")
            sent.append(json.loads(data)["id"])
            probe.publish(f"plugin.inbound.{channels[i % 4]}", data)
        wait_until(lambda: actor(ctl, "agent:a1")["details"]["in_flight"] > 0,
                   what="events in flight in the frozen worker")
        os.kill(victim["pid"], signal.SIGKILL)

        def replies() -> Counter[str]:
            return Counter(json.loads(m.data)["correlation_id"] for m in probe.messages())

        try:
            wait_until(lambda: set(sent) <= set(replies()), timeout=30,
                       what="a reply to each of the 1000 events")
        except AssertionError:
            missing = set(sent) - set(replies())
            raise AssertionError(f"{len(missing)} of 1000 events unanswered; actors: "
                                 f"{ctl.actors_json()}\n{rt.stderr[-3000:]}") from None
        counts = replies()
        doubled = {k: v for k, v in counts.items() if v > 1}
        assert not doubled, f"events answered twice: {doubled}"
        host = actor(ctl, "agent-worker-1")
        assert host["restarts"] == 1
        assert host["pid"] != victim["pid"]
        assert "SIGKILL" in host["last_error"]
    finally:
        probe.close()


def test_crash_loop_marks_agents_failed_and_others_keep_answering(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(
        tmp_path / "conf", data_dir,
        agents=[agent("kate", "cli"), agent("crasher", "crash")],
        runtime={"agents": {"processes": 2,
                            "restart": {"max_restarts": 2, "window": "60s", "backoff": "0.05s",
                                        "max_backoff": "30s"}}})
    rt = start_runtime(conf, env={"NEXO_TEST_CRASH_AGENT": "crasher"}).wait_ready()
    ctl = Control(conf)
    wait_until(lambda: actor(ctl, "agent:crasher")["status"] == "failed", timeout=20,
               what="the crashing agent to be marked failed")
    crasher = actor(ctl, "agent:crasher")
    assert "exited with code 3" in crasher["last_error"]
    assert actor(ctl, "agent-worker-1")["restarts"] == 3  # max_restarts 2, the third gives up
    reply = ctl.send("still here?")
    assert reply.reply is not None and reply.reply.text == "echo: still here?"
    ready = ctl.ready()
    assert not ready.ready
    assert any(r.subsystem == "agent:crasher" and "failed" in r.detail for r in ready.reasons)
    assert "giving up for now" in rt.stderr


def test_hung_worker_is_replaced_and_its_events_answered(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      runtime={"agents": {"heartbeat_interval": "0.2s", "heartbeat_timeout": "1s"}})
    start_runtime(conf).wait_ready()
    ctl = Control(conf)
    before = actor(ctl, "agent-worker-0")
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply = ctl.send("are you there", wait=20)
        assert reply.reply is not None and reply.reply.text == "echo: are you there"
        # Detected within a few heartbeat periods (1 s timeout), not a long wait.
        assert time.monotonic() - started < 10
        after = actor(ctl, "agent-worker-0")
        assert after["restarts"] == 1
        assert after["pid"] != before["pid"]
        assert "hung" in after["last_error"]
    finally:
        try:
            os.kill(before["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_processes_setting_is_honoured(tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      agents=[agent(f"a{i}", f"c{i}") for i in range(4)],
                      runtime={"agents": {"processes": 3}})
    start_runtime(conf).wait_ready()
    status = Control(conf).status()
    assert status.sizing["processes"] == 3
    assert len(status.workers) == 3
    assert len({w.pid for w in status.workers}) == 3
    assert "configured agents.processes = 3" in str(status.sizing["summary"])


def test_queue_cap_bounds_what_a_worker_holds_the_rest_waits_journaled(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      agents=[agent("kate", "cli", config={"queue_cap": 5})],
                      runtime={"agents": {"heartbeat_timeout": "60s"}})
    start_runtime(conf).wait_ready()
    ctl = Control(conf)
    worker = actor(ctl, "agent-worker-0")
    os.kill(worker["pid"], signal.SIGSTOP)
    try:
        ids = [ctl.send(f"m{i}", wait=0).event_id for i in range(20)]
        wait_until(lambda: actor(ctl, "agent:kate")["details"]["backlog"] == 15,
                   what="15 events waiting in the parent")
        assert actor(ctl, "agent:kate")["details"]["in_flight"] == 5
    finally:
        os.kill(worker["pid"], signal.SIGCONT)
    wait_until(lambda: actor(ctl, "agent:kate")["details"]["processed"] == 20,
               what="all 20 answered once the worker runs again")
    assert len(set(ids)) == 20


def test_a_worker_above_max_rss_mb_is_recycled_without_losing_events(
        tmp_path: Path, data_dir: Path, start_runtime) -> None:
    # Every worker is above 1 MB: each is drained and replaced after its first heartbeat.
    conf = write_conf(tmp_path / "conf", data_dir,
                      runtime={"agents": {"max_rss_mb": 1, "heartbeat_interval": "0.2s"}})
    rt = start_runtime(conf).wait_ready()
    ctl = Control(conf)
    rt.wait_for_log("recycling it after its in-flight work")
    rt.wait_for_log("agent worker recycled")
    for i in range(5):
        reply = ctl.send(f"r{i}", wait=15)
        assert reply.reply is not None and reply.reply.text == f"echo: r{i}"
    host = actor(ctl, "agent-worker-0")
    assert host["details"]["generation"] >= 2
    assert host["restarts"] == 0  # recycling is not a crash


def test_heartbeat_events_and_the_empty_event_filter(
        tmp_path: Path, data_dir: Path, nats_server: NatsServer, start_runtime) -> None:
    conf = write_conf(
        tmp_path / "conf", data_dir,
        agents=[agent("kate", "cli", heartbeat={"enabled": True, "interval": "0.2s"})],
        broker={"type": "nats", "url": nats_server.url, "reconnect_wait": "0.2s"})
    start_runtime(conf).wait_ready()
    ctl = Control(conf)
    wait_until(lambda: ctl.ready().ready, what="ready")
    probe = Probe(nats_server.url)
    try:
        probe.subscribe("agent.events.kate.heartbeat")
        probe.subscribe("plugin.outbound.>")
        wait_until(lambda: len([m for m in probe.messages() if m.subject.endswith("heartbeat")]) >= 2,
                   what="two heartbeat events")
        beat = json.loads(next(m for m in probe.messages() if m.subject.endswith("heartbeat")).data)
        assert beat["payload"]["agent"] == "kate"
        probe.publish("plugin.inbound.cli", b'{"text": "   "}')
        probe.publish("plugin.inbound.cli", b'{"text": "real"}')
        wait_until(lambda: any(m.subject == "plugin.outbound.cli" for m in probe.messages()),
                   what="the answer to the real message")
        answers = [json.loads(m.data)["payload"]["text"] for m in probe.messages()
                   if m.subject == "plugin.outbound.cli"]
        assert answers == ["echo: real"]
        assert actor(ctl, "agent:kate")["details"]["processed"] == 1
        assert sample(data_dir, "messages_dropped_total", reason="empty") == 1.0
    finally:
        probe.close()
