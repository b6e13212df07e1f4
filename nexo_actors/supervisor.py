"""Supervisor: builds the actor tree, keeps it alive, takes it down in order.

Boot (SPEC §6, steps 4-6): QueueStore -> BrokerBridge (connects in the
background; the disk queue covers the gap) -> one AgentHost per worker
process, sized by psutil and cgroup limits -> control socket -> (sidecar) ->
wait for the workers' ready handshakes -> subscribe every agent's subjects ->
hand out inbox rows left unfinished by the previous run -> RUNNING.

Shutdown within `shutdown.grace`: `/ready` says shutting down and intake
stops; workers finish or abandon their turns (abandoned ones stay open in
the inbox); their replies are published or queued; the sidecar, the store
(checkpointed) and the control socket close. The workers' restart policy
lives with their hosts (`nexo_actors.supervision` states).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil
import pykka

from nexo_actors import metrics
from nexo_actors.agents.host import AgentHost
from nexo_actors.agents.sizing import size_workers
from nexo_actors.bus.bridge import BrokerBridge
from nexo_actors.bus.subjects import ROUTE_PREFIX, inbound_subjects
from nexo_actors.config import load_config
from nexo_actors.config.schema import Agent
from nexo_actors.control.handler import ControlHandler
from nexo_actors.control.server import ControlServer
from nexo_actors.errors import ConfigErrors, MessageDecodeError
from nexo_actors.messages import (
    ActorState,
    Boot,
    CountRedelivery,
    ErrorReply,
    Event,
    HostDeliver,
    HostKill,
    HostReconfigure,
    HostStateRequest,
    HostStop,
    OkReply,
    OpenInbox,
    Reload,
    Sample,
    Shutdown,
    decode_event,
)
from nexo_actors.sidecar.process import SidecarProcess
from nexo_actors.store.db import InboxRow
from nexo_actors.store.queue import QueueStore
from nexo_actors.view import Phase, RuntimeView, ask, inbox_depth

log = logging.getLogger(__name__)


def agent_subjects(agent: Agent) -> list[str]:
    """Everything an agent listens to: its channels, its bindings, its route."""
    subjects: list[str] = []
    for channel in agent.channels:
        subjects += inbound_subjects(channel)
    for binding in agent.inbound_bindings:
        subjects += inbound_subjects(f"{binding.plugin}.{binding.instance}")
    subjects.append(f"{ROUTE_PREFIX}.{agent.id}")
    return subjects


def assign(agents: list[Agent], workers: int) -> list[list[Agent]]:
    """Spread agents over workers round-robin, in config order."""
    groups: list[list[Agent]] = [[] for _ in range(workers)]
    for i, agent in enumerate(agents):
        groups[i % workers].append(agent)
    return [g for g in groups if g]


class Supervisor(pykka.ThreadingActor):
    def __init__(self, view: RuntimeView, stop_requested: threading.Event) -> None:
        super().__init__()
        self.view = view
        self.config = view.config
        self.stop_requested = stop_requested
        self.process = psutil.Process()
        self.process.cpu_percent(None)
        self.sampler: threading.Thread | None = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case Boot():
                return self._boot()
            case Shutdown(deadline=deadline):
                return self._shutdown(deadline)
            case Reload(source=source):
                return self._reload(source)
            case Sample():
                return self._sample()
        return super().on_receive(message)

    # --- boot ---------------------------------------------------------------

    def _boot(self) -> None:
        config, view = self.config, self.view
        metrics.publish_build_info()
        view.store = QueueStore.start(
            config.queue_db, config.broker.persistence, max_pending=config.broker.limits.max_pending,
            max_attempts=config.broker.max_attempts, on_depth=self._on_depth)
        view.bridge = BrokerBridge.start(config.broker, view.store, instance_id=view.instance_id,
                                         deliver=self._deliver, on_reload=self._reload_event)
        view.bridge_core = view.bridge.proxy().core.get()
        sizing = size_workers(config.runtime.agents.processes, len(config.agents),
                              config.runtime.agents.max_rss_mb)
        view.sizing = sizing
        log.info("worker processes: %s", sizing.summary(), extra={"processes": sizing.processes})
        for worker_id, group in enumerate(assign(config.agents, max(1, sizing.processes))):
            host = AgentHost.start(worker_id, group, config.llm.providers, config.memory.short_term,
                                   config.runtime.agents, bridge=view.bridge_core, store=view.store,
                                   instance_id=view.instance_id, children=view.children,
                                   stopping=self.stop_requested)
            view.hosts.append(host)
            for agent in group:
                view.host_of[agent.id] = host
        view.control = ControlServer.start(config.control_socket, ControlHandler(view).handle)
        self._init_series()
        if config.runtime.sidecar.enabled:
            # /ready must be reachable (and say `starting`) while the workers boot.
            view.sidecar = SidecarProcess(config, view.children, stopping=self.stop_requested)
            view.sidecar.start()
        self._wait_workers_ready()
        if self.stop_requested.is_set():
            return
        assert view.bridge is not None
        for agent in config.agents:
            view.bridge.proxy().attach(agent.id, agent_subjects(agent)).get()
        view.attached = True
        self._redeliver_open_inbox()
        view.phase = Phase.RUNNING
        self._sample()
        self._start_sampler()

    def _init_series(self) -> None:
        """Create every bounded label set at 0, so a scrape shows each series from the start.

        A labelled series absent until its first increment makes `rate()` and
        `increase()` alerts blind to that first event.
        """
        for agent in self.config.agents:
            metrics.MESSAGES_PROCESSED.labels(agent=agent.id)
        for host in self.view.hosts:
            metrics.ACTOR_RESTARTS.labels(actor=host.proxy().name.get())
        nats = self.config.broker.type == "nats"
        for transport in metrics.TRANSPORTS if nats else (metrics.TRANSPORT_LOCAL,):
            metrics.EVENTS_PUBLISHED.labels(transport=transport)
        for reason in metrics.DROP_REASONS:
            if nats or reason != metrics.DROP_NATS_UNAVAILABLE:
                metrics.MESSAGES_DROPPED.labels(reason=reason)
        for category in metrics.DEAD_LETTER_REASONS:
            metrics.DEAD_LETTERS_TOTAL.labels(reason=category)

    def _wait_workers_ready(self) -> None:
        """Wait for every worker's handshake; one that dies while starting is not waited for."""
        deadline = time.monotonic() + self.config.runtime.agents.ready_timeout
        events = [(h.proxy().ready.get(), h.proxy().exited.get()) for h in self.view.hosts]
        for ready, exited in events:
            while not (ready.is_set() or exited.is_set() or self.stop_requested.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.error("some agent workers are not ready; their events wait for them",
                              extra={"ready_timeout_s": self.config.runtime.agents.ready_timeout})
                    return
                ready.wait(min(0.05, remaining))

    def _redeliver_open_inbox(self) -> None:
        """Rows the previous run accepted but never finished go out again, marked redelivered."""
        assert self.view.store is not None
        rows: list[InboxRow] = ask(self.view.store, OpenInbox(), self.config.broker.store_timeout)
        limit = self.config.runtime.agents.max_redeliveries
        for row in rows:
            try:
                event = decode_event(row.payload)
            except MessageDecodeError as exc:
                log.error("unreadable inbox row skipped", extra={"event_id": row.id, "error": str(exc)})
                continue
            self.view.store.tell(CountRedelivery(event_id=row.id, agent_id=row.agent_id,
                                                 max_attempts=limit,
                                                 done=self._redeliver_after_count(row.agent_id, event)))
        if rows:
            log.info("redelivering events left unfinished by the previous run",
                     extra={"events": len(rows)})

    def _redeliver_after_count(self, agent_id: str, event: Event) -> Any:
        limit = self.config.runtime.agents.max_redeliveries

        def done(attempts: Any, error: BaseException | None) -> None:
            if error is None and isinstance(attempts, int) and attempts < limit:
                self._deliver(agent_id, event, True)
        return done

    # --- callbacks from other actors' threads --------------------------------

    def _deliver(self, agent_id: str, event: Event, redelivered: bool) -> None:
        host = self.view.host_of.get(agent_id)
        if host is not None:
            host.tell(HostDeliver(agent_id=agent_id, event=event, redelivered=redelivered))

    def _on_depth(self, depth: int) -> None:
        core = self.view.bridge_core
        if core is not None:
            core.on_depth(depth)

    def _reload_event(self) -> None:
        self.actor_ref.tell(Reload(source="event on control.reload"))

    # --- reload -------------------------------------------------------------

    def _reload(self, source: str) -> OkReply | ErrorReply:
        if not self.config.runtime.reload.enabled:
            return ErrorReply(message="reload is disabled (runtime.yaml: reload.enabled: false)")
        try:
            fresh = load_config(self.view.config_dir)
        except ConfigErrors as exc:
            metrics.CONFIG_RELOAD_REJECTED.inc()
            log.error("reload rejected; the running config stays: %s", exc, extra={"source": source})
            return ErrorReply(message=f"reload rejected, the running config stays:\n{exc}")
        current = {a.id for a in self.config.agents}
        wanted = {a.id for a in fresh.agents}
        if current != wanted:
            log.warning("agents added or removed take effect at the next restart",
                        extra={"added": ",".join(sorted(wanted - current)),
                               "removed": ",".join(sorted(current - wanted))})
        by_id = {a.id: a for a in fresh.agents}
        for host in self.view.hosts:
            host.tell(HostReconfigure(agents=[a for a in by_id.values() if a.id in current],
                                      providers=fresh.llm.providers,
                                      short_term=fresh.memory.short_term))
        log.info("configuration reloaded; it applies from the next message", extra={"source": source})
        return OkReply(detail="reloaded: agent and LLM settings apply from the next message")

    # --- shutdown -----------------------------------------------------------

    def _shutdown(self, deadline: float) -> None:
        view = self.view
        view.phase = Phase.STOPPING
        self.stop_requested.set()
        if view.bridge_core is not None:
            view.bridge_core.stop_intake()
        # Workers get most of the grace to finish their turns; the rest is
        # for publishing their replies and closing the store.
        budget = max(0.0, deadline - time.monotonic())
        workers_deadline = time.monotonic() + budget * 0.6
        for host in view.hosts:
            host.tell(HostStop(grace=max(0.0, workers_deadline - time.monotonic() - 0.2)))
        for host in view.hosts:
            exited = host.proxy().exited.get()
            exited.wait(max(0.0, workers_deadline - time.monotonic()))
        for host in view.hosts:
            host.tell(HostKill())
        if view.bridge is not None:
            view.bridge.proxy().close(deadline - budget * 0.15).get()
        if view.sidecar is not None:
            # Before the control socket closes, so /ready says `shutting down`
            # to the end rather than `runtime not running`.
            view.sidecar.stop(deadline)
        if view.control is not None:
            view.control.stop()
        for host in view.hosts:
            host.stop()
        if view.bridge is not None:
            view.bridge.stop()
        if view.store is not None:
            view.store.stop()
        view.phase = Phase.STOPPED

    # --- sampling -----------------------------------------------------------

    def _start_sampler(self) -> None:
        interval = self.config.runtime.agents.sample_interval

        def loop() -> None:
            while not self.stop_requested.wait(interval):
                try:
                    self.actor_ref.tell(Sample())
                except pykka.ActorDeadError:
                    return

        self.sampler = threading.Thread(target=loop, name="sampler", daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        metrics.MAIN_RSS.set(self.process.memory_info().rss)
        metrics.MAIN_CPU.set(self.process.cpu_percent(None))
        metrics.ACTOR_MAILBOX_DEPTH.labels(actor="supervisor").set(inbox_depth(self.actor_ref))
        metrics.ACTOR_UP.labels(actor="supervisor").set(1)
        for name, ref in (("queue-store", self.view.store), ("broker-bridge", self.view.bridge),
                          ("control-server", self.view.control)):
            alive = ref is not None and ref.is_alive()
            metrics.ACTOR_UP.labels(actor=name).set(1 if alive else 0)
            metrics.ACTOR_MAILBOX_DEPTH.labels(actor=name).set(inbox_depth(ref))
        for host in self.view.hosts:
            try:
                records: list[ActorState] = ask(host, HostStateRequest(), 1.0)
            except pykka.Timeout:
                continue
            for record in records:
                if record.kind == "AgentHost":
                    metrics.ACTOR_UP.labels(actor=record.name).set(1 if record.status == "running" else 0)
                    metrics.ACTOR_MAILBOX_DEPTH.labels(actor=record.name).set(record.mailbox_depth)
