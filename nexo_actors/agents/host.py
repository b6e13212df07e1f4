"""AgentHost: the parent-side actor of one agent worker process (SPEC §5).

It owns the worker's pipe (nobody else writes to it), spawns and supervises
the process (states in `nexo_actors.supervision`), and keeps the work that
crosses it safe:

* every event handed to the worker stays in `in_flight` (and open in the
  inbox journal) until the worker's Reply has been published or queued;
* at most `queue_cap` events per agent are in the worker at once; the rest
  wait here, already journaled, in arrival order;
* when the worker dies, its in-flight events go back to the head of the
  backlog marked `redelivered` and are handed to the replacement. A Reply
  already received is never re-run: its event left `in_flight` then. An
  event whose worker died `max_redeliveries` times goes to dead letters.

Frames are read by a thread per worker generation and told to this actor;
nothing here blocks on the worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pykka
from prometheus_client import multiprocess

from nexo_actors import metrics
from nexo_actors.agents.delegation import Delegations, delegation_reply_subject
from nexo_actors.agents.worker import worker_main
from nexo_actors.bus.bridge import Bridge
from nexo_actors.config.schema import Agent, AgentProcesses, Provider, ShortTerm
from nexo_actors.errors import MessageDecodeError, NexoError
from nexo_actors.messages import (
    ActorState,
    CompleteInbound,
    Configure,
    CountRedelivery,
    Deliver,
    Event,
    HostDeliver,
    HostExited,
    HostFrames,
    HostGiveUp,
    HostKill,
    HostPublished,
    HostReconfigure,
    HostRouteReply,
    HostSpawn,
    HostStateRequest,
    HostStop,
    HostTick,
    HostToolTimeout,
    Ping,
    Pong,
    Publish,
    Ready,
    Reply,
    StateReport,
    Stop,
    ToolCall,
    decode_frame,
    encode_frame,
)
from nexo_actors.supervision import ChildRegistry, ChildState, RestartTracker, describe_exit
from nexo_actors.view import inbox_depth

log = logging.getLogger(__name__)
MIB = 1 << 20
# Frames handed to the actor per wake-up at most (they are already in memory).
READ_BATCH = 256


@dataclass
class AgentSlot:
    """Per-agent bookkeeping of a host."""

    agent: Agent
    backlog: deque[tuple[Event, bool]] = field(default_factory=deque)
    in_flight: dict[str, tuple[Event, bool]] = field(default_factory=dict)
    publishing: set[str] = field(default_factory=set)
    processed: int = 0
    sessions: int = 0
    # The labelled child is looked up once: labels() costs a dict lookup and a lock per call.
    processed_metric: Any = None

    def __post_init__(self) -> None:
        self.processed_metric = metrics.MESSAGES_PROCESSED.labels(agent=self.agent.id)


class AgentHost(pykka.ThreadingActor):
    def __init__(self, worker_id: int, agents: list[Agent], providers: dict[str, Provider],
                 short_term: ShortTerm, settings: AgentProcesses, *, bridge: Bridge,
                 store: pykka.ActorRef[Any], instance_id: str, children: ChildRegistry,
                 stopping: threading.Event | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.children = children
        # The runtime's shutdown flag: once set, a worker that exits is never
        # restarted, whether or not our HostStop has arrived yet (a second
        # SIGTERM can kill workers before it does).
        self.stopping = stopping or threading.Event()
        self.name = f"agent-worker-{worker_id}"
        self.slots = {a.id: AgentSlot(a) for a in agents}
        self.providers = providers
        self.short_term = short_term
        self.settings = settings
        self.bridge = bridge
        self.store = store
        self.instance_id = instance_id
        self.state = ChildState.STOPPED
        self.tracker = RestartTracker(settings.restart)
        self.restarts = 0
        self.last_error = ""
        self.generation = 0
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.pid = 0
        self.started_at = 0.0
        self.ready_deadline = 0.0
        self.last_pong = 0.0
        self.ping_seq = 0
        self.rss = 0
        self.cpu = 0.0
        self.recycling = False
        self.exited = threading.Event()
        self.ready = threading.Event()
        self.delegations = Delegations(bridge, instance_id, send=self._send, tell=self._tell)
        self.listeners: list[Any] = []
        self.ticker: threading.Thread | None = None
        self.ticking = threading.Event()

    # --- lifecycle ----------------------------------------------------------

    def on_start(self) -> None:
        for agent_id in self.slots:
            self.listeners.append(self.bridge.listen(
                delegation_reply_subject(agent_id, self.instance_id),
                lambda ev: self.actor_ref.tell(HostRouteReply(event=ev))))
        self.ticking.set()
        self.ticker = threading.Thread(target=self._tick_loop, name=f"{self.name}-tick", daemon=True)
        self.ticker.start()
        self._spawn()

    def on_stop(self) -> None:
        self.ticking.clear()
        for cancel in self.listeners:
            cancel()
        self.delegations.cancel_all()
        self._kill()

    def _tick_loop(self) -> None:
        while self.ticking.is_set():
            time.sleep(self.settings.heartbeat_interval)
            try:
                self.actor_ref.tell(HostTick())
            except pykka.ActorDeadError:
                return

    def _spawn(self) -> None:
        """Start a worker process and send it its configuration (state -> STARTING)."""
        self.generation += 1
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=worker_main, args=(child, self.worker_id),
                              name=f"nexo-{self.name}", daemon=False)
        process.start()
        # The parent must drop its copy of the child's end, or it never sees EOF.
        child.close()
        self.process, self.conn, self.pid = process, parent, process.pid or 0
        self.children.add(self.pid)
        self.state = ChildState.STARTING
        self.ready.clear()
        self.exited.clear()
        self.started_at = time.monotonic()
        self.ready_deadline = self.started_at + self.settings.ready_timeout
        self.last_pong = self.started_at
        self._send(Configure(worker_id=self.worker_id, instance_id=self.instance_id,
                             agents=[s.agent for s in self.slots.values()],
                             providers=self.providers, short_term=self.short_term))
        threading.Thread(target=self._read, args=(parent, process, self.generation),
                         name=f"{self.name}-reader-{self.generation}", daemon=True).start()
        log.info("agent worker started", extra={"worker": self.worker_id, "pid": self.pid,
                                                "agents": ",".join(self.slots)})

    def _read(self, conn: Connection, process: BaseProcess, generation: int) -> None:
        while True:
            frames: list[Any] = []
            try:
                frames.append(self._decode(conn.recv_bytes()))
                # Take whatever else is already waiting, up to a bound, in one tell.
                while len(frames) < READ_BATCH and conn.poll(0):
                    frames.append(self._decode(conn.recv_bytes()))
            except (EOFError, OSError):
                if frames:
                    self._tell(HostFrames(frames=[f for f in frames if f is not None],
                                          generation=generation))
                break
            self._tell(HostFrames(frames=[f for f in frames if f is not None], generation=generation))
        process.join(5.0)
        if process.exitcode is None:
            _signal(process.pid, signal.SIGKILL)
            process.join()
        self._tell(HostExited(generation=generation, exitcode=process.exitcode))

    def _decode(self, data: bytes) -> Any:
        try:
            return decode_frame(data)
        except MessageDecodeError as exc:
            log.error("undecodable frame from a worker", extra={"worker": self.worker_id,
                                                                "error": str(exc)})
            return None

    def _tell(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # shutting down: nothing is left to act on it

    def _send(self, frame: Any) -> None:
        if self.conn is None:
            return
        try:
            self.conn.send_bytes(encode_frame(frame))
        except (OSError, ValueError) as exc:
            # The worker is gone; its reader thread reports the exit.
            log.debug("write to a worker failed", extra={"worker": self.worker_id, "error": str(exc)})

    # --- messages -----------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case HostDeliver(agent_id=agent_id, event=event, redelivered=redelivered):
                self._enqueue(agent_id, event, redelivered)
            case HostFrames(frames=frames):
                for frame in frames:
                    self._on_frame(frame)
            case HostPublished(agent_id=agent_id, event_id=event_id, error=error):
                self._on_published(agent_id, event_id, error)
            case HostExited(generation=generation, exitcode=exitcode):
                if generation == self.generation:
                    self._on_exit(exitcode)
            case HostSpawn(generation=generation):
                if (generation == self.generation and not self.stopping.is_set()
                        and self.state in (ChildState.BACKOFF, ChildState.FAILED)):
                    self._spawn()
            case HostTick():
                self._on_tick()
            case HostRouteReply(event=event):
                self.delegations.answer(event)
            case HostToolTimeout(route_id=route_id):
                self.delegations.timed_out(route_id)
            case HostGiveUp(agent_id=agent_id, event_id=event_id):
                self._give_up(agent_id, event_id)
            case HostReconfigure(agents=agents, providers=providers, short_term=short_term):
                self._reconfigure(agents, providers, short_term)
            case HostStop(grace=grace):
                self._stop_worker(grace)
            case HostKill():
                self._kill()
            case HostStateRequest():
                return self.states()
            case _:
                return super().on_receive(message)
        return None

    def _enqueue(self, agent_id: str, event: Event, redelivered: bool) -> None:
        slot = self.slots.get(agent_id)
        if slot is None:
            log.warning("event for an agent this worker does not run", extra={"agent": agent_id})
            return
        if event.id in slot.in_flight or event.id in slot.publishing:
            return  # already being handled
        slot.backlog.append((event, redelivered))
        self._pump(slot)

    def _pump(self, slot: AgentSlot) -> None:
        if self.state is not ChildState.RUNNING or self.recycling:
            return
        cap = slot.agent.config.queue_cap
        while slot.backlog and len(slot.in_flight) < cap:
            event, redelivered = slot.backlog.popleft()
            slot.in_flight[event.id] = (event, redelivered)
            self._send(Deliver(agent_id=slot.agent.id, event=event, redelivered=redelivered))

    def _on_frame(self, frame: Any) -> None:
        match frame:
            case Reply():
                self._on_reply(frame)
            case Pong(rss_bytes=rss, cpu_percent=cpu):
                self.last_pong = time.monotonic()
                self.rss, self.cpu = rss, cpu
                if (rss > self.settings.max_rss_mb * MIB and self.state is ChildState.RUNNING
                        and not self.recycling):
                    log.warning("worker above max_rss_mb; recycling it after its in-flight work",
                                extra={"worker": self.worker_id, "rss_mb": rss // MIB,
                                       "max_rss_mb": self.settings.max_rss_mb})
                    self.recycling = True
                    self._maybe_finish_recycle()
            case Ready(pid=pid):
                self.state = ChildState.RUNNING
                self.pid = pid
                self.last_pong = time.monotonic()
                self.ready.set()
                for each in self.slots.values():
                    self._pump(each)
            case Publish(topic=topic, event=event):
                try:
                    self.bridge.publish(topic, event)
                except NexoError as exc:
                    log.error("agent event not published", extra={"topic": topic, "error": str(exc)})
            case ToolCall():
                self.delegations.call(frame)
            case StateReport(agents=reports):
                for report in reports:
                    if report.agent_id in self.slots:
                        self.slots[report.agent_id].sessions = report.sessions

    def _on_reply(self, reply: Reply) -> None:
        slot = self.slots.get(reply.agent_id)
        if slot is None or slot.in_flight.pop(reply.event_id, None) is None:
            return  # a late copy after a redelivery: the event was finished already
        slot.processed += 1
        slot.processed_metric.inc()
        metrics.AGENT_TURN_SECONDS.observe(reply.turn_seconds)
        slot.publishing.add(reply.event_id)
        agent_id, event_id = reply.agent_id, reply.event_id

        def done(error: BaseException | None) -> None:
            self._tell(HostPublished(agent_id=agent_id, event_id=event_id,
                                     error=None if error is None else str(error)))

        if reply.reply is None or reply.topic is None:
            self.store.tell(CompleteInbound(event_id=event_id, agent_id=agent_id,
                                            done=lambda _r, err: done(err)))
        else:
            try:
                self.bridge.publish(reply.topic, reply.reply, inbound=(event_id, agent_id),
                                    on_done=done)
            except NexoError as exc:
                log.error("reply not published; the event stays open and is redelivered at the "
                          "next start", extra={"agent": agent_id, "event_id": event_id,
                                              "error": str(exc)})
                slot.publishing.discard(event_id)
        self._pump(slot)
        self._maybe_finish_recycle()

    def _on_published(self, agent_id: str, event_id: str, error: str | None) -> None:
        published = self.slots.get(agent_id)
        if published is not None:
            published.publishing.discard(event_id)
        if error is not None:
            log.error("reply could not be made durable; the event stays open and is redelivered "
                      "at the next start", extra={"agent": agent_id, "event_id": event_id,
                                                 "error": error})

    # --- supervision --------------------------------------------------------

    def _on_tick(self) -> None:
        now = time.monotonic()
        if self.state is ChildState.STARTING and now > self.ready_deadline:
            self.last_error = f"no ready handshake within {self.settings.ready_timeout:g}s"
            log.error("worker did not become ready; killing it", extra={"worker": self.worker_id})
            self._kill_process()
        elif self.state is ChildState.RUNNING:
            if now - self.last_pong > self.settings.heartbeat_timeout:
                self.last_error = (f"hung: no heartbeat answer for "
                                   f"{now - self.last_pong:.1f}s")
                log.error("worker stopped answering heartbeats; killing and replacing it",
                          extra={"worker": self.worker_id, "pid": self.pid})
                self._kill_process()
            else:
                self.ping_seq += 1
                self._send(Ping(seq=self.ping_seq))

    def _on_exit(self, exitcode: int | None) -> None:
        how = describe_exit(exitcode)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        multiprocess_mark_dead(self.pid)
        self.children.discard(self.pid)
        if (self.state is ChildState.STOPPING and not self.recycling) or self.stopping.is_set():
            # Shutting down: what it held stays open in the journal for the next
            # boot, and is not counted as a worker dying on those events.
            self.state = ChildState.STOPPED
            log.info("agent worker stopped", extra={"worker": self.worker_id, "exit": how})
            self.exited.set()
            return
        if self.recycling:
            self.recycling = False
            self._requeue_in_flight(count_attempts=False)  # empty unless it died while draining
            log.info("agent worker recycled", extra={"worker": self.worker_id, "exit": how})
            self.exited.set()
            self._spawn()
            return
        requeued = self._requeue_in_flight()
        self.exited.set()
        self.restarts += 1
        metrics.ACTOR_RESTARTS.labels(actor=self.name).inc()
        if not self.last_error.startswith(("hung", "no ready")):
            self.last_error = how
        else:
            self.last_error = f"{self.last_error}; {how}"
        decision = self.tracker.record_exit()
        # A signal death reads differently from a crash: an operator's kill -9
        # or the OOM killer, not a bug in the agent.
        level = logging.WARNING if exitcode is not None and exitcode < 0 else logging.ERROR
        plan = (f"giving up for now (failed), retrying every {decision.delay:g}s" if decision.failed
                else f"restarting in {decision.delay:.2f}s")
        log.log(level, "agent worker %s; %s", how, plan,
                extra={"worker": self.worker_id, "pid": self.pid, "redelivering": requeued,
                       "restarts_in_window": decision.recent_exits})
        self.state = ChildState.FAILED if decision.failed else ChildState.BACKOFF
        timer = threading.Timer(decision.delay, self._tell, args=(HostSpawn(generation=self.generation),))
        timer.daemon = True
        timer.start()

    def _requeue_in_flight(self, count_attempts: bool = True) -> int:
        """A dead worker's unanswered events go first to its replacement.

        Each counts as an attempt (an event that kills every worker it meets
        must not do so forever) unless the worker left on purpose.
        """
        count = 0
        for slot in self.slots.values():
            events = list(slot.in_flight.values())
            slot.in_flight.clear()
            for event, _ in reversed(events):
                slot.backlog.appendleft((event, True))
            for event, _ in events:
                count += 1
                if not count_attempts:
                    continue
                self.store.tell(CountRedelivery(
                    event_id=event.id, agent_id=slot.agent.id,
                    max_attempts=self.settings.max_redeliveries,
                    done=self._redelivery_counted(slot.agent.id, event.id)))
        return count

    def _redelivery_counted(self, agent_id: str, event_id: str) -> Any:
        def done(attempts: Any, error: BaseException | None) -> None:
            if error is None and isinstance(attempts, int) and attempts >= self.settings.max_redeliveries:
                self._tell(HostGiveUp(agent_id=agent_id, event_id=event_id))
        return done

    def _give_up(self, agent_id: str, event_id: str) -> None:
        slot = self.slots.get(agent_id)
        if slot is None:
            return
        slot.backlog = deque((e, r) for e, r in slot.backlog if e.id != event_id)
        log.error("event moved to dead letters: its worker died on it %d times",
                  self.settings.max_redeliveries, extra={"agent": agent_id, "event_id": event_id})

    def _maybe_finish_recycle(self) -> None:
        if self.recycling and not any(s.in_flight for s in self.slots.values()):
            self.state = ChildState.STOPPING
            self._send(Stop(grace=0.0))

    def _reconfigure(self, agents: list[Agent], providers: dict[str, Provider],
                     short_term: ShortTerm) -> None:
        for agent in agents:
            if agent.id in self.slots:
                self.slots[agent.id].agent = agent
        self.providers = providers
        self.short_term = short_term
        self._send(Configure(worker_id=self.worker_id, instance_id=self.instance_id,
                             agents=[s.agent for s in self.slots.values()],
                             providers=providers, short_term=short_term))

    def _stop_worker(self, grace: float) -> None:
        """Ask the worker to finish what it has within `grace`; it stays journaled otherwise."""
        self.recycling = False
        if self.state in (ChildState.BACKOFF, ChildState.FAILED, ChildState.STOPPED):
            self.state = ChildState.STOPPED
            self.exited.set()
            return
        self.state = ChildState.STOPPING
        self._send(Stop(grace=grace))

    def _kill(self) -> None:
        """Shutdown's last resort (second signal, or the grace ran out)."""
        if self.state is not ChildState.STOPPED:
            self.state = ChildState.STOPPING
        self._kill_process()

    def _kill_process(self) -> None:
        if self.process is not None and self.process.exitcode is None and self.process.pid:
            _signal(self.process.pid, signal.SIGKILL)

    # --- state records ------------------------------------------------------

    def states(self) -> list[ActorState]:
        """This host's record plus one per agent it runs."""
        up = self.state is ChildState.RUNNING
        uptime = time.monotonic() - self.started_at if up else 0.0
        records = [ActorState(
            name=self.name, kind="AgentHost", pid=self.pid, status=self.state.status,
            mailbox_depth=inbox_depth(self.actor_ref), restarts=self.restarts, last_error=self.last_error,
            uptime_s=round(uptime, 3), rss_bytes=self.rss, cpu_percent=self.cpu,
            details={"agents": ",".join(self.slots), "generation": self.generation,
                     "backlog": sum(len(s.backlog) for s in self.slots.values()),
                     "in_flight": sum(len(s.in_flight) for s in self.slots.values()),
                     "recycling": self.recycling})]
        for slot in self.slots.values():
            records.append(ActorState(
                name=f"agent:{slot.agent.id}", kind="Agent", pid=self.pid,
                status=self.state.status, mailbox_depth=len(slot.backlog) + len(slot.in_flight),
                restarts=self.restarts, last_error=self.last_error if not up else "",
                uptime_s=round(uptime, 3),
                details={"worker": self.worker_id, "processed": slot.processed,
                         "in_flight": len(slot.in_flight), "backlog": len(slot.backlog),
                         "sessions": slot.sessions, "queue_cap": slot.agent.config.queue_cap}))
        return records


def multiprocess_mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the Prometheus multiprocess dir."""
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _signal(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
