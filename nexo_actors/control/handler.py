"""Answers to control requests, computed from the RuntimeView.

`ready`, `actors` and `status` read shared state and ask actors with short
timeouts: they never queue behind the Supervisor. `reload` does go through
the Supervisor (it changes the tree); `stop` raises SIGTERM on ourselves so
it takes exactly the path `docker stop` takes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import psutil
import pykka

from nexo_actors import __version__
from nexo_actors.bus.subjects import INBOUND_PREFIX, validate_subject
from nexo_actors.errors import ControlError
from nexo_actors.messages import (
    ActorsReply,
    ActorsRequest,
    ActorState,
    ControlReply,
    Event,
    HostStateRequest,
    OkReply,
    PingRequest,
    Pong_,
    ReadyReply,
    ReadyRequest,
    Reason,
    Reload,
    ReloadRequest,
    RequestUnion,
    SendReply,
    SendRequest,
    StatusReply,
    StatusRequest,
    StopRequest,
    StoreStats,
    StoreStatsRequest,
    new_event,
)
from nexo_actors.view import Phase, RuntimeView, ask, inbox_depth

# Every actor answers a state question within this, or is reported as not answering.
ASK_TIMEOUT = 1.0
RELOAD_TIMEOUT = 15.0


class ControlHandler:
    def __init__(self, view: RuntimeView) -> None:
        self.view = view
        self.process = psutil.Process()

    def handle(self, request: RequestUnion) -> ControlReply:
        match request:
            case PingRequest():
                return Pong_(pid=os.getpid(), version=__version__)
            case ReadyRequest():
                return self.ready()
            case ActorsRequest():
                return ActorsReply(actors=self.actors())
            case StatusRequest():
                return self.status()
            case SendRequest():
                return self.send(request)
            case ReloadRequest():
                return self.reload()
            case StopRequest():
                os.kill(os.getpid(), signal.SIGTERM)
                return OkReply(detail=f"stopping nexo (pid {os.getpid()})")
        raise ControlError(f"unsupported request {type(request).__name__}")

    # --- state --------------------------------------------------------------

    def host_records(self) -> list[ActorState]:
        records: list[ActorState] = []
        for i, host in enumerate(self.view.hosts):
            try:
                records += ask(host, HostStateRequest(), ASK_TIMEOUT)
            except (pykka.Timeout, pykka.ActorDeadError) as exc:
                records.append(ActorState(name=f"agent-worker-{i}", kind="AgentHost", pid=0,
                                          status="degraded", last_error=f"not answering: {exc!r}"))
        return records

    def store_stats(self) -> StoreStats | None:
        store = self.view.store
        if store is None:
            return None
        try:
            stats: StoreStats = ask(store, StoreStatsRequest(), ASK_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None
        return stats

    def actors(self) -> list[ActorState]:
        view = self.view
        records = [ActorState(
            name="supervisor", kind="Supervisor", pid=os.getpid(), status=view.phase.value,
            mailbox_depth=inbox_depth(view.supervisor), uptime_s=round(time.monotonic() - view.started, 3),
            rss_bytes=self.process.memory_info().rss, cpu_percent=self.process.cpu_percent(None),
            details={"instance": view.instance_id, "workers": len(view.hosts),
                     "sizing": view.sizing.summary() if view.sizing else None})]
        stats = self.store_stats()
        if view.store is not None:
            records.append(ActorState(
                name="queue-store", kind="QueueStore", pid=os.getpid(),
                status="running" if stats is not None else "degraded",
                mailbox_depth=inbox_depth(view.store), uptime_s=round(time.monotonic() - view.started, 3),
                last_error="" if stats is not None else "not answering",
                details={} if stats is None else {
                    "db": stats.path, "pending": stats.pending, "dead_letters": stats.dead_letters,
                    "inbox_open": stats.inbox_open, "enqueued_total": stats.enqueued_total,
                    "drained_total": stats.drained_total,
                    "dead_lettered_total": stats.dead_lettered_total}))
        if view.bridge is not None:
            try:
                records.append(view.bridge.proxy().state().get(timeout=ASK_TIMEOUT))
            except (pykka.Timeout, pykka.ActorDeadError) as exc:
                records.append(ActorState(name="broker-bridge", kind="BrokerBridge", pid=os.getpid(),
                                          status="degraded", last_error=f"not answering: {exc!r}"))
        records += self.host_records()
        if view.control is not None:
            records.append(ActorState(name="control-server", kind="ControlServer", pid=os.getpid(),
                                      status="running", mailbox_depth=inbox_depth(view.control),
                                      details={"socket": str(view.config.control_socket)}))
        if view.sidecar is not None:
            records += view.sidecar.states()
        return records

    def ready(self) -> ReadyReply:
        view = self.view
        reasons: list[Reason] = []
        degraded: list[Reason] = []
        if view.phase is Phase.STARTING:
            reasons.append(Reason(subsystem="runtime", detail="starting"))
        elif view.phase in (Phase.STOPPING, Phase.STOPPED):
            reasons.append(Reason(subsystem="runtime", detail="shutting down"))
        core = view.bridge_core
        broker_state = "local"
        if core is not None:
            details = core.details()
            if core.intake_paused:
                reasons.append(Reason(subsystem="broker", detail=(
                    f"disk queue full ({details['pending']} of max_pending "
                    f"{details['max_pending']}); intake paused until NATS takes the queue")))
            if core.nats_mode:
                up = bool(details["connected"]) and details["breaker"] == "closed"
                broker_state = "connected" if up else "disconnected"
                if not up:
                    detail = str(details["last_error"] or f"{details['url']}: not connected")
                    if details["breaker"] != "closed":
                        detail += f" (circuit breaker {details['breaker']})"
                    if core.settings.fallback.mode == "drop":
                        reasons.append(Reason(subsystem="broker", detail=detail))
                    else:
                        degraded.append(Reason(subsystem="broker",
                                               detail=detail + "; events wait in the disk queue"))
        records = self.host_records()
        agents = [r for r in records if r.kind == "Agent"]
        for record in agents:
            if record.status == "failed":
                reasons.append(Reason(subsystem=record.name,
                                      detail=f"failed: {record.last_error or 'worker keeps exiting'}"))
            elif record.status in ("restarting", "degraded"):
                degraded.append(Reason(subsystem=record.name, detail=record.status))
        running = sum(1 for r in agents if r.status == "running")
        if view.phase is Phase.RUNNING and not view.attached:
            reasons.append(Reason(subsystem="runtime", detail="agents not attached to their subjects"))
        return ReadyReply(ready=not reasons, agents_running=running, agents_total=len(agents),
                          broker=broker_state, reasons=reasons, degraded=degraded)

    def status(self) -> StatusReply:
        view = self.view
        stats = self.store_stats()
        core = view.bridge_core
        hosts = self.host_records()
        sizing = view.sizing
        return StatusReply(
            pid=os.getpid(), version=__version__, uptime_s=round(time.monotonic() - view.started, 3),
            config_dir=str(view.config_dir), data_dir=str(view.config.data_dir),
            broker=core.details() if core is not None else {},
            queue={} if stats is None else {"pending": stats.pending, "dead_letters": stats.dead_letters,
                                            "inbox_open": stats.inbox_open,
                                            "max_pending": stats.max_pending},
            sizing={} if sizing is None else {"processes": sizing.processes, "setting": sizing.setting,
                                              "usable_cpus": sizing.usable_cpus,
                                              "usable_memory_bytes": sizing.usable_memory_bytes,
                                              "max_rss_mb": sizing.max_rss_mb,
                                              "summary": sizing.summary()},
            workers=[r for r in hosts if r.kind == "AgentHost"],
            agents={r.name.removeprefix("agent:"): r.status for r in hosts if r.kind == "Agent"},
            ready=self.ready())

    # --- actions ------------------------------------------------------------

    def send(self, request: SendRequest) -> SendReply:
        core = self.view.bridge_core
        if core is None or self.view.phase is not Phase.RUNNING:
            raise ControlError(f"nexo is {self.view.phase.value}; try again when it is running")
        topic = validate_subject(f"{INBOUND_PREFIX}.{request.channel}")
        reply_subject = f"nexo.cli.reply.{self.view.instance_id}.{uuid.uuid4().hex}"
        event = new_event(topic, {"text": request.text, "sender": request.sender}, source="cli",
                          reply_to=reply_subject if request.wait > 0 else None)
        answered = threading.Event()
        answer: list[Event] = []

        def on_reply(ev: Event) -> None:
            if ev.correlation_id == event.id and not answered.is_set():
                answer.append(ev)
                answered.set()

        cancel = core.listen(reply_subject, on_reply) if request.wait > 0 else None
        try:
            accepted = threading.Event()
            failure: list[BaseException] = []

            def on_done(error: BaseException | None) -> None:
                if error is not None:
                    failure.append(error)
                accepted.set()

            core.publish_inbound(topic, event, on_done=on_done)
            if not accepted.wait(max(request.wait, 10.0)) or failure:
                raise ControlError(f"event not accepted: {failure[0] if failure else 'timed out'}")
            if request.wait <= 0:
                return SendReply(event_id=event.id, reply=None)
            if not answered.wait(request.wait):
                raise ControlError(
                    f"no reply within {request.wait:g}s to event {event.id} on {topic} (is an agent "
                    f"listening on channel '{request.channel}'? see `nexo status`)")
            return SendReply(event_id=event.id, reply=answer[0])
        finally:
            if cancel is not None:
                cancel()

    def reload(self) -> ControlReply:
        supervisor = self.view.supervisor
        if supervisor is None:
            raise ControlError("nexo is still starting; try again in a moment")
        reply: ControlReply = ask(supervisor, Reload(source="nexo reload"), RELOAD_TIMEOUT)
        return reply


