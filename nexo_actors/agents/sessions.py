"""Short-term session memory of one agent (SPEC §5, §12).

A session is one conversation: the event's `session_id` when it has one,
else the channel plus the chat (or sender). Each keeps the last
`max_history_turns` turns; sessions idle longer than `session_ttl` are swept;
past `max_sessions` the one idle longest is evicted to make room.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nexo_actors.bus.subjects import channel_of
from nexo_actors.config.schema import ShortTerm
from nexo_actors.messages import Event


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    text: str


@dataclass
class Session:
    key: str
    history: deque[Turn]
    last_used: float = field(default_factory=time.monotonic)


def session_key(agent_id: str, event: Event) -> str:
    if event.session_id:
        return event.session_id
    payload = event.payload
    who = payload.get("chat") or payload.get("sender") or "anonymous"
    return f"{agent_id}:{channel_of(event.topic)}:{who}"


class SessionStore:
    """Sessions by key, ordered from least to most recently used."""

    def __init__(self, settings: ShortTerm, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> Session:
        """The session for `key`, created (evicting the idlest if full) when new."""
        now = self.clock()
        session = self._sessions.get(key)
        if session is None:
            while len(self._sessions) >= self.settings.max_sessions:
                self._sessions.popitem(last=False)
                self.evicted += 1
            session = Session(key, deque(maxlen=max(2, 2 * self.settings.max_history_turns)), now)
            self._sessions[key] = session
        else:
            self._sessions.move_to_end(key)
            session.last_used = now
        return session

    def record(self, key: str, user: str, assistant: str | None) -> None:
        session = self.get(key)
        session.history.append(Turn("user", user))
        if assistant is not None:
            session.history.append(Turn("assistant", assistant))

    def sweep(self) -> int:
        """Drop sessions idle longer than the TTL; returns how many."""
        cutoff = self.clock() - self.settings.session_ttl
        dropped = 0
        while self._sessions:
            key, oldest = next(iter(self._sessions.items()))
            if oldest.last_used > cutoff:
                break
            del self._sessions[key]
            dropped += 1
        self.expired += dropped
        return dropped

    def history(self, key: str) -> list[Turn]:
        session = self._sessions.get(key)
        return list(session.history) if session else []
