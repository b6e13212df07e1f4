"""Short-term sessions: history window, TTL sweep, oldest-idle eviction."""

from __future__ import annotations

from nexo_actors.agents.sessions import SessionStore, session_key
from nexo_actors.config.schema import ShortTerm
from nexo_actors.messages import new_event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_history_keeps_the_last_turns_only() -> None:
    store = SessionStore(ShortTerm(max_history_turns=2))
    for i in range(5):
        store.record("s", f"q{i}", f"a{i}")
    assert [t.text for t in store.history("s")] == ["q3", "a3", "q4", "a4"]


def test_sessions_idle_past_the_ttl_are_swept() -> None:
    clock = Clock()
    store = SessionStore(ShortTerm(session_ttl=60.0), clock=clock)
    store.record("old", "q", "a")
    clock.now += 50
    store.record("new", "q", "a")
    clock.now += 20
    assert store.sweep() == 1
    assert store.history("old") == [] and store.history("new")


def test_past_max_sessions_the_idlest_is_evicted() -> None:
    clock = Clock()
    store = SessionStore(ShortTerm(max_sessions=2), clock=clock)
    store.record("a", "q", "r")
    clock.now += 1
    store.record("b", "q", "r")
    clock.now += 1
    store.get("a")  # a is used again: b is now the idlest
    clock.now += 1
    store.record("c", "q", "r")
    assert len(store) == 2 and store.evicted == 1
    assert store.history("b") == [] and store.history("a") and store.history("c")


def test_session_key_prefers_session_id_then_chat_then_sender() -> None:
    assert session_key("kate", new_event("plugin.inbound.cli", {"text": "x"}, "s", session_id="S")) == "S"
    chat = new_event("plugin.inbound.telegram.bot", {"text": "x", "chat": "c9", "sender": "u"}, "s")
    assert session_key("kate", chat) == "kate:telegram:c9"
    by_sender = new_event("plugin.inbound.cli", {"text": "x", "sender": "u"}, "s")
    assert session_key("kate", by_sender) == "kate:cli:u"
