"""SPEC §4 backpressure: at max_pending intake pauses, nothing is dropped, and it
resumes once NATS takes the queue below 80 %."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from nexo_actors.config.schema import Limits
from nexo_actors.errors import IntakePausedError
from nexo_actors.messages import new_event
from tests.integration.bus.helpers import (
    InProcessBridge,
    Probe,
    PublishResult,
    prepare_stream,
    quick_broker,
    received_ids,
)
from tests.support.nats import NatsServer
from tests.support.waiting import free_port, wait_until

CAP = 20


def pending_ids(db: Path) -> set[str]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM pending_events")}
    finally:
        conn.close()


def send(bridge: InProcessBridge, n: int) -> PublishResult:
    event = new_event("plugin.inbound.cli", {"text": f"hi {n}", "n": n}, "cli")
    result = PublishResult(event)
    bridge.core.publish_inbound("plugin.inbound.cli", event, on_done=result.done)
    return result


def test_backpressure_pauses_intake_at_max_pending_without_dropping(
        make_bridge: Callable[..., InProcessBridge], make_probe: Callable[[str], Probe],
        tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    server = NatsServer(port=free_port(), store_dir=tmp_path / "js")
    try:
        prepare_stream(server, "ALL", ["plugin.>"])
        bridge = make_bridge(quick_broker(server.url, limits=Limits(max_pending=CAP)), db)
        core = bridge.core
        accepted = []
        for n in range(CAP):
            result = send(bridge, n)
            assert result.wait(10) is None
            accepted.append(result.event.id)
            if n + 1 > CAP // 2:
                assert core.intake_delay() > 0, "producers are slowed above half of max_pending"
        wait_until(lambda: core.intake_paused, what="intake to pause at max_pending")
        assert core.details()["intake_paused"] is True

        with pytest.raises(IntakePausedError, match="disk queue full"):
            send(bridge, 999)
        assert pending_ids(db) == set(accepted), "nothing is dropped at the cap"

        # Replies (not intake) are still accepted and queued past the cap: never dropped.
        reply = bridge.publish("plugin.outbound.cli", 0, "a reply")
        assert reply.wait(10) is None
        assert pending_ids(db) == {*accepted, reply.event.id}

        # A restart on a full queue starts paused (no write needed to notice).
        bridge.close()
        bridge = make_bridge(quick_broker(server.url, limits=Limits(max_pending=CAP)), db)
        core = bridge.core
        wait_until(lambda: core.intake_paused, what="intake paused at boot on a full queue")
        with pytest.raises(IntakePausedError, match="disk queue full"):
            send(bridge, 998)

        server.start()
        probe = make_probe(server.url)
        probe.subscribe("plugin.>")
        wait_until(lambda: not core.intake_paused, timeout=20, what="intake to resume")
        resumed = send(bridge, 1000)
        assert resumed.wait(10) is None
        wait_until(lambda: {*accepted, reply.event.id, resumed.event.id}
                   <= received_ids(probe, "ALL"),
                   timeout=20, what="every accepted event at NATS")
    finally:
        server.kill()
