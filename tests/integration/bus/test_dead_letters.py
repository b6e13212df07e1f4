"""SPEC §4 drain step 3 and `nexo dlq`: three failed drains make a dead letter,
and the real CLI lists, replays and purges it beside a running bridge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from nexo_actors.errors import PayloadTooLargeError
from nexo_actors.messages import ORIGIN_HEADER
from tests.integration.bus.helpers import InProcessBridge, Probe, quick_broker
from tests.support.confdir import write_conf
from tests.support.nats import NatsServer
from tests.support.runtime import nexo
from tests.support.waiting import free_port, wait_until

SERVER_MAX_PAYLOAD = 512


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return list(conn.execute(sql))
    finally:
        conn.close()


@pytest.mark.slow
def test_three_failed_drains_make_a_dead_letter_that_nexo_dlq_replays(
        make_bridge: Callable[..., InProcessBridge], make_probe: Callable[[str], Probe],
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "queue" / "broker.db"
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      broker={"persistence": {"path": str(db)}})
    port = free_port()
    small_conf = tmp_path / "small.conf"
    small_conf.write_text(f"max_payload: {SERVER_MAX_PAYLOAD}\n")
    small = NatsServer(port=port, store_dir=tmp_path / "js-small", extra_args=["-c", str(small_conf)])
    normal = NatsServer(port=port, store_dir=tmp_path / "js-normal")
    try:
        # NATS is down: two events bigger than the server's limit (ours is 4 MB) are queued.
        first = make_bridge(quick_broker(small.url), db)
        big = [first.publish("out.big", n, "x" * (2 * SERVER_MAX_PAYLOAD)) for n in range(2)]
        assert all(r.wait(10) is None for r in big)
        assert {r[0] for r in rows(db, "SELECT id FROM pending_events")} == {r.event.id for r in big}

        small.start()  # the drain fails per row, three times, then gives up on each row
        wait_until(lambda: len(rows(db, "SELECT id FROM dead_letters")) == 2, timeout=30,
                   what="both rows in dead_letters")
        assert rows(db, "SELECT COUNT(*) FROM pending_events") == [(0,)]
        for _id, reason, attempts in rows(db, "SELECT id, reason, attempts FROM dead_letters"):
            assert attempts == 3
            assert str(reason).startswith("publish failed:") and "MaxPayload" in str(reason), reason
        # Published directly while connected, such an event is refused, not queued.
        direct = first.publish("out.big", 9, "x" * (2 * SERVER_MAX_PAYLOAD))
        assert isinstance(direct.wait(10), PayloadTooLargeError)
        assert rows(db, "SELECT COUNT(*) FROM pending_events") == [(0,)]
        first.close()
        small.kill()

        listed = nexo("--config", str(conf), "dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        doc = json.loads(listed.stdout)  # one JSON document
        assert {d["id"] for d in doc["dead_letters"]} == {r.event.id for r in big}
        assert all(d["topic"] == "out.big" and d["attempts"] == 3 for d in doc["dead_letters"])
        table = nexo("--config", str(conf), "dlq", "list")
        assert table.returncode == 0 and big[0].event.id in table.stdout

        unknown = nexo("--config", str(conf), "dlq", "replay", "no-such-id")
        assert unknown.returncode == 1
        assert "no-such-id" in unknown.stderr

        # With a normal server and the bridge running, a replayed row is drained.
        normal.start()
        probe = make_probe(normal.url)
        probe.subscribe("out.>")
        second = make_bridge(quick_broker(normal.url), db)
        replayed = nexo("--config", str(conf), "dlq", "replay", big[0].event.id)
        assert replayed.returncode == 0, replayed.stderr
        wait_until(lambda: big[0].event.id in probe.ids(), timeout=15,
                   what="the replayed event at the subscriber")
        got = next(m for m in probe.messages() if m.id == big[0].event.id)
        assert got.headers.get(ORIGIN_HEADER) == first.instance_id
        wait_until(lambda: rows(db, "SELECT COUNT(*) FROM pending_events") == [(0,)],
                   what="the replayed row to leave pending_events")
        assert second.core.details()["connected"] is True

        purged = nexo("--config", str(conf), "dlq", "purge", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert "purged 1 dead letter" in purged.stdout
        assert json.loads(nexo("--config", str(conf), "dlq", "list", "--json").stdout) == {
            "dead_letters": []}
        refused = nexo("--config", str(conf), "dlq", "purge")
        assert refused.returncode == 1
    finally:
        normal.kill()  # first: both use the port, and kill() waits for it to be free
        small.kill()
