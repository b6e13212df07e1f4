"""SPEC §4 inbox journal: an accepted inbound event is not lost by a crash, and an
event id is handed to an agent once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.bus.helpers import InProcessBridge, Probe, quick_broker
from tests.support.bridge_process import BridgeProcess
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until


def open_inbox(proc: BridgeProcess) -> list[tuple[str, str]]:
    start = len(proc.snapshot())
    proc.send("inbox")
    proc.wait_line(r"^inbox-end ", start=start)
    return [(ln.split()[1], ln.split()[2]) for ln in proc.snapshot()[start:]
            if ln.startswith("inbox ")]


def test_unfinished_inbox_rows_survive_kill_9_and_the_bridge_does_not_redeliver_them(
        bridge_process: Callable[..., BridgeProcess], tmp_path: Path) -> None:
    db = tmp_path / "queue" / "broker.db"
    kwargs = {"db": db, "broker": {"type": "local"}, "attach": {"kate": ["plugin.inbound.cli"]}}
    first = bridge_process(**kwargs)
    first.send("journal kate plugin.inbound.cli ev-open hello")
    first.send("journal kate plugin.inbound.cli ev-done bye")
    first.wait_line(r"^deliver kate ev-done 0$")
    assert [ln for ln in first.snapshot() if ln.startswith("deliver ")] == [
        "deliver kate ev-open 0", "deliver kate ev-done 0"]
    first.send("complete ev-done kate")
    first.wait_line(r"^completed ev-done kate$")
    first.kill()

    second = bridge_process(**kwargs)
    assert open_inbox(second) == [("ev-open", "kate")], "the open row, not the completed one"
    # The same ids arriving again are duplicates, open or done: not handed out.
    second.send("journal kate plugin.inbound.cli ev-open hello again")
    second.send("journal kate plugin.inbound.cli ev-done bye again")
    second.send("journal kate plugin.inbound.cli ev-new news")
    second.wait_line(r"^deliver kate ev-new 0$")
    deliveries = [ln for ln in second.snapshot() if ln.startswith("deliver ")]
    assert deliveries == ["deliver kate ev-new 0"], (
        "at boot the bridge redelivers nothing itself (the supervisor does, from OpenInbox), "
        f"and a known id is never delivered twice; got {deliveries}")
    assert second.quit() == 0


def test_a_duplicate_event_id_on_nats_reaches_the_agent_once(
        nats_server: NatsServer, make_bridge: Callable[..., InProcessBridge],
        make_probe: Callable[[str], Probe], tmp_path: Path) -> None:
    bridge = make_bridge(quick_broker(nats_server.url), tmp_path / "q.db")
    bridge.core.attach("kate", ["plugin.inbound.cli"])
    probe = make_probe(nats_server.url)

    def envelope(event_id: str) -> bytes:
        return json.dumps({"id": event_id, "ts": 1.0, "topic": "plugin.inbound.cli",
                           "source": "probe", "payload": {"text": "hi", "sender": "p"}}).encode()

    probe.publish("plugin.inbound.cli", envelope("dup-1"))
    wait_until(lambda: "dup-1" in bridge.delivered_ids("kate"), what="the first copy")
    probe.publish("plugin.inbound.cli", envelope("dup-1"))  # e.g. a publisher's retry
    probe.publish("plugin.inbound.cli", envelope("after-1"))
    wait_until(lambda: "after-1" in bridge.delivered_ids("kate"), what="the next event")
    assert bridge.delivered_ids("kate") == ["dup-1", "after-1"]
