"""SPEC §4 publish path: a NATS outage (or no NATS at all) loses nothing.

Witnesses of what NATS received: a plain nats-py subscriber (the probe) and a
file-backed JetStream stream on the same server. The stream also records what
arrived while the probe itself was still reconnecting after a restart, so an
event counts as received when either has it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nexo_actors.messages import FetchPending
from tests.integration.bus.helpers import (
    InProcessBridge,
    Probe,
    PublishResult,
    Received,
    prepare_stream,
    quick_broker,
    received_ids,
)
from tests.support.nats import NatsServer
from tests.support.waiting import free_port, wait_until

TOTAL = 5000
RATE = 2000.0  # events per second: the outage covers about a second of traffic
STOP_AT = 1500
START_AT = 3500


def first_occurrences(messages: list[Received]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for m in messages:
        if m.id not in seen:
            seen.add(m.id)
            out.append(m.id)
    return out


@pytest.mark.slow
def test_outage_with_no_loss(nats_server: NatsServer, make_bridge: Callable[..., InProcessBridge],
                             make_probe: Callable[[str], Probe], tmp_path: Path) -> None:
    probe = make_probe(nats_server.url)
    probe.subscribe("out.>")
    probe.add_stream("OUT", ["out.>"])
    bridge = make_bridge(quick_broker(nats_server.url), tmp_path / "q.db")
    wait_until(lambda: bridge.core.link is not None and bridge.core.link.connected,
               what="the bridge to connect")

    results: list[PublishResult] = []
    reached = {STOP_AT: threading.Event(), START_AT: threading.Event()}
    crashed: list[BaseException] = []

    def publisher() -> None:
        try:
            start = time.monotonic()
            for n in range(TOTAL):
                delay = start + n / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing a steady producer, not waiting for a condition
                results.append(bridge.publish("out.steady", n))
                if n + 1 in reached:
                    reached[n + 1].set()
        except BaseException as exc:
            crashed.append(exc)
            for ev in reached.values():
                ev.set()

    thread = threading.Thread(target=publisher, name="publisher")
    thread.start()
    try:
        assert reached[STOP_AT].wait(30)
        nats_server.stop()
        assert reached[START_AT].wait(30)
        nats_server.start()
    finally:
        thread.join(60)
    assert not crashed, crashed
    assert len(results) == TOTAL

    errors = [(r.event.id, r.wait(30)) for r in results]
    assert [e for e in errors if e[1] is not None] == [], "every publish must be accepted"
    wait_until(lambda: bridge.core.depth == 0, timeout=60, what="the disk queue to drain")

    published = [r.event.id for r in results]
    index = {event_id: n for n, event_id in enumerate(published)}

    def missing() -> set[str]:
        have = probe.ids()
        if not set(published) <= have:
            have |= {m.id for m in probe.stream_messages("OUT")}
        return set(published) - have

    try:
        wait_until(lambda: not missing(), timeout=60, interval=0.5, what="every event id at NATS")
    except AssertionError:
        pass  # the assertion below reports what is missing, with the duplicates

    subscriber = probe.messages()
    stream = probe.stream_messages("OUT")
    duplicates = len(subscriber) - len({m.id for m in subscriber})
    stream_duplicates = len(stream) - len({m.id for m in stream})
    queued_copies = [m for m in stream if m.queued]
    print(f"\noutage: {TOTAL} events, {len(queued_copies)} went through the disk queue; "
          f"subscriber got {len(subscriber)} messages, {duplicates} duplicates; "
          f"stream got {len(stream)} messages, {stream_duplicates} duplicates")

    assert queued_copies, "the outage must have sent events through the disk queue"
    assert all(m.headers.get("Nexo-Origin") == bridge.instance_id for m in queued_copies)
    order = [index[i] for i in first_occurrences(queued_copies)]
    inversions = [(a, b) for a, b in itertools.pairwise(order) if b < a]
    assert not inversions, (
        f"queued events drained out of publish order ({len(inversions)} inversions, first "
        f"{inversions[:5]}); duplicates={duplicates}/{stream_duplicates}")
    assert not missing(), (
        f"events lost: {sorted(missing())[:10]}; duplicates={duplicates}/{stream_duplicates}")


def test_nats_absent_at_boot(make_bridge: Callable[..., InProcessBridge],
                             make_probe: Callable[[str], Probe], tmp_path: Path) -> None:
    server = NatsServer(port=free_port(), store_dir=tmp_path / "nats-store")
    try:
        prepare_stream(server, "IN", ["plugin.inbound.>"])
        bridge = make_bridge(quick_broker(server.url), tmp_path / "q.db")
        bridge.core.attach("kate", ["plugin.inbound.cli", "plugin.inbound.cli.>"])
        results = [bridge.publish("plugin.inbound.cli", n) for n in range(20)]
        ids = [r.event.id for r in results]
        assert all(r.wait(10) is None for r in results)
        # At once, from the local bus, and journaled before delivery.
        wait_until(lambda: bridge.delivered_ids("kate") == ids, timeout=10,
                   what="local delivery of the events to kate in order")
        assert bridge.core.depth == len(ids)

        server.start()
        probe = make_probe(server.url)
        probe.subscribe("plugin.inbound.>")
        wait_until(lambda: set(ids) <= received_ids(probe, "IN"), timeout=30, interval=0.2,
                   what="the queued events at the external subscriber")
        wait_until(lambda: bridge.core.depth == 0, timeout=10, what="the disk queue to drain")
        # The drained copies came back to this runtime's own NATS subscription
        # (queue group nexo.kate); kate already had them and must not get them again.
        marker = bridge.publish("plugin.inbound.cli", 999, "after the drain")
        assert marker.wait(10) is None
        wait_until(lambda: marker.event.id in bridge.delivered_ids("kate"), timeout=10,
                   what="a fresh event through NATS to kate")
        delivered = bridge.delivered_ids("kate")
        assert delivered == [*ids, marker.event.id], (
            f"kate got {len(delivered)} deliveries for {len(ids) + 1} events")
        assert all(not d.redelivered for d in bridge.deliveries)
    finally:
        server.kill()


def test_listen_made_while_nats_is_down_hears_nats_once_it_connects(
        make_bridge: Callable[..., InProcessBridge], make_probe: Callable[[str], Probe],
        tmp_path: Path) -> None:
    server = NatsServer(port=free_port(), store_dir=tmp_path / "nats-store")
    try:
        bridge = make_bridge(quick_broker(server.url), tmp_path / "q.db")
        heard: list[str] = []
        cancel = bridge.core.listen("agent.reply.x", lambda ev: heard.append(ev.id))
        server.start()
        wait_until(lambda: bridge.core.details()["connected"], what="the bridge to connect")
        probe = make_probe(server.url)
        envelope = {"id": "reply-1", "ts": 1.0, "topic": "agent.reply.x", "source": "probe",
                    "payload": {"text": "answer"}}
        # The bridge subscribes right after connecting; publish until it hears.
        wait_until(lambda: probe.publish("agent.reply.x", json.dumps(envelope).encode())
                   or "reply-1" in heard, timeout=10, interval=0.1,
                   what="the listener to hear a message published on NATS")
        cancel()
    finally:
        server.kill()


def test_a_late_flush_failure_still_queues_events_in_publish_order(
        nats_server: NatsServer, make_bridge: Callable[..., InProcessBridge],
        tmp_path: Path) -> None:
    # e1 waits for a flush the stalled server never answers; e2, published
    # after it, falls back at once (breaker forced open). e1's flush fails
    # later, yet the queue must hold e1 before e2.
    bridge = make_bridge(quick_broker(nats_server.url, flush_timeout=1.0), tmp_path / "q.db")
    wait_until(lambda: bridge.core.details()["connected"], what="the bridge to connect")
    link = bridge.core.link
    assert link is not None
    written = link.nc.stats["out_msgs"]
    nats_server.pause()
    e1 = bridge.publish("out.order", 1)
    wait_until(lambda: link.nc.stats["out_msgs"] > written, what="e1 written to the socket")
    bridge.core.breaker.trip()
    e2 = bridge.publish("out.order", 2)
    assert e1.wait(10) is None and e2.wait(10) is None
    assert e2.finished_at - e1.finished_at >= 0, "outcomes are applied in publish order"
    rows = bridge.store.ask(FetchPending(limit=10))
    assert [r.id for r in rows] == [e1.event.id, e2.event.id]
