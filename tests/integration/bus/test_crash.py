"""SPEC §4: an accepted event survives `kill -9` of the runtime process.

The runtime here is tests/support/bridge_process.py (QueueStore +
BrokerBridge in a child process); "accepted" means its on_done ran with no
error, which the child prints before the test kills it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from tests.integration.bus.helpers import Probe, broker_json, received_ids
from tests.support.bridge_process import BridgeProcess
from tests.support.nats import NatsServer
from tests.support.waiting import free_port, wait_until


def pending_ids(db: Path) -> list[str]:
    """pending_events in drain order, read beside the writer (WAL)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return [row[0] for row in conn.execute("SELECT id FROM pending_events ORDER BY seq")]
    finally:
        conn.close()


@pytest.mark.slow
def test_crash_during_outage_drains_the_queue_after_restart(
        bridge_process: Callable[..., BridgeProcess], make_probe: Callable[[str], Probe],
        tmp_path: Path) -> None:
    db = tmp_path / "queue" / "broker.db"
    server = NatsServer(port=free_port(), store_dir=tmp_path / "nats-store")
    try:
        first = bridge_process(db=db, broker=broker_json(server.url))  # NATS is down
        first.send("publish out.crash 200")
        accepted = first.wait_count("accepted", 200)
        assert first.ids("failed") == []
        assert pending_ids(db) == accepted, "accepted events are in pending_events, in order"
        first.kill()
        assert pending_ids(db) == accepted, "kill -9 lost queued events"

        server.start()
        probe = make_probe(server.url)
        probe.subscribe("out.>")
        probe.add_stream("OUT", ["out.>"])
        bridge_process(db=db, broker=broker_json(server.url))
        wait_until(lambda: set(accepted) <= received_ids(probe, "OUT"), timeout=30, interval=0.2,
                   what="every event queued before the crash at the external subscriber")
        wait_until(lambda: pending_ids(db) == [], timeout=10, what="pending_events to empty")
        drained = list(dict.fromkeys(m.id for m in probe.stream_messages("OUT")))
        assert drained == accepted, "drained in enqueue order, each once"
    finally:
        server.kill()


@pytest.mark.slow
def test_nats_py_buffer_trap_unflushed_publishes_are_not_delivered(
        nats_server: NatsServer, bridge_process: Callable[..., BridgeProcess],
        make_probe: Callable[[str], Probe], tmp_path: Path) -> None:
    db = tmp_path / "queue" / "broker.db"
    probe = make_probe(nats_server.url)
    probe.subscribe("out.>")
    probe.add_stream("OUT", ["out.>"])
    proc = bridge_process(db=db, broker=broker_json(nats_server.url))
    wait_until(lambda: "connected=1" in _stats(proc), what="the bridge to connect")

    proc.send("publish out.trap 20")
    warm = proc.wait_count("accepted", 20)
    wait_until(lambda: set(warm) <= probe.ids(), what="the first events at the subscriber")

    for cycle in (1, 2):
        # TCP stays open and nothing answers: nats-py would buffer happily.
        nats_server.pause()
        before = set(proc.ids("accepted"))
        proc.send("publish out.trap 30")
        accepted = proc.wait_count("accepted", len(before) + 30)
        stalled = [i for i in accepted if i not in before]
        queued = set(pending_ids(db))
        assert set(stalled) <= queued, (
            f"cycle {cycle}: {len(set(stalled) - queued)} events counted as delivered while the "
            "server answered nothing, and they are not in pending_events")
        if cycle == 1:
            # The late PONGs of the first stall must not break the next one.
            nats_server.resume()
            wait_until(lambda: pending_ids(db) == [], timeout=30, what="the queue to drain")
            wait_until(lambda s=set(accepted): s <= received_ids(probe, "OUT"), timeout=10,
                       what="the queued events at the subscriber")

    proc.kill()
    nats_server.resume()
    accepted = proc.ids("accepted")
    left = set(pending_ids(db))
    wait_until(lambda: set(accepted) <= received_ids(probe, "OUT") | left, timeout=10,
               what="every accepted event at the subscriber or in pending_events")


def _stats(proc: BridgeProcess) -> str:
    start = len(proc.snapshot())
    proc.send("stats")
    return proc.wait_line(r"^stats ", start=start)
