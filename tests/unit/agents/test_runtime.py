"""One agent inside a worker: ordering, merging, replies, tools (SPEC §3, §5)."""

from __future__ import annotations

import asyncio
from typing import Any

from nexo_actors.agents.runtime import AgentRuntime, ToolCalls, reply_topic
from nexo_actors.config.schema import Agent, AgentOptions, ModelRef, Provider, ShortTerm
from nexo_actors.messages import Event, Frame, Reply, ToolCall, new_event


def make(frames: list[Frame], **options: Any) -> AgentRuntime:
    agent = Agent(id="kate", model=ModelRef(provider="echo", model="e"), channels=["cli"],
                  allowed_delegates=options.pop("allowed", []), config=AgentOptions(**options))
    return AgentRuntime(agent, Provider(prefix="echo: "), ShortTerm(), frames.append,
                        ToolCalls(frames.append))


def inbound(text: str, sender: str = "u") -> Event:
    return new_event("plugin.inbound.cli", {"text": text, "sender": sender}, "test")


async def settle(runtime: AgentRuntime) -> None:
    while runtime.in_flight:
        await asyncio.sleep(0.001)


def replies(frames: list[Frame]) -> list[Reply]:
    return [f for f in frames if isinstance(f, Reply)]


def test_every_event_gets_its_own_reply_in_order_without_debounce() -> None:
    async def run() -> list[Reply]:
        frames: list[Frame] = []
        runtime = make(frames)
        events = [inbound(f"m{i}") for i in range(20)]
        for event in events:
            runtime.deliver(event, False)
        await settle(runtime)
        assert [r.event_id for r in replies(frames)] == [e.id for e in events]
        return replies(frames)

    out = asyncio.run(run())
    assert [r.reply.text for r in out if r.reply] == [f"echo: m{i}" for i in range(20)]
    assert all(r.outcome == "replied" for r in out)


def test_with_debounce_a_burst_from_one_session_is_answered_once() -> None:
    async def run() -> list[Reply]:
        frames: list[Frame] = []
        runtime = make(frames, debounce_ms=50)
        for text in ("a", "b", "c"):
            runtime.deliver(inbound(text), False)
        await settle(runtime)
        return replies(frames)

    out = asyncio.run(run())
    assert [r.outcome for r in out] == ["merged", "merged", "replied"]
    assert out[-1].reply is not None and out[-1].reply.text == "echo: a\nb\nc"


def test_a_reply_carries_the_inbound_id_and_goes_to_the_outbound_subject() -> None:
    async def run() -> tuple[Event, Reply]:
        frames: list[Frame] = []
        runtime = make(frames)
        event = inbound("hi")
        runtime.deliver(event, False)
        await settle(runtime)
        return event, replies(frames)[0]

    event, reply = asyncio.run(run())
    assert reply.reply is not None
    assert reply.reply.correlation_id == event.id
    assert reply.topic == "plugin.outbound.cli"


def test_reply_topic_rules() -> None:
    assert reply_topic("kate", new_event("plugin.inbound.tg.bot", {}, "x")) == "plugin.outbound.tg.bot"
    assert reply_topic("kate", new_event("plugin.inbound.cli", {}, "x", reply_to="_INBOX.9")) == "_INBOX.9"
    assert reply_topic("kate", new_event("agent.route.kate", {}, "x")) == "agent.events.kate"


def test_an_event_already_completed_is_skipped() -> None:
    async def run() -> list[Reply]:
        frames: list[Frame] = []
        runtime = make(frames)
        event = inbound("once")
        runtime.deliver(event, False)
        await settle(runtime)
        runtime.deliver(event, True)
        await settle(runtime)
        return replies(frames)

    assert len(asyncio.run(run())) == 1


def test_delegate_outside_allowed_delegates_never_leaves_the_worker() -> None:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        runtime = make(frames, allowed=["ops"])
        runtime.deliver(inbound("/delegate boss hi"), False)
        await settle(runtime)
        return frames

    frames = asyncio.run(run())
    assert not any(isinstance(f, ToolCall) for f in frames)
    text = replies(frames)[0].reply.text  # type: ignore[union-attr]
    assert "refused: not in allowed_delegates of 'kate' (allowed: ops)" in (text or "")


def test_an_allowed_delegation_is_a_tool_call_answered_by_the_parent() -> None:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        runtime = make(frames, allowed=["ops"])
        runtime.deliver(inbound("/delegate ops status?"), False)
        while not any(isinstance(f, ToolCall) for f in frames):
            await asyncio.sleep(0.001)
        call = next(f for f in frames if isinstance(f, ToolCall))
        assert call.tool == "delegate" and call.args["agent"] == "ops" and call.args["text"] == "status?"
        runtime.tools.resolve(call.call_id, True, "all green", "")
        await settle(runtime)
        return frames

    frames = asyncio.run(run())
    assert replies(frames)[0].reply.text == "echo: all green"  # type: ignore[union-attr]


def test_sessions_run_concurrently_while_one_session_keeps_its_order() -> None:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        runtime = make(frames, allowed=["ops"])
        # Session "u1" waits on a delegation nobody has answered yet...
        runtime.deliver(inbound("/delegate ops slow", sender="u1"), False)
        runtime.deliver(inbound("after", sender="u1"), False)
        # ...while session "u2" is answered meanwhile.
        runtime.deliver(inbound("quick", sender="u2"), False)
        while len(replies(frames)) < 1:
            await asyncio.sleep(0.001)
        first = replies(frames)[0]
        assert first.reply is not None and first.reply.text == "echo: quick"
        call = next(f for f in frames if isinstance(f, ToolCall))
        runtime.tools.resolve(call.call_id, True, "done", "")
        await settle(runtime)
        return frames

    texts = [r.reply.text for r in replies(asyncio.run(run())) if r.reply]
    assert texts == ["echo: quick", "echo: done", "echo: after"]
