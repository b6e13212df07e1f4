"""One agent inside a worker process (SPEC §5).

Events are handled per session in order, and different sessions run
concurrently (one asyncio task per session with work queued). The parent
never hands an agent more than `queue_cap` unanswered events, so the
mailbox here is bounded by construction. A turn asks the model, runs the
tools it calls (through the parent when the tool lives there), and ends in
exactly one Reply frame per event: with a reply, or without one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from nexo_actors.agents.providers.echo import Completion, EchoModel, ToolOutcome, ToolRequest
from nexo_actors.agents.sessions import SessionStore, session_key
from nexo_actors.bus.subjects import EVENTS_PREFIX, INBOUND_PREFIX, outbound_subject_for
from nexo_actors.config.schema import Agent, Provider, ShortTerm
from nexo_actors.messages import AgentReport, Event, Frame, Publish, Reply, ToolCall, new_event

log = logging.getLogger(__name__)

MAX_TOOL_STEPS = 8
# Ids of events already answered, remembered to skip a second delivery.
COMPLETED_MEMORY = 10000
APOLOGY = "Sorry, something went wrong on my side. Please try again."


def reply_topic(agent_id: str, event: Event) -> str:
    """Where the answer to `event` goes (SPEC §3)."""
    if event.reply_to:
        return event.reply_to
    if event.topic.startswith(INBOUND_PREFIX + "."):
        return outbound_subject_for(event.topic)
    return f"{EVENTS_PREFIX}.{agent_id}"


class ToolCalls:
    """Tool calls that travel to the parent as frames and come back as results."""

    def __init__(self, send: Callable[[Frame], None]) -> None:
        self.send = send
        self.pending: dict[str, asyncio.Future[ToolOutcome]] = {}

    async def call(self, agent_id: str, tool: str, args: dict[str, Any], timeout: float) -> ToolOutcome:
        call_id = str(uuid.uuid4())
        fut: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = fut
        self.send(ToolCall(call_id=call_id, agent_id=agent_id, tool=tool, args=args, timeout=timeout))
        try:
            # The parent enforces `timeout`; the margin only guards against a lost result.
            return await asyncio.wait_for(fut, timeout + 5.0)
        except TimeoutError:
            return ToolOutcome(tool, False, f"{tool} got no answer within {timeout:g}s")
        finally:
            self.pending.pop(call_id, None)

    def resolve(self, call_id: str, ok: bool, result: str, error: str) -> None:
        fut = self.pending.get(call_id)
        if fut is not None and not fut.done():
            fut.set_result(ToolOutcome("tool", ok, result if ok else error))


class AgentRuntime:
    def __init__(self, agent: Agent, provider: Provider, short_term: ShortTerm,
                 send: Callable[[Frame], None], tools: ToolCalls) -> None:
        self.agent = agent
        self.model = EchoModel(provider.prefix)
        self.sessions = SessionStore(short_term)
        self.short_term = short_term
        self.send = send
        self.tools = tools
        self.queues: dict[str, deque[tuple[Event, bool]]] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.in_progress: set[str] = set()
        self.completed: OrderedDict[str, None] = OrderedDict()
        self.background: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.background.append(loop.create_task(self._sweep_forever()))
        if self.agent.heartbeat.enabled:
            self.background.append(loop.create_task(self._heartbeat_forever()))

    def reconfigure(self, agent: Agent, provider: Provider) -> None:
        """New config applies from the next turn; sessions are kept."""
        self.agent = agent
        self.model = EchoModel(provider.prefix)

    def stop(self) -> None:
        for task in self.background:
            task.cancel()

    @property
    def in_flight(self) -> int:
        return len(self.in_progress) + sum(len(q) for q in self.queues.values())

    def report(self) -> AgentReport:
        return AgentReport(agent_id=self.agent.id, in_flight=self.in_flight,
                           sessions=len(self.sessions), completed=len(self.completed))

    # --- intake -------------------------------------------------------------

    def deliver(self, event: Event, redelivered: bool) -> None:
        if event.id in self.completed or event.id in self.in_progress:
            log.debug("skipping an event already handled", extra={"agent": self.agent.id,
                                                                   "event_id": event.id})
            return
        self.in_progress.add(event.id)
        key = session_key(self.agent.id, event)
        self.queues.setdefault(key, deque()).append((event, redelivered))
        if key not in self.running:
            self.running[key] = asyncio.get_running_loop().create_task(self._drain_session(key))

    async def _drain_session(self, key: str) -> None:
        try:
            queue = self.queues[key]
            while queue:
                if self.agent.config.debounce_ms > 0:
                    # Let a burst from one conversation arrive, then answer it once.
                    await asyncio.sleep(self.agent.config.debounce_ms / 1000)
                    batch = list(queue)
                    queue.clear()
                else:
                    batch = [queue.popleft()]
                await self._turn(key, batch)
        finally:
            self.running.pop(key, None)
            if not self.queues.get(key):
                self.queues.pop(key, None)

    # --- the turn loop ------------------------------------------------------

    async def _turn(self, key: str, batch: list[tuple[Event, bool]]) -> None:
        started = time.perf_counter()
        event = batch[-1][0]
        text = "\n".join(e.text or "" for e, _ in batch)
        try:
            answer = await self._think(key, text)
        except Exception:
            log.exception("turn failed", extra={"agent": self.agent.id, "event_id": event.id})
            answer = APOLOGY
        self.sessions.record(key, text, answer)
        elapsed = time.perf_counter() - started
        for earlier, _ in batch[:-1]:
            self._finish(earlier.id, Reply(agent_id=self.agent.id, event_id=earlier.id, reply=None,
                                           topic=None, outcome="merged", turn_seconds=elapsed))
        reply = new_event(
            reply_topic(self.agent.id, event),
            {"text": answer, "agent": self.agent.id, "chat": event.payload.get("chat")},
            source=self.agent.id, session_id=event.session_id, correlation_id=event.id)
        self._finish(event.id, Reply(agent_id=self.agent.id, event_id=event.id, reply=reply,
                                     topic=reply.topic, outcome="replied", turn_seconds=elapsed))

    async def _think(self, key: str, text: str) -> str:
        history = self.sessions.history(key)
        outcomes: list[ToolOutcome] = []
        for _ in range(MAX_TOOL_STEPS):
            completion: Completion = self.model.complete(history, text, outcomes)
            if not completion.tool_calls:
                return completion.text or ""
            for request in completion.tool_calls:
                outcomes.append(await self._run_tool(request, key))
        return "Sorry, I could not finish that: too many tool steps."

    async def _run_tool(self, request: ToolRequest, session: str) -> ToolOutcome:
        if request.name == "delegate":
            target = str(request.args.get("agent", ""))
            if target not in self.agent.allowed_delegates:
                allowed = ", ".join(self.agent.allowed_delegates) or "none"
                return ToolOutcome("delegate", False, f"delegation to '{target}' refused: not in "
                                   f"allowed_delegates of '{self.agent.id}' (allowed: {allowed})")
            args = {**request.args, "session": session}
            outcome = await self.tools.call(self.agent.id, "delegate", args,
                                            self.agent.config.delegate_timeout)
            return ToolOutcome("delegate", outcome.ok, outcome.content)
        return ToolOutcome(request.name, False, f"unknown tool '{request.name}'")

    def _finish(self, event_id: str, reply: Reply) -> None:
        self.in_progress.discard(event_id)
        self.completed[event_id] = None
        while len(self.completed) > COMPLETED_MEMORY:
            self.completed.popitem(last=False)
        self.send(reply)

    # --- background ---------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.short_term.sweep_interval)
            self.sessions.sweep()

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.agent.heartbeat.interval)
            topic = f"{EVENTS_PREFIX}.{self.agent.id}.heartbeat"
            event = new_event(topic, {"agent": self.agent.id, "in_flight": self.in_flight,
                                      "sessions": len(self.sessions)}, source=self.agent.id)
            self.send(Publish(agent_id=self.agent.id, topic=topic, event=event))
