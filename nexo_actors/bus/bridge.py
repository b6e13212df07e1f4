"""BrokerBridge: the runtime's only door to the bus (SPEC §3, §4).

The actor owns a `Bridge`, which owns an asyncio loop thread (the NATS
client lives there, as do the drain and the periodic tick) and the local bus.

Publish path (`Bridge.publish`, thread-safe, never blocks on the network):
  NATS up and breaker closed -> publish + shared flush; the event counts as
  delivered when the flush returns. Callers hand events over through a queue
  the loop empties once per burst; outcomes are applied in publish order, so
  events that fall back reach pending_events (and the drain) in that order.
  Otherwise (or when that fails) -> one store transaction puts it in
  pending_events (and, for a reply, closes its inbox row), then this
  process's subscribers get it from the local bus, with
  headers naming this instance and the agents that already had it, so the
  drained copy is skipped here and by other replicas of those agents. With
  `type: local` the local bus is the bus and nothing is queued.

Inbound path: a message on an agent's subject is parsed (a bare JSON object
with `text` is wrapped into an envelope; anything else becomes a dead letter
`deserialization error: ...` and the subscription goes on), journaled in the
inbox, and only then handed to the agent's host.

Backpressure never drops: above half of `max_pending` intake is slowed (up to
`max_slowdown` per message); at `max_pending` inbound intake pauses (NATS
subscriptions removed, `nexo send` refused) until the queue is below 80 %.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import pykka
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError

from nexo_actors import metrics
from nexo_actors.bus.local import LocalBus, LocalSubscription
from nexo_actors.bus.nats_link import LinkDownError, NatsLink, safe_url
from nexo_actors.bus.subjects import RELOAD_SUBJECT, matches, validate_subject
from nexo_actors.config.schema import Broker
from nexo_actors.errors import IntakePausedError, MessageDecodeError, PayloadTooLargeError
from nexo_actors.messages import (
    LOCAL_HEADER,
    ORIGIN_HEADER,
    ActorState,
    CompleteInbound,
    DrainOutcome,
    EnqueuePending,
    Event,
    FetchPending,
    JournalInbound,
    RecordDeadLetter,
    Refresh,
    StoreCommand,
    StoreStats,
    StoreStatsRequest,
    decode_event,
    encode_event,
    is_empty,
    parse_inbound,
)
from nexo_actors.resilience import BreakerState, CircuitBreaker
from nexo_actors.store.db import PendingRow, decode_headers

log = logging.getLogger(__name__)

DeliverFn = Callable[[str, Event, bool], None]
PublishDone = Callable[[BaseException | None], None]
EventHandler = Callable[[Event], None]
RESUME_RATIO = 0.8
_VALID_TOPICS_KEPT = 4096  # a bound on the memo of validated topics (reply subjects are unique)
SLOWDOWN_FROM = 0.5


class _Outgoing:
    """One publish on its way to NATS, and its place in line.

    Outcomes (queue the event, close its inbox row, call on_done) are applied
    strictly in publish order: a publish waiting for its flush can fail after
    later ones already went to the disk queue (NATS dropped in between), and
    applying them in order keeps pending_events, and so the drain, in the
    order events were published.
    """

    __slots__ = ("data", "done", "error", "event", "inbound", "state", "topic")

    # WAITING/FLUSHING (written, flush pending) hold the line; the rest are outcomes.
    WAITING, FLUSHING, SENT, FAILED, QUEUE = range(5)

    def __init__(self, topic: str, event: Event, data: bytes, inbound: tuple[str, str] | None,
                 done: PublishDone | None) -> None:
        self.topic = topic
        self.event = event
        self.data = data
        self.inbound = inbound
        self.done = done
        self.state = _Outgoing.WAITING
        self.error: BaseException | None = None


class _Listener:
    """A `listen` subscription; its NATS side is made whenever the link is up."""

    __slots__ = ("cancelled", "on_msg", "sub", "subject")

    def __init__(self, subject: str, on_msg: Callable[[Msg], Any]) -> None:
        self.subject = subject
        self.on_msg = on_msg
        self.sub: Subscription | None = None
        self.cancelled = False


def queue_group(agent_id: str) -> str:
    """Replicas of one agent share its inbound work through this NATS queue group."""
    return f"nexo.{agent_id}"


class Bridge:
    """Thread-safe core of the BrokerBridge actor (see the module docstring)."""

    def __init__(self, settings: Broker, store: pykka.ActorRef[Any], *, instance_id: str,
                 deliver: DeliverFn, on_reload: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.instance_id = instance_id
        self.deliver = deliver
        self.on_reload = on_reload
        self.nats_mode = settings.type == "nats"
        self.local = LocalBus()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name="bridge-loop", daemon=True)
        self.breaker = CircuitBreaker(
            "nats", failure_threshold=settings.breaker.failure_threshold,
            success_threshold=settings.breaker.success_threshold,
            backoff=settings.breaker.backoff, max_backoff=settings.breaker.max_backoff,
            on_change=_export_breaker)
        self.link: NatsLink | None = None
        if self.nats_mode:
            self.link = NatsLink(settings, name=f"nexo-{instance_id}", loop=self.loop,
                                 on_connected=self._on_connected,
                                 on_disconnected=self._on_link_failure,
                                 on_connect_failed=self._on_link_failure)
        self.routes: dict[str, list[str]] = {}
        self._local_subs: dict[str, list[LocalSubscription]] = {}
        self._nats_subs: dict[str, list[Subscription]] = {}
        self._reload_sub: Subscription | None = None
        self._listeners: set[_Listener] = set()  # loop thread only
        self._lock = threading.Lock()
        self._inflight = 0  # publishes accepted by `publish` whose on_done has not run
        self._idle = threading.Condition(threading.Lock())
        self.depth = 0
        self._depth_lock = threading.Lock()
        self.intake_paused = False
        self.intake_stopped = False
        self._draining = False
        # Publish path (see `publish`): callers append to the outbox; the loop
        # moves items into line (in publish order) and to the sender task.
        self._outbox: deque[_Outgoing] = deque()
        self._valid_topics: set[str] = set()
        self._pump_scheduled = False
        self._line: deque[_Outgoing] = deque()  # loop thread only, oldest first
        self._to_send: deque[_Outgoing] = deque()  # loop thread only
        self._sender: asyncio.Task[None] | None = None
        self._last_refresh = 0.0
        self.drains = 0
        self.dropped = 0
        self.stats = StoreStats(pending=0, dead_letters=0, inbox_open=0, enqueued_total=0,
                                drained_total=0, dead_lettered_total=0,
                                max_pending=settings.limits.max_pending, path="")
        self._tick_task: asyncio.Task[None] | None = None
        _export_breaker("nats", BreakerState.CLOSED)
        metrics.NATS_CONNECTED.set(0)

    # --- lifecycle ----------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        if self.link is not None:
            self.link.start()
        self.local.subscribe(RELOAD_SUBJECT, self._on_reload_event, name="control.reload")
        asyncio.run_coroutine_threadsafe(self._start_tick(), self.loop).result(5)

    async def _start_tick(self) -> None:
        self._tick_task = self.loop.create_task(self._tick_forever())

    def stop_intake(self) -> None:
        """Shutdown step 1: no new inbound work from NATS or `nexo send`."""
        self.intake_stopped = True
        if self.link is not None:
            asyncio.run_coroutine_threadsafe(self._unsubscribe_all(), self.loop)

    def close(self, deadline: float) -> None:
        """Wait for in-flight publishes (confirmed or queued), then close the link and loop."""
        with self._idle:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("bridge closing with publishes in flight",
                                extra={"in_flight": self._inflight})
                    break
                self._idle.wait(remaining)
        if self._tick_task is not None:
            self.loop.call_soon_threadsafe(self._tick_task.cancel)
        if self.link is not None:
            self.link.stop(max(0.1, deadline - time.monotonic()))
        self.local.close(max(0.1, deadline - time.monotonic()))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(max(0.1, deadline - time.monotonic()))
        metrics.NATS_CONNECTED.set(0)

    # --- agents -------------------------------------------------------------

    def attach(self, agent_id: str, subjects: list[str]) -> None:
        """Subscribe `subjects` for an agent (local bus always; NATS with its queue group)."""
        with self._lock:
            self.routes[agent_id] = list(subjects)
        subs = [self.local.subscribe(s, self._local_handler(agent_id), name=f"{agent_id}:{s}")
                for s in subjects]
        self._local_subs[agent_id] = subs
        if self.link is not None:
            asyncio.run_coroutine_threadsafe(self._subscribe_agent(agent_id), self.loop).result(10)

    def detach(self, agent_id: str) -> None:
        with self._lock:
            self.routes.pop(agent_id, None)
        for sub in self._local_subs.pop(agent_id, []):
            sub.unsubscribe()
        if self.link is not None:
            asyncio.run_coroutine_threadsafe(self._unsubscribe_agent(agent_id), self.loop).result(10)

    def listen(self, subject: str, handler: EventHandler) -> Callable[[], None]:
        """A plain subscription (replies for `nexo send`, delegation answers); no journal.

        Subscribed on NATS now if the link is up, else as soon as it connects.
        A queued copy this runtime published is skipped on NATS: its local bus
        already delivered it. Returns the function that unsubscribes it.
        """
        local = self.local.subscribe(subject, lambda ev, _h: handler(ev), name=f"listen:{subject}")

        async def on_msg(msg: Msg) -> None:
            if (msg.headers or {}).get(ORIGIN_HEADER) == self.instance_id:
                return
            try:
                handler(parse_inbound(msg.subject, msg.data, self.settings.limits.max_payload,
                                      msg.reply))
            except MessageDecodeError as exc:
                log.warning("ignored an undecodable reply", extra={"subject": msg.subject,
                                                                  "error": str(exc)})

        listener = _Listener(subject, on_msg)
        if self.link is not None:
            asyncio.run_coroutine_threadsafe(self._add_listener(listener), self.loop).result(10)

        def cancel() -> None:
            local.unsubscribe(timeout=0.5)
            if self.link is not None and self.loop.is_running():  # else the link is gone already
                asyncio.run_coroutine_threadsafe(self._remove_listener(listener), self.loop)

        return cancel

    async def _add_listener(self, listener: _Listener) -> None:
        self._listeners.add(listener)
        await self._subscribe_listener(listener)

    async def _subscribe_listener(self, listener: _Listener) -> None:
        if (self.link is None or not self.link.connected or listener.cancelled
                or listener.sub is not None):
            return
        listener.sub = await self.link.subscribe(listener.subject, "", listener.on_msg)

    async def _remove_listener(self, listener: _Listener) -> None:
        listener.cancelled = True
        self._listeners.discard(listener)
        if listener.sub is not None:
            await _quiet_unsubscribe(listener.sub)
            listener.sub = None

    # --- publish path ---------------------------------------------------------

    def publish(self, topic: str, event: Event, *, inbound: tuple[str, str] | None = None,
                on_done: PublishDone | None = None) -> None:
        """Publish `event` on `topic`; `on_done(error)` runs once it is delivered or durable.

        `inbound=(event_id, agent_id)` marks this as the reply to that inbox row,
        which is closed in the same step (same transaction when queued).
        Raises PayloadTooLargeError / SubjectError at once.
        """
        if topic not in self._valid_topics:  # topics repeat: validate each one once
            validate_subject(topic)
            if len(self._valid_topics) >= _VALID_TOPICS_KEPT:
                self._valid_topics.clear()
            self._valid_topics.add(topic)
        data = encode_event(event)
        if len(data) > self.settings.limits.max_payload:
            raise PayloadTooLargeError(topic, len(data), self.settings.limits.max_payload)
        with self._idle:
            self._inflight += 1
        if self.link is None:
            self.local.publish(topic, event)
            metrics.EVENTS_PUBLISHED.labels(transport="local").inc()
            self._complete(inbound, None, self._finisher(on_done))
            return
        self._outbox.append(_Outgoing(topic, event, data, inbound, on_done))
        # One wake-up of the loop per burst, not per event (deque appends are
        # thread-safe; the loop clears the flag before it empties the outbox).
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.link.call(self._pump)

    def publish_inbound(self, topic: str, event: Event, on_done: PublishDone | None = None) -> None:
        """Operator intake (`nexo send`): refused, not dropped, while intake is paused."""
        if self.intake_stopped:
            raise IntakePausedError("the runtime is shutting down; not accepting new events")
        if self.intake_paused:
            raise IntakePausedError(
                f"disk queue full ({self.depth} of broker.limits.max_pending "
                f"{self.settings.limits.max_pending}); intake resumes below 80 % once NATS "
                "takes the queued events")
        delay = self.intake_delay()
        if delay > 0:
            time.sleep(delay)
        self.publish(topic, event, on_done=on_done)

    def _finisher(self, on_done: PublishDone | None) -> PublishDone:
        def done(error: BaseException | None) -> None:
            try:
                if on_done is not None:
                    on_done(error)
            finally:
                self._finish(1)
        return done

    def _finish(self, count: int) -> None:
        """`count` publishes are over (delivered, queued or refused): `close` waits for none left."""
        with self._idle:
            self._inflight -= count
            if self._inflight <= 0:
                self._idle.notify_all()

    def _pump(self) -> None:
        """Loop thread: put every submitted publish in line, in order, and wake the sender."""
        self._pump_scheduled = False
        outbox = self._outbox
        taken = [outbox.popleft() for _ in range(len(outbox))]  # what is there now, in order
        self._line.extend(taken)
        self._to_send.extend(taken)
        if self._to_send and (self._sender is None or self._sender.done()):
            self._sender = self.loop.create_task(self._send())

    async def _send(self) -> None:
        """Write what is in line to NATS, one batch at a time; each batch is confirmed apart."""
        link = self.link
        assert link is not None
        while self._to_send:
            batch = list(self._to_send)
            self._to_send.clear()
            sent: list[_Outgoing] = []
            try:
                if link.connected and self.breaker.allow():
                    write = link.writer()
                    for position, item in enumerate(batch):
                        try:
                            await write(item.topic, item.data)
                        except MaxPayloadError:
                            # The server's limit is below ours: this event can never go out.
                            item.error = PayloadTooLargeError(item.topic, len(item.data),
                                                              self.settings.limits.max_payload)
                            item.state = _Outgoing.FAILED
                            log.error(str(item.error))
                        except Exception as exc:  # the link failed: the rest go to the queue
                            self.breaker.record_failure(str(exc))
                            for rest in batch[position:]:
                                rest.state = _Outgoing.QUEUE
                            break
                        else:
                            item.state = _Outgoing.FLUSHING
                            sent.append(item)
            finally:
                for item in batch:
                    if item.state == _Outgoing.WAITING:  # NATS away, breaker open, or an error
                        item.state = _Outgoing.QUEUE
                if sent:
                    self.loop.create_task(self._confirm(sent))
                self._release()

    async def _confirm(self, sent: list[_Outgoing]) -> None:
        assert self.link is not None
        try:
            await self.link.confirm(len(sent))
        except Exception as exc:
            self.breaker.record_failure(str(exc))
            state = _Outgoing.QUEUE
        else:
            self.breaker.record_success()
            metrics.EVENTS_PUBLISHED.labels(transport="nats").inc(len(sent))
            state = _Outgoing.SENT
        for item in sent:
            item.state = state
        self._release()

    def _release(self) -> None:
        """Apply the outcomes of the oldest publishes that have one, in publish order."""
        line = self._line
        finished = 0
        while line and line[0].state > _Outgoing.FLUSHING:
            item = line.popleft()
            try:
                if item.state == _Outgoing.QUEUE:
                    self._fallback(item.topic, item.event, item.data, item.inbound,
                                   self._finisher(item.done))
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

    def _fallback(self, topic: str, event: Event, data: bytes,
                  inbound: tuple[str, str] | None, done: PublishDone) -> None:
        """NATS is away: queue durably, then deliver to this process's subscribers."""
        local_agents = self._agents_for(topic)
        if self.settings.fallback.mode == "drop":
            self.local.publish(topic, event)
            self.dropped += 1
            metrics.MESSAGES_DROPPED.labels(reason="nats_unavailable").inc()
            metrics.EVENTS_PUBLISHED.labels(transport="local").inc()
            self._complete(inbound, None, done)
            return
        headers = {ORIGIN_HEADER: self.instance_id, LOCAL_HEADER: ",".join(local_agents) or "-"}
        enqueue = EnqueuePending(id=event.id, topic=topic, payload=data, headers=headers)

        def queued(error: BaseException | None) -> None:
            if error is None:
                metrics.EVENTS_PUBLISHED.labels(transport="queued").inc()
                self.local.publish(topic, event, headers)
            done(error)

        self._complete(inbound, enqueue, queued)

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

    def _agents_for(self, topic: str) -> list[str]:
        with self._lock:
            return sorted(a for a, subjects in self.routes.items()
                          if any(matches(s, topic) for s in subjects))

    # --- inbound path -------------------------------------------------------

    def _local_handler(self, agent_id: str) -> Callable[[Event, Any], None]:
        def handle(event: Event, _headers: Any) -> None:
            self.accept(event, agent_id)
        return handle

    async def _on_nats_msg(self, msg: Msg, agent_id: str) -> None:
        headers = msg.headers or {}
        if agent_id in headers.get(LOCAL_HEADER, "").split(","):
            return  # this agent (here or a replica) already had it from a local bus
        delay = self.intake_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            event = parse_inbound(msg.subject, msg.data, self.settings.limits.max_payload, msg.reply)
        except MessageDecodeError as exc:
            self.dead_letter(msg.subject, msg.data, str(exc))
            return
        self.accept(event, agent_id)

    def accept(self, event: Event, agent_id: str) -> None:
        """Journal an inbound event for an agent, then hand it to the agent's host."""
        if is_empty(event):
            metrics.MESSAGES_DROPPED.labels(reason="empty").inc()
            return

        def journaled(fresh: Any, error: BaseException | None) -> None:
            if error is not None:
                log.error("inbound event not accepted: the journal write failed",
                          extra={"event_id": event.id, "agent": agent_id, "error": str(error)})
                return
            if not fresh:
                metrics.MESSAGES_DROPPED.labels(reason="duplicate").inc()
            for agent in fresh:
                self.deliver(agent, event, False)

        self.store.tell(JournalInbound(event_id=event.id, agents=[agent_id], topic=event.topic,
                                       payload=encode_event(event), done=journaled))

    def dead_letter(self, subject: str, data: bytes, reason: str) -> None:
        log.warning("poison message moved to dead letters", extra={"subject": subject,
                                                                   "reason": reason})
        self.store.tell(RecordDeadLetter(id=f"poison-{uuid.uuid4()}", topic=subject, payload=data,
                                         reason=reason, category="deserialization"))

    def _on_reload_event(self, _event: Event, _headers: Any) -> None:
        if self.on_reload is not None:
            self.on_reload()

    # --- backpressure -------------------------------------------------------

    def on_depth(self, depth: int) -> None:
        """The depth of pending_events changed (the store's thread, or the bridge's tick)."""
        with self._depth_lock:
            self._on_depth(depth)

    def _on_depth(self, depth: int) -> None:
        self.depth = depth
        cap = self.settings.limits.max_pending
        if not self.intake_paused and depth >= cap:
            self.intake_paused = True
            log.warning("disk queue full: pausing inbound intake (nothing is dropped)",
                        extra={"pending": depth, "max_pending": cap})
            if self.link is not None:
                asyncio.run_coroutine_threadsafe(self._unsubscribe_all(), self.loop)
        elif self.intake_paused and depth < cap * RESUME_RATIO:
            self.intake_paused = False
            log.info("disk queue below 80 %: resuming inbound intake", extra={"pending": depth})
            if self.link is not None and not self.intake_stopped:
                asyncio.run_coroutine_threadsafe(self._subscribe_all(), self.loop)

    def intake_delay(self) -> float:
        """Producers slow down in proportion above half of max_pending, never drop."""
        cap = self.settings.limits.max_pending
        over = self.depth - cap * SLOWDOWN_FROM
        if over <= 0:
            return 0.0
        return min(1.0, over / (cap * (1 - SLOWDOWN_FROM))) * self.settings.max_slowdown

    # --- NATS subscriptions (loop thread) -----------------------------------

    async def _subscribe_agent(self, agent_id: str) -> None:
        if self.link is None or not self.link.connected or self.intake_paused or self.intake_stopped:
            return  # done on (re)connect / resume
        if self._nats_subs.get(agent_id):
            return
        subs = []
        for subject in self.routes.get(agent_id, []):
            async def handler(msg: Msg, agent: str = agent_id) -> None:
                await self._on_nats_msg(msg, agent)
            subs.append(await self.link.subscribe(subject, queue_group(agent_id), handler))
        self._nats_subs[agent_id] = subs

    async def _unsubscribe_agent(self, agent_id: str) -> None:
        for sub in self._nats_subs.pop(agent_id, []):
            await _quiet_unsubscribe(sub)

    async def _subscribe_all(self) -> None:
        for agent_id in list(self.routes):
            await self._subscribe_agent(agent_id)

    async def _unsubscribe_all(self) -> None:
        for agent_id in list(self._nats_subs):
            await self._unsubscribe_agent(agent_id)

    async def _on_connected(self) -> None:
        metrics.NATS_CONNECTED.set(1)
        assert self.link is not None
        # Subscriptions restored by nats-py after a reconnect stay; anything
        # added while we were away (or dropped by a pause) is made now.
        await self._subscribe_all()
        for listener in list(self._listeners):
            await self._subscribe_listener(listener)
        if self._reload_sub is None:
            async def reload_handler(_msg: Msg) -> None:
                if self.on_reload is not None:
                    self.on_reload()
            # Kept apart from the agents' subscriptions: pausing intake must
            # not stop `control.reload`.
            self._reload_sub = await self.link.subscribe(RELOAD_SUBJECT, "", reload_handler)
        if self.settings.fallback.drain_on_reconnect:
            self._start_drain()

    async def _on_link_failure(self, error: str) -> None:
        metrics.NATS_CONNECTED.set(0)
        self.breaker.record_failure(error)

    # --- drain and tick (loop thread) ---------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge tick failed")

    async def _tick(self) -> None:
        _export_breaker("nats", self.breaker.state)
        now = time.monotonic()
        if now - self._last_refresh >= self.settings.refresh_interval:
            self._last_refresh = now
            # Through on_depth: a queue already full at boot must pause intake too.
            self.on_depth(await self._ask(Refresh()))
            self.stats = await self._ask(StoreStatsRequest())
        if self.link is None:
            if self.depth > 0:
                self._start_drain()
            return
        metrics.NATS_CONNECTED.set(1 if self.link.connected else 0)
        if not self.link.connected or not self.breaker.allow():
            return
        if self.depth > 0:
            self._start_drain()
        elif self.breaker.state is BreakerState.HALF_OPEN:
            try:
                await self.link.confirm()
            except Exception as exc:
                self.breaker.record_failure(str(exc))
            else:
                self.breaker.record_success()

    def _start_drain(self) -> None:
        # One drain at a time: overlapping drains would publish rows twice.
        if not self._draining:
            self._draining = True
            self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                if self.link is not None and (not self.link.connected or not self.breaker.allow()):
                    return
                rows: list[PendingRow] = await self._ask(FetchPending(limit=self.settings.drain_batch))
                if not rows:
                    return
                self.drains += 1
                outcome, link_failed = await self._drain_batch(rows)
                self.on_depth(await self._ask(outcome))
                if link_failed:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("drain failed; it is retried on the next tick")
        finally:
            self._draining = False

    async def _drain_batch(self, rows: list[PendingRow]) -> tuple[DrainOutcome, bool]:
        published: list[str] = []
        failed: list[tuple[str, str]] = []
        undecodable: list[tuple[str, str]] = []
        for row in rows:
            try:
                event = decode_event(row.payload)
                headers = decode_headers(row.headers)
            except (MessageDecodeError, ValueError) as exc:
                undecodable.append((row.id, f"undecodable queued event: {exc}"))
                continue
            if self.link is None:
                self.local.publish(row.topic, event)
                published.append(row.id)
                continue
            try:
                await self.link.publish(row.topic, row.payload, headers or None)
            except LinkDownError:
                break  # the rest wait for the next drain; their attempts are not spent
            except Exception as exc:  # this row's own fault (e.g. over the server's max_payload)
                failed.append((row.id, f"publish failed: {exc!r}"))
                continue
            published.append(row.id)
        link_failed = False
        if self.link is not None and published:
            try:
                await self.link.confirm(len(published))
                self.breaker.record_success()
            except Exception as exc:
                # NATS went away mid-batch: nothing is counted against the rows.
                self.breaker.record_failure(str(exc))
                published, link_failed = [], True
        if published:
            metrics.EVENTS_PUBLISHED.labels(transport="nats" if self.link else "local").inc(
                len(published))
        return DrainOutcome(delivered=published, failed=failed, undecodable=undecodable), link_failed

    async def _ask(self, command: StoreCommand) -> Any:
        future = self.store.ask(command, block=False)
        timeout = float(self.settings.store_timeout)
        return await self.loop.run_in_executor(None, lambda: future.get(timeout=timeout))

    # --- state --------------------------------------------------------------

    def details(self) -> dict[str, str | int | float | bool | None]:
        connected = self.link.connected if self.link is not None else None
        return {
            "type": self.settings.type,
            "url": safe_url(self.settings.url) if self.nats_mode else None,
            "connected": connected,
            "breaker": self.breaker.state.name.lower(),
            "breaker_backoff_s": self.breaker.current_backoff,
            "last_error": (self.link.last_error if self.link else "") or self.breaker.last_error,
            "intake_paused": self.intake_paused,
            "pending": self.depth,
            "max_pending": self.settings.limits.max_pending,
            "dead_letters": self.stats.dead_letters,
            "drains": self.drains,
            "fallback": self.settings.fallback.mode,
            "dropped": self.dropped,
            "in_flight": self._inflight,
        }


async def _quiet_unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection may be gone; the subscription is gone with it
        log.debug("unsubscribe failed", extra={"error": repr(exc)})


def _export_breaker(name: str, state: BreakerState) -> None:
    metrics.CIRCUIT_BREAKER_STATE.labels(breaker=name).set(int(state))


def mailbox_depth(actor: pykka.Actor) -> int:
    """Messages waiting for an actor (its inbox is a queue.Queue under ThreadingActor)."""
    inbox: Any = actor.actor_inbox
    return int(inbox.qsize())


class BrokerBridge(pykka.ThreadingActor):
    """The actor face of the Bridge: lifecycle, agent attachment, state records."""

    def __init__(self, settings: Broker, store: pykka.ActorRef[Any], *, instance_id: str,
                 deliver: DeliverFn, on_reload: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.core = Bridge(settings, store, instance_id=instance_id, deliver=deliver,
                           on_reload=on_reload)
        self.started = time.monotonic()

    def on_start(self) -> None:
        self.core.start()

    def attach(self, agent_id: str, subjects: list[str]) -> None:
        self.core.attach(agent_id, subjects)

    def detach(self, agent_id: str) -> None:
        self.core.detach(agent_id)

    def stop_intake(self) -> None:
        self.core.stop_intake()

    def close(self, deadline: float) -> None:
        self.core.close(deadline)

    def state(self) -> ActorState:
        details = self.core.details()
        connected = details.get("connected")
        degraded = connected is False or self.core.breaker.state is not BreakerState.CLOSED
        return ActorState(
            name="broker-bridge", kind="BrokerBridge", pid=os.getpid(),
            status="degraded" if degraded else "running",
            mailbox_depth=mailbox_depth(self),
            last_error=str(details.get("last_error") or ""),
            uptime_s=round(time.monotonic() - self.started, 3), details=details)


