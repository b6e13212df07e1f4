"""The `delegate` tool, run in the parent next to the bus (SPEC §5).

A worker's agent calls it through a ToolCall frame. The tool publishes the
text on `agent.route.<target>` with a reply subject unique to this runtime
and agent (so with replicas the answer comes back here, not to a peer), and
answers the frame with the target's reply, matched by correlation id, or
with a clear error when the reply does not come within the call's timeout.
`allowed_delegates` is enforced in the worker before the call is made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nexo_actors.bus.bridge import Bridge
from nexo_actors.bus.subjects import ROUTE_PREFIX
from nexo_actors.errors import NexoError
from nexo_actors.messages import Event, HostToolTimeout, ToolCall, ToolResult, new_event


def delegation_reply_subject(agent_id: str, instance_id: str) -> str:
    """Where answers to this runtime's delegations from `agent_id` come back."""
    return f"{ROUTE_PREFIX}.{agent_id}.reply.{instance_id}"


@dataclass
class PendingDelegation:
    call_id: str
    target: str
    timer: threading.Timer


class Delegations:
    """Delegations in flight for one AgentHost; used from its actor thread only."""

    def __init__(self, bridge: Bridge, instance_id: str, *, send: Callable[[ToolResult], None],
                 tell: Callable[[Any], None]) -> None:
        self.bridge = bridge
        self.instance_id = instance_id
        self.send = send
        self.tell = tell
        self.pending: dict[str, PendingDelegation] = {}

    def call(self, call: ToolCall) -> None:
        """Start a delegation for a ToolCall frame (its answer is sent later)."""
        if call.tool != "delegate":
            self.send(ToolResult(call_id=call.call_id, ok=False, error=f"unknown tool '{call.tool}'"))
            return
        target = str(call.args.get("agent", ""))
        route = new_event(f"{ROUTE_PREFIX}.{target}",
                          {"text": str(call.args.get("text", "")), "sender": call.agent_id},
                          source=call.agent_id, session_id=str(call.args.get("session") or "") or None,
                          reply_to=delegation_reply_subject(call.agent_id, self.instance_id))
        timer = threading.Timer(call.timeout, self.tell, args=(HostToolTimeout(route_id=route.id),))
        timer.daemon = True
        self.pending[route.id] = PendingDelegation(call.call_id, target, timer)
        try:
            self.bridge.publish(route.topic, route)
        except NexoError as exc:
            del self.pending[route.id]
            self.send(ToolResult(call_id=call.call_id, ok=False,
                                 error=f"delegation to '{target}' failed: {exc}"))
            return
        timer.start()

    def answer(self, event: Event) -> None:
        """A reply on our reply subject: the answer to the delegation it correlates to."""
        pending = self.pending.pop(event.correlation_id or "", None)
        if pending is None:
            return  # late (timed out already) or not ours
        pending.timer.cancel()
        self.send(ToolResult(call_id=pending.call_id, ok=True, result=event.text or ""))

    def timed_out(self, route_id: str) -> None:
        pending = self.pending.pop(route_id, None)
        if pending is None:
            return
        self.send(ToolResult(call_id=pending.call_id, ok=False,
                             error=f"delegation to '{pending.target}' timed out after "
                                   f"{pending.timer.interval:g}s (is that agent running?)"))

    def cancel_all(self) -> None:
        for pending in self.pending.values():
            pending.timer.cancel()
        self.pending.clear()
