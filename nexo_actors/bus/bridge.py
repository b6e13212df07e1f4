"""BrokerBridge: the runtime's only door to the bus (SPEC §3, §4).

The actor owns a `Bridge`, which owns an asyncio loop thread (the NATS
client lives there, as do the drain and the periodic tick) and the local bus.
The publish path is `bus/publisher.py`, the drain and tick `bus/drain.py`;
this module is the inbound side and the wiring.

Inbound path: a message on an agent's subject is parsed (a bare JSON object
with `text` is wrapped into an envelope; anything else becomes a dead letter
`deserialization error: ...` and the subscription goes on), journaled in the
inbox, and only then handed to the agent's host. An event whose headers say
this agent (here or a replica) already has it is skipped.

Operator intake (`nexo send`) is journaled for this runtime's own agents
*before* it counts as accepted, then published for everyone else.

Backpressure never drops: above half of `max_pending` intake is slowed (up to
`max_slowdown` per message); at `max_pending` inbound intake pauses (NATS
subscriptions removed, `nexo send` refused) until the queue is below 80 %.
At shutdown the subscriptions are drained: what NATS had already sent us is
journaled before they go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pykka
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from nexo_actors import metrics
from nexo_actors.bus.drain import Drainer, export_breaker
from nexo_actors.bus.local import LocalBus, LocalSubscription
from nexo_actors.bus.nats_link import NatsLink, safe_url
from nexo_actors.bus.publisher import PublishDone, Publisher, already_had
from nexo_actors.bus.subjects import RELOAD_SUBJECT, matches
from nexo_actors.config.schema import Broker
from nexo_actors.errors import IntakePausedError, MessageDecodeError
from nexo_actors.messages import (
    ORIGIN_HEADER,
    ActorState,
    Event,
    JournalInbound,
    RecordDeadLetter,
    encode_event,
    is_empty,
    parse_inbound,
)
from nexo_actors.resilience import BreakerState, CircuitBreaker
from nexo_actors.view import inbox_depth

log = logging.getLogger(__name__)

DeliverFn = Callable[[str, Event, bool], None]
EventHandler = Callable[[Event], None]
RESUME_RATIO = 0.8
SLOWDOWN_FROM = 0.5


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
            on_change=export_breaker)
        self.link: NatsLink | None = None
        if self.nats_mode:
            self.link = NatsLink(settings, name=f"nexo-{instance_id}", loop=self.loop,
                                 on_connected=self._on_connected,
                                 on_disconnected=self._on_link_failure,
                                 on_connect_failed=self._on_link_failure)
        self.publisher = Publisher(settings, store=store, local=self.local, link=self.link,
                                   breaker=self.breaker, loop=self.loop, instance_id=instance_id,
                                   agents_for=self._agents_for, accept=self.accept)
        self.drainer = Drainer(settings, store=store, local=self.local, link=self.link,
                               breaker=self.breaker, loop=self.loop, depth=lambda: self.depth,
                               on_depth=self.on_depth)
        self.routes: dict[str, list[str]] = {}
        self._local_subs: dict[str, list[LocalSubscription]] = {}
        self._nats_subs: dict[str, list[Subscription]] = {}
        self._reload_sub: Subscription | None = None
        self._listeners: set[_Listener] = set()  # loop thread only
        self._lock = threading.Lock()
        self.depth = 0
        self._depth_lock = threading.Lock()
        self.intake_paused = False
        self.intake_stopped = False
        self._tick_task: asyncio.Task[None] | None = None
        export_breaker("nats", BreakerState.CLOSED)
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
        self._tick_task = self.loop.create_task(self.drainer.tick_forever())

    def stop_intake(self, timeout: float = 1.0) -> None:
        """Shutdown step 1: no new inbound work from NATS or `nexo send`.

        The NATS subscriptions are drained, not dropped: messages the server
        sent before our unsubscribe are journaled (within `timeout`).
        """
        self.intake_stopped = True
        if self.link is not None:
            future = asyncio.run_coroutine_threadsafe(self._unsubscribe_all(drain=timeout),
                                                      self.loop)
            try:
                future.result(timeout + 0.5)
            except Exception as exc:
                log.warning("draining the inbound subscriptions did not finish",
                            extra={"error": repr(exc)})

    def close(self, deadline: float) -> None:
        """Wait for in-flight publishes (confirmed or queued), then close the link and loop."""
        self.publisher.wait_idle(deadline)
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

    # --- publishing ----------------------------------------------------------

    def publish(self, topic: str, event: Event, *, inbound: tuple[str, str] | None = None,
                on_done: PublishDone | None = None) -> None:
        """See Publisher.publish."""
        self.publisher.publish(topic, event, inbound=inbound, on_done=on_done)

    def publish_inbound(self, topic: str, event: Event, on_done: PublishDone | None = None) -> None:
        """Operator intake (`nexo send`): refused, not dropped, while intake is paused.

        Journaled for this runtime's agents on `topic` before it counts as
        accepted (so a shutdown right after cannot lose it), then published
        for everyone else, marked so those agents do not take it twice.
        """
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
        agents = self._agents_for(topic)
        if not agents:
            self.publish(topic, event, on_done=on_done)
            return

        def journaled(fresh: Any, error: BaseException | None) -> None:
            if error is not None:
                if on_done is not None:
                    on_done(error)
                return
            for agent_id in fresh:
                self.deliver(agent_id, event, False)
            try:
                self.publisher.publish(topic, event, on_done=on_done, already=agents)
            except Exception as exc:  # already journaled here: accepted all the same
                log.error("inbound event journaled but not published for other runtimes",
                          extra={"event_id": event.id, "error": str(exc)})
                if on_done is not None:
                    on_done(None)

        self.store.tell(JournalInbound(event_id=event.id, agents=agents, topic=topic,
                                       payload=encode_event(event), done=journaled))

    def _agents_for(self, topic: str) -> list[str]:
        with self._lock:
            return sorted(a for a, subjects in self.routes.items()
                          if any(matches(s, topic) for s in subjects))

    # --- inbound path -------------------------------------------------------

    def _local_handler(self, agent_id: str) -> Callable[[Event, Any], None]:
        def handle(event: Event, headers: Any) -> None:
            if not already_had(headers, agent_id):
                self.accept(event, agent_id)
        return handle

    async def _on_nats_msg(self, msg: Msg, agent_id: str) -> None:
        if already_had(msg.headers, agent_id):
            return  # this agent (here or a replica) journaled it already
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
            metrics.MESSAGES_DROPPED.labels(reason=metrics.DROP_EMPTY).inc()
            return

        def journaled(fresh: Any, error: BaseException | None) -> None:
            if error is not None:
                log.error("inbound event not accepted: the journal write failed",
                          extra={"event_id": event.id, "agent": agent_id, "error": str(error)})
                return
            if not fresh:
                metrics.MESSAGES_DROPPED.labels(reason=metrics.DROP_DUPLICATE).inc()
            for agent in fresh:
                self.deliver(agent, event, False)

        self.store.tell(JournalInbound(event_id=event.id, agents=[agent_id], topic=event.topic,
                                       payload=encode_event(event), done=journaled))

    def dead_letter(self, subject: str, data: bytes, reason: str) -> None:
        log.warning("poison message moved to dead letters", extra={"subject": subject,
                                                                   "reason": reason})
        self.store.tell(RecordDeadLetter(id=f"poison-{uuid.uuid4()}", topic=subject, payload=data,
                                         reason=reason, category=metrics.DEAD_DESERIALIZATION))

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

    async def _unsubscribe_agent(self, agent_id: str, drain: float = 0.0) -> None:
        for sub in self._nats_subs.pop(agent_id, []):
            if drain > 0 and self.link is not None and self.link.connected:
                try:
                    await asyncio.wait_for(sub.drain(), drain)  # type: ignore[no-untyped-call]
                    continue
                except Exception as exc:  # NATS went away or it took too long: just drop it
                    log.debug("draining a subscription failed", extra={"error": repr(exc)})
            await _quiet_unsubscribe(sub)

    async def _subscribe_all(self) -> None:
        for agent_id in list(self.routes):
            await self._subscribe_agent(agent_id)

    async def _unsubscribe_all(self, drain: float = 0.0) -> None:
        await asyncio.gather(*(self._unsubscribe_agent(a, drain) for a in list(self._nats_subs)))

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
            self.drainer.start()

    async def _on_link_failure(self, error: str) -> None:
        metrics.NATS_CONNECTED.set(0)
        self.breaker.record_failure(error)

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
            "dead_letters": self.drainer.stats.dead_letters,
            "drains": self.drainer.drains,
            "fallback": self.settings.fallback.mode,
            "dropped": self.publisher.dropped,
            "in_flight": self.publisher.in_flight,
        }


async def _quiet_unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection may be gone; the subscription is gone with it
        log.debug("unsubscribe failed", extra={"error": repr(exc)})


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
            mailbox_depth=inbox_depth(self.actor_ref),
            last_error=str(details.get("last_error") or ""),
            uptime_s=round(time.monotonic() - self.started, 3), details=details)


