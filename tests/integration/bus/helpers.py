"""What the bus fault tests share: an in-process bridge (and, re-exported from
tests/support/probe.py, the external NATS client `Probe`).

`InProcessBridge` wires a QueueStore and a BrokerBridge as the daemon does
(the store's depth feeds the bridge's backpressure) and records what its
attached agents receive. The probe keeps a JetStream stream as a second
witness of what the server received while it was itself reconnecting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nexo_actors.bus.bridge import Bridge, BrokerBridge
from nexo_actors.config.schema import BreakerSettings, Broker, Persistence
from nexo_actors.messages import Event, new_event
from nexo_actors.store.queue import QueueStore
from tests.support.probe import Probe, Received, event_id

__all__ = ["Probe", "Received", "event_id"]

T = TypeVar("T")


def quick_broker(url: str, db: Path | None = None, **overrides: Any) -> Broker:
    """NATS settings with test-sized timings (every one still a real setting)."""
    fields: dict[str, Any] = {
        "type": "nats", "url": url, "connect_timeout": 1.0, "reconnect_wait": 0.1,
        "flush_timeout": 1.0, "tick_interval": 0.05, "refresh_interval": 0.2,
        "breaker": BreakerSettings(backoff=0.3, max_backoff=1.0), "max_slowdown": 0.01,
    }
    if db is not None:
        fields["persistence"] = Persistence(path=str(db))
    fields.update(overrides)
    return Broker(**fields)


def broker_json(url: str, **overrides: Any) -> dict[str, Any]:
    """The same settings as broker.yaml keys, for tests/support/bridge_process.py."""
    doc: dict[str, Any] = {
        "type": "nats", "url": url, "connect_timeout": 1.0, "reconnect_wait": 0.1,
        "flush_timeout": 1.0, "tick_interval": 0.05, "refresh_interval": 0.2,
        "breaker": {"backoff": 0.3, "max_backoff": 1.0}, "max_slowdown": 0.01,
    }
    doc.update(overrides)
    return doc


@dataclass
class Delivery:
    agent: str
    event: Event
    redelivered: bool


class InProcessBridge:
    """QueueStore + BrokerBridge in this process; `close()` stops both (idempotent)."""

    def __init__(self, settings: Broker, db: Path, instance_id: str = "test-instance") -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.cond = threading.Condition()
        self.deliveries: list[Delivery] = []
        holder: list[Bridge] = []

        def on_depth(depth: int) -> None:
            if holder:
                holder[0].on_depth(depth)

        self.store = QueueStore.start(db, settings.persistence,
                                      max_pending=settings.limits.max_pending,
                                      max_attempts=settings.max_attempts, on_depth=on_depth)
        try:
            self.ref = BrokerBridge.start(settings, self.store, instance_id=instance_id,
                                          deliver=self._deliver)
        except Exception:
            self.store.stop()
            raise
        self.core: Bridge = self.ref.proxy().core.get()
        holder.append(self.core)
        self.closed = False

    def _deliver(self, agent: str, event: Event, redelivered: bool) -> None:
        with self.cond:
            self.deliveries.append(Delivery(agent, event, redelivered))
            self.cond.notify_all()

    def delivered_ids(self, agent: str) -> list[str]:
        with self.cond:
            return [d.event.id for d in self.deliveries if d.agent == agent]

    def publish(self, topic: str, n: int = 0, text: str | None = None) -> PublishResult:
        """Publish one event; the result's `wait()` returns on_done's error (None = accepted)."""
        event = new_event(topic, {"text": text or f"event {n}", "n": n}, "test")
        result = PublishResult(event)
        self.core.publish(topic, event, on_done=result.done)
        return result

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.ref.proxy().close(time.monotonic() + 3).get(timeout=10)
        finally:
            self.ref.stop()
            self.store.stop()


class PublishResult:
    def __init__(self, event: Event) -> None:
        self.event = event
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.finished_at = 0.0

    def done(self, error: BaseException | None) -> None:
        self.error = error
        self.finished_at = time.monotonic()
        self.finished.set()

    def wait(self, timeout: float = 10.0) -> BaseException | None:
        assert self.finished.wait(timeout), f"on_done of {self.event.id} did not run in {timeout}s"
        return self.error


def prepare_stream(server: Any, name: str, subjects: list[str]) -> None:
    """Create a stream on `server` (not running) and leave it stopped.

    When the server starts again the stream is recovered before clients are
    accepted, so it records everything the bridge publishes from its first
    connection on, whoever connects first.
    """
    server.start()
    try:
        probe = Probe(server.url)
        try:
            probe.add_stream(name, subjects)
        finally:
            probe.close()
    finally:
        server.stop()


def received_ids(probe: Probe, stream: str) -> set[str]:
    """Event ids the probe's subscription or the stream got."""
    return probe.ids() | {m.id for m in probe.stream_messages(stream)}
