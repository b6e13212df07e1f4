"""The built-in offline, deterministic `echo` model (SPEC §5).

It answers `<prefix><text>`, which lets every path of the runtime be
exercised without keys or network. It also speaks the shape of a tool-using
model, so the turn loop and the tools behind it are exercised too: a text
`/delegate <agent> <message>` makes it call the `delegate` tool with those
arguments, and once the tool's result is back it answers `<prefix><result>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexo_actors.agents.sessions import Turn


@dataclass(frozen=True)
class ToolRequest:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """What the model decided: a final text, or tools to call first."""

    text: str | None = None
    tool_calls: tuple[ToolRequest, ...] = ()


@dataclass(frozen=True)
class ToolOutcome:
    name: str
    ok: bool
    content: str


class EchoModel:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def complete(self, history: list[Turn], text: str, tool_outcomes: list[ToolOutcome]) -> Completion:
        """One model step. `history` is the session so far (echo does not need it)."""
        if tool_outcomes:
            last = tool_outcomes[-1]
            answer = last.content if last.ok else f"[{last.name} failed] {last.content}"
            return Completion(text=self.prefix + answer)
        if text.startswith("/delegate "):
            _, _, rest = text.partition(" ")
            target, _, message = rest.strip().partition(" ")
            if target:
                return Completion(tool_calls=(ToolRequest("delegate", {"agent": target,
                                                                       "text": message.strip()}),))
        return Completion(text=self.prefix + text)
