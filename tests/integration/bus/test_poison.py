"""SPEC §3: a body that is not an event goes to dead letters; the subscription goes on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from nexo_actors.config.schema import Limits
from nexo_actors.store.dlq import list_dead_letters
from tests.integration.bus.helpers import InProcessBridge, Probe, quick_broker
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until

MAX_PAYLOAD = 1024


def test_poison_messages_become_dead_letters_and_the_next_event_is_delivered(
        nats_server: NatsServer, make_bridge: Callable[..., InProcessBridge],
        make_probe: Callable[[str], Probe], tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    bridge = make_bridge(quick_broker(nats_server.url, limits=Limits(max_payload=MAX_PAYLOAD)), db)
    bridge.core.attach("kate", ["plugin.inbound.cli"])
    probe = make_probe(nats_server.url)

    def send_valid(text: str) -> str:
        envelope = {"id": f"valid-{text}", "ts": 1.0, "topic": "x", "source": "probe",
                    "payload": {"text": text, "sender": "probe"}}
        probe.publish("plugin.inbound.cli", json.dumps(envelope).encode())
        return str(envelope["id"])

    first = send_valid("first")  # proves the NATS subscription is live
    wait_until(lambda: first in bridge.delivered_ids("kate"), what="the first valid event")

    poison = {
        b"this is not json {": "not JSON",
        b'{"text": 5}': "invalid payload",
        b"[1, 2, 3]": "expected a JSON object",
        json.dumps({"text": "x" * (MAX_PAYLOAD + 10)}).encode(): "over max_payload",
    }
    for body in poison:
        probe.publish("plugin.inbound.cli", body)
    after = send_valid("after")
    wait_until(lambda: after in bridge.delivered_ids("kate"), what="the valid event after the poison")
    assert bridge.delivered_ids("kate") == [first, after]

    rows = list_dead_letters(db)
    assert sorted(r.payload for r in rows) == sorted(poison), "each poison body is kept as received"
    for row in rows:
        assert row.reason.startswith("deserialization error:"), row.reason
        assert row.topic == "plugin.inbound.cli"
        assert poison[row.payload] in row.reason, (poison[row.payload], row.reason)
