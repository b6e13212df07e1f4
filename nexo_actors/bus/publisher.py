"""The publish path of the bridge (SPEC §4 "Publish path").

`Publisher.publish` is thread-safe and never blocks on the network:

* NATS up and breaker closed -> write + a shared flush; the event counts as
  delivered when a flush covering it returns. Callers hand events over
  through an outbox the loop empties once per burst, and a batch is
  confirmed together.
* Otherwise (or when that fails) -> one store transaction puts it in
  pending_events (and, for a reply, closes its inbox row); then this
  process's agents get it (journaled like any inbound event) and its other
  subscribers from the local bus. The queued copy carries headers naming this
  instance and the agents that already had it, so its drained copy is
  skipped by them and by their replicas elsewhere: no duplicate, no loss.
* With `type: local` the local bus is the bus and nothing is queued.

Outcomes (queue, close the inbox row, call `on_done`) are applied strictly in
publish order: a publish waiting for its flush can fail after later ones
already went to the disk queue, and applying them in order keeps
pending_events, and so the drain, in the order events were published.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import pykka
from nats.errors import MaxPayloadError

from nexo_actors import metrics
from nexo_actors.bus.local import LocalBus
from nexo_actors.bus.nats_link import NatsLink
from nexo_actors.bus.subjects import validate_subject
from nexo_actors.config.schema import Broker
from nexo_actors.errors import PayloadTooLargeError
from nexo_actors.messages import (
    LOCAL_HEADER,
    ORIGIN_HEADER,
    CompleteInbound,
    EnqueuePending,
    Event,
    StoreCommand,
    encode_event,
)
from nexo_actors.resilience import CircuitBreaker

log = logging.getLogger(__name__)

PublishDone = Callable[[BaseException | None], None]
# A bound on the memo of validated topics (reply subjects are unique).
VALID_TOPICS_KEPT = 4096


def local_headers(instance_id: str, agents: list[str]) -> dict[str, str]:
    """Headers of an event this runtime's agents (`agents`) already have."""
    return {ORIGIN_HEADER: instance_id, LOCAL_HEADER: ",".join(agents) or "-"}


def already_had(headers: Any, agent_id: str) -> bool:
    """Whether `agent_id` (here or a replica) already has this event (see local_headers)."""
    return agent_id in (headers or {}).get(LOCAL_HEADER, "").split(",")


class Outgoing:
    """One publish on its way to NATS, and its place in line."""

    __slots__ = ("already", "data", "done", "error", "event", "headers", "inbound", "state", "topic")

    # WAITING/FLUSHING (written, flush pending) hold the line; the rest are outcomes.
    WAITING, FLUSHING, SENT, FAILED, QUEUE = range(5)

    def __init__(self, topic: str, event: Event, data: bytes, inbound: tuple[str, str] | None,
                 done: PublishDone | None, already: list[str], headers: dict[str, str] | None) -> None:
        self.topic = topic
        self.event = event
        self.data = data
        self.inbound = inbound
        self.done = done
        self.already = already
        self.headers = headers
        self.state = Outgoing.WAITING
        self.error: BaseException | None = None


class Publisher:
    def __init__(self, settings: Broker, *, store: pykka.ActorRef[Any], local: LocalBus,
                 link: NatsLink | None, breaker: CircuitBreaker, loop: asyncio.AbstractEventLoop,
                 instance_id: str, agents_for: Callable[[str], list[str]],
                 accept: Callable[[Event, str], None]) -> None:
        self.settings = settings
        self.store = store
        self.local = local
        self.link = link
        self.breaker = breaker
        self.loop = loop
        self.instance_id = instance_id
        self.agents_for = agents_for
        self.accept = accept
        self.dropped = 0
        self._inflight = 0  # publishes accepted by `publish` whose on_done has not run
        self._idle = threading.Condition(threading.Lock())
        # Callers append to the outbox; the loop moves items into line (in
        # publish order) and to the sender task.
        self._outbox: deque[Outgoing] = deque()
        self._valid_topics: set[str] = set()
        self._pump_scheduled = False
        self._line: deque[Outgoing] = deque()  # loop thread only, oldest first
        self._to_send: deque[Outgoing] = deque()  # loop thread only
        self._sender: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return self._inflight

    def publish(self, topic: str, event: Event, *, inbound: tuple[str, str] | None = None,
                on_done: PublishDone | None = None, already: list[str] | None = None) -> None:
        """Publish `event` on `topic`; `on_done(error)` runs once it is delivered or durable.

        `inbound=(event_id, agent_id)` marks this as the reply to that inbox row,
        which is closed in the same step (same transaction when queued).
        `already`: this runtime's agents that have the event journaled; every
        copy says so in its headers, and they skip it.
        Raises PayloadTooLargeError / SubjectError at once.
        """
        if topic not in self._valid_topics:  # topics repeat: validate each one once
            validate_subject(topic)
            if len(self._valid_topics) >= VALID_TOPICS_KEPT:
                self._valid_topics.clear()
            self._valid_topics.add(topic)
        data = encode_event(event)
        if len(data) > self.settings.limits.max_payload:
            raise PayloadTooLargeError(topic, len(data), self.settings.limits.max_payload)
        marked = local_headers(self.instance_id, already) if already else None
        with self._idle:
            self._inflight += 1
        if self.link is None:
            self.local.publish(topic, event, marked)
            metrics.EVENTS_PUBLISHED.labels(transport=metrics.TRANSPORT_LOCAL).inc()
            self._complete(inbound, None, self._finisher(on_done))
            return
        self._outbox.append(Outgoing(topic, event, data, inbound, on_done, already or [], marked))
        # One wake-up of the loop per burst, not per event (deque appends are
        # thread-safe; the loop clears the flag before it empties the outbox).
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.link.call(self._pump)

    def wait_idle(self, deadline: float) -> None:
        """Until every publish is confirmed or queued (or the deadline passes)."""
        with self._idle:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("bridge closing with publishes in flight",
                                extra={"in_flight": self._inflight})
                    return
                self._idle.wait(remaining)

    def _finisher(self, on_done: PublishDone | None) -> PublishDone:
        def done(error: BaseException | None) -> None:
            try:
                if on_done is not None:
                    on_done(error)
            finally:
                self._finish(1)
        return done

    def _finish(self, count: int) -> None:
        with self._idle:
            self._inflight -= count
            if self._inflight <= 0:
                self._idle.notify_all()

    # --- loop thread ----------------------------------------------------------

    def _pump(self) -> None:
        """Put every submitted publish in line, in order, and wake the sender."""
        self._pump_scheduled = False
        while self._outbox:
            item = self._outbox.popleft()
            self._line.append(item)
            self._to_send.append(item)
        if self._to_send and (self._sender is None or self._sender.done()):
            self._sender = self.loop.create_task(self._send())

    async def _send(self) -> None:
        """Write what is in line to NATS, one batch at a time; each batch is confirmed apart."""
        link = self.link
        assert link is not None
        while self._to_send:
            batch = list(self._to_send)
            self._to_send.clear()
            sent: list[Outgoing] = []
            try:
                if link.connected and self.breaker.allow():
                    write = link.writer()
                    for position, item in enumerate(batch):
                        try:
                            await write(item.topic, item.data, headers=item.headers)
                        except MaxPayloadError:
                            # The server's limit is below ours: this event can never go out.
                            item.error = PayloadTooLargeError(item.topic, len(item.data),
                                                              self.settings.limits.max_payload)
                            item.state = Outgoing.FAILED
                            log.error(str(item.error))
                        except Exception as exc:  # the link failed: the rest go to the queue
                            self.breaker.record_failure(str(exc))
                            for rest in batch[position:]:
                                rest.state = Outgoing.QUEUE
                            break
                        else:
                            item.state = Outgoing.FLUSHING
                            sent.append(item)
            finally:
                for item in batch:
                    if item.state == Outgoing.WAITING:  # NATS away, breaker open, or an error
                        item.state = Outgoing.QUEUE
                if sent:
                    self.loop.create_task(self._confirm(sent))
                self._release()

    async def _confirm(self, sent: list[Outgoing]) -> None:
        assert self.link is not None
        try:
            await self.link.confirm(len(sent))
        except Exception as exc:
            self.breaker.record_failure(str(exc))
            state = Outgoing.QUEUE
        else:
            self.breaker.record_success()
            metrics.EVENTS_PUBLISHED.labels(transport=metrics.TRANSPORT_NATS).inc(len(sent))
            state = Outgoing.SENT
        for item in sent:
            item.state = state
        self._release()

    def _release(self) -> None:
        """Apply the outcomes of the oldest publishes that have one, in publish order."""
        line = self._line
        finished = 0
        while line and line[0].state > Outgoing.FLUSHING:
            item = line.popleft()
            try:
                if item.state == Outgoing.QUEUE:
                    self._fallback(item, self._finisher(item.done))
                elif item.inbound is not None:
                    self._complete(item.inbound, None, self._finisher(item.done), error=item.error)
                else:  # no store step: the common, cheap case (counted out below, once)
                    finished += 1
                    if item.done is not None:
                        item.done(item.error)
            except Exception:  # one event's bookkeeping must not stall every later one
                log.exception("applying a publish outcome failed")
        if finished:
            self._finish(finished)

    # --- NATS away ------------------------------------------------------------

    def _fallback(self, item: Outgoing, done: PublishDone) -> None:
        """Queue durably, then hand the event to this process's agents and listeners."""
        topic, event = item.topic, item.event
        fresh = [a for a in self.agents_for(topic) if a not in item.already]
        headers = local_headers(self.instance_id, sorted({*item.already, *fresh}))

        def deliver_here() -> None:
            for agent_id in fresh:
                self.accept(event, agent_id)
            self.local.publish(topic, event, headers)

        if self.settings.fallback.mode == "drop":
            deliver_here()
            self.dropped += 1
            metrics.MESSAGES_DROPPED.labels(reason=metrics.DROP_NATS_UNAVAILABLE).inc()
            metrics.EVENTS_PUBLISHED.labels(transport=metrics.TRANSPORT_LOCAL).inc()
            self._complete(item.inbound, None, done)
            return
        enqueue = EnqueuePending(id=event.id, topic=topic, payload=item.data, headers=headers)

        def queued(error: BaseException | None) -> None:
            if error is None:
                metrics.EVENTS_PUBLISHED.labels(transport=metrics.TRANSPORT_QUEUED).inc()
                deliver_here()
            done(error)

        self._complete(item.inbound, enqueue, queued)

    def _complete(self, inbound: tuple[str, str] | None, enqueue: EnqueuePending | None,
                  done: PublishDone, error: BaseException | None = None) -> None:
        """Close the inbox row and/or queue the event in one transaction, then `done`."""
        def after(_result: Any, store_error: BaseException | None) -> None:
            done(store_error or error)

        command: StoreCommand
        if inbound is not None:
            command = CompleteInbound(event_id=inbound[0], agent_id=inbound[1], enqueue=enqueue,
                                      done=after)
        elif enqueue is not None:
            command = msgspec.structs.replace(enqueue, done=after)
        else:
            done(error)
            return
        self.store.tell(command)
