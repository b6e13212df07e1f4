"""The in-process bus: NATS matching, per-subscriber order, backpressure without loss."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from nexo_actors.bus.local import LocalBus, LocalSubscription
from nexo_actors.errors import BusError, SubjectError
from nexo_actors.messages import Event, new_event
from tests.support.waiting import wait_until


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    b = LocalBus()
    try:
        yield b
    finally:
        b.close(timeout=2.0)


class Recorder:
    """A handler that keeps what it received (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.headers: list[Mapping[str, str]] = []

    def __call__(self, event: Event, headers: Mapping[str, str]) -> None:
        with self.lock:
            self.events.append(event)
            self.headers.append(headers)

    @property
    def topics(self) -> list[str]:
        with self.lock:
            return [e.topic for e in self.events]

    @property
    def seqs(self) -> list[Any]:
        with self.lock:
            return [e.payload["n"] for e in self.events]


def ev(topic: str, n: int = 0) -> Event:
    return new_event(topic, {"text": f"m{n}", "n": n}, "test")


def sub_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"bus-sub:{name}" and t.is_alive()]


def test_each_subscriber_receives_events_in_publish_order(bus: LocalBus) -> None:
    first, second = Recorder(), Recorder()
    s1 = bus.subscribe("orders.>", first)
    s2 = bus.subscribe("orders.new", second)
    for n in range(500):
        assert bus.publish("orders.new", ev("orders.new", n)) == 2
    wait_until(lambda: s1.delivered == 500 and s2.delivered == 500, what="all 500 delivered")
    assert first.seqs == list(range(500))
    assert second.seqs == list(range(500))


def test_wildcards_deliver_like_nats(bus: LocalBus) -> None:
    patterns = ["plugin.inbound.cli", "plugin.inbound.cli.>", "plugin.*.cli", "plugin.>", ">",
                "agent.route.*", "*.*.*.*"]
    recorders = {p: Recorder() for p in patterns}
    subs = [bus.subscribe(p, recorders[p]) for p in patterns]
    published = {
        "plugin.inbound.cli": 4,       # exact, plugin.*.cli, plugin.>, >
        "plugin.inbound.cli.kate": 4,  # cli.>, plugin.>, >, *.*.*.*
        "plugin.outbound.cli": 3,      # plugin.*.cli, plugin.>, >
        "agent.route.ops": 2,          # agent.route.*, >
        "agent.route.ops.x": 2,        # >, *.*.*.*
    }
    total = 0
    for topic, expected in published.items():
        assert bus.publish(topic, ev(topic)) == expected, topic
        total += expected
    wait_until(lambda: sum(s.delivered for s in subs) == total, what="deliveries")
    assert recorders["plugin.inbound.cli"].topics == ["plugin.inbound.cli"]
    assert recorders["plugin.inbound.cli.>"].topics == ["plugin.inbound.cli.kate"]
    assert recorders["plugin.*.cli"].topics == ["plugin.inbound.cli", "plugin.outbound.cli"]
    assert recorders["plugin.>"].topics == ["plugin.inbound.cli", "plugin.inbound.cli.kate",
                                            "plugin.outbound.cli"]
    assert recorders[">"].topics == list(published)
    assert recorders["agent.route.*"].topics == ["agent.route.ops"]
    assert recorders["*.*.*.*"].topics == ["plugin.inbound.cli.kate", "agent.route.ops.x"]


def test_publish_returns_how_many_subscriptions_got_the_event(bus: LocalBus) -> None:
    bus.subscribe("a.*", Recorder())
    bus.subscribe("a.>", Recorder())
    bus.subscribe("b", Recorder())
    assert bus.publish("a.x", ev("a.x")) == 2
    assert bus.publish("a.x.y", ev("a.x.y")) == 1
    assert bus.publish("c", ev("c")) == 0


def test_headers_reach_the_handler_read_only(bus: LocalBus) -> None:
    rec = Recorder()
    sub = bus.subscribe("h", rec)
    headers = {"Nexo-Origin": "rt-1"}
    bus.publish("h", ev("h"), headers)
    headers["Nexo-Origin"] = "changed after publish"
    bus.publish("h", ev("h"))
    wait_until(lambda: sub.delivered == 2, what="2 deliveries")
    assert dict(rec.headers[0]) == {"Nexo-Origin": "rt-1"}
    assert dict(rec.headers[1]) == {}
    with pytest.raises(TypeError):
        rec.headers[0]["x"] = "y"  # type: ignore[index]


def test_slow_subscriber_blocks_the_publisher_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = LocalBus(queue_size=2)
    gate = threading.Event()
    entered = threading.Event()
    got: list[int] = []

    def slow(event: Event, _headers: Mapping[str, str]) -> None:
        entered.set()
        gate.wait(10)
        got.append(event.payload["n"])

    sub = bus.subscribe("work.*", slow, name="slowpoke")
    published_all = threading.Event()

    def producer() -> None:
        for n in range(20):
            bus.publish("work.item", ev("work.item", n))
        published_all.set()

    caplog.set_level(logging.WARNING, logger="nexo_actors.bus.local")
    started = time.monotonic()
    t = threading.Thread(target=producer, daemon=True)
    t.start()
    try:
        # Handler stuck on event 0, queue full with 1 and 2: the publisher is
        # waiting for room, not dropping.
        wait_until(lambda: entered.is_set() and sub.pending() == 2 and bus.slow_waits > 0,
                   what="the publisher to find the queue full")
        assert not published_all.is_set()
        gate.set()
        assert published_all.wait(10)
        wait_until(lambda: sub.delivered == 20, what="all 20 delivered")
        assert got == list(range(20))
        assert bus.slow_waits > 0
        assert sub.slow_waits == bus.slow_waits
        # Still subscribed and still receiving.
        assert sub in bus.subscriptions()
        assert bus.publish("work.item", ev("work.item", 20)) == 1
        wait_until(lambda: sub.delivered == 21, what="a delivery after the slow spell")
        warnings = [r for r in caplog.records if "is slow" in r.getMessage()]
        assert warnings, "a full queue is logged"
        assert warnings[0].subject == "work.item"  # type: ignore[attr-defined]
        assert warnings[0].subscription == "slowpoke"  # type: ignore[attr-defined]
        # At most one warning per second, however many waits there were.
        assert len(warnings) <= 1 + int(time.monotonic() - started)
    finally:
        gate.set()
        t.join(10)
        bus.close()


def test_handler_exception_does_not_kill_the_subscription(
    bus: LocalBus, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    def flaky(event: Event, _headers: Mapping[str, str]) -> None:
        if event.payload["n"] == 1:
            raise RuntimeError("handler bug")
        got.append(event.payload["n"])

    sub = bus.subscribe("x", flaky, name="flaky")
    for n in range(4):
        bus.publish("x", ev("x", n))
    wait_until(lambda: sub.delivered + sub.errors == 4, what="4 handler calls")
    assert got == [0, 2, 3]
    assert sub.errors == 1 and sub.delivered == 3
    assert sub in bus.subscriptions()
    failures = [r for r in caplog.records if r.exc_info and "flaky" in r.getMessage()]
    assert failures and failures[0].subscription == "flaky"  # type: ignore[attr-defined]


def test_unsubscribe_delivers_what_was_queued_then_stops(bus: LocalBus) -> None:
    gate = threading.Event()
    got: list[int] = []

    def gated(event: Event, _headers: Mapping[str, str]) -> None:
        gate.wait(10)
        got.append(event.payload["n"])

    sub = bus.subscribe("q", gated, name="leaving")
    for n in range(5):
        bus.publish("q", ev("q", n))
    done = threading.Event()
    leaver = threading.Thread(target=lambda: (sub.unsubscribe(timeout=10), done.set()), daemon=True)
    leaver.start()
    wait_until(lambda: sub not in bus.subscriptions(), what="the subscription to leave the bus")
    assert bus.publish("q", ev("q", 99)) == 0  # nothing new after unsubscribe
    assert not sub.active
    gate.set()
    assert done.wait(10)
    assert got == [0, 1, 2, 3, 4]
    assert sub_threads("leaving") == []


def test_invalid_subjects_and_patterns_raise_subject_error(bus: LocalBus) -> None:
    for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "*"]:
        with pytest.raises(SubjectError):
            bus.publish(bad, ev("x"))
    for bad in ["", "a..b", "a.>.b", ">.a", "a .b", "a."]:
        with pytest.raises(SubjectError):
            bus.subscribe(bad, Recorder())
    assert bus.subscriptions() == []


def test_close_delivers_queued_events_then_refuses_publishes() -> None:
    bus = LocalBus()
    gate = threading.Event()
    got: list[int] = []

    def gated(event: Event, _headers: Mapping[str, str]) -> None:
        gate.wait(10)
        got.append(event.payload["n"])

    bus.subscribe("c", gated, name="closing")
    for n in range(3):
        bus.publish("c", ev("c", n))
    closer = threading.Thread(target=bus.close, kwargs={"timeout": 10}, daemon=True)
    closer.start()
    wait_until(lambda: bus.subscriptions() == [], what="close() to start")
    with pytest.raises(BusError):
        bus.publish("c", ev("c", 9))
    gate.set()
    closer.join(10)
    assert got == [0, 1, 2]
    assert sub_threads("closing") == []
    with pytest.raises(BusError):
        bus.publish("c", ev("c"))
    with pytest.raises(BusError):
        bus.subscribe("c", Recorder())


def test_close_gives_up_on_a_stuck_handler_at_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    bus = LocalBus()
    gate = threading.Event()
    bus.subscribe("s", lambda _e, _h: gate.wait(10) and None, name="stuck")
    for n in range(3):
        bus.publish("s", ev("s", n))
    try:
        started = time.monotonic()
        bus.close(timeout=0.2)
        assert time.monotonic() - started < 2.0
        assert any("2 events undelivered to stuck" in r.getMessage() for r in caplog.records)
    finally:
        gate.set()
    wait_until(lambda: sub_threads("stuck") == [], what="the stuck thread to exit once released")


def test_handler_publishing_to_its_own_full_queue_does_not_deadlock() -> None:
    bus = LocalBus(queue_size=1)
    got: list[int] = []
    sub: LocalSubscription

    def echo(event: Event, _headers: Mapping[str, str]) -> None:
        n = event.payload["n"]
        got.append(n)
        if n < 5:
            # Two publishes: the second finds this subscription's queue full.
            bus.publish("loop", ev("loop", n + 10))
            bus.publish("loop", ev("loop", n + 1))

    sub = bus.subscribe("loop", echo)
    try:
        bus.publish("loop", ev("loop", 0))
        wait_until(lambda: sub.delivered == 11, what="the self-publishing chain to finish")
        assert sorted(got) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14]
    finally:
        bus.close()


def test_publish_and_subscribe_from_many_threads(bus: LocalBus) -> None:
    rec = Recorder()
    sub = bus.subscribe("t.>", rec)
    start = threading.Barrier(4)

    def producer(k: int) -> None:
        start.wait()
        for n in range(200):
            bus.publish(f"t.{k}", ev(f"t.{k}", n))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    wait_until(lambda: sub.delivered == 800, what="800 deliveries")
    for k in range(4):  # each producer's events arrive in its own order
        assert [e.payload["n"] for e in rec.events if e.topic == f"t.{k}"] == list(range(200))
