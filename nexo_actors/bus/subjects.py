"""NATS subject rules, shared by the local bus, config checks and the bridge.

A subject is dot-separated tokens; no token may be empty or hold whitespace.
In a subscription pattern `*` matches exactly one token and `>` (last token
only) matches one or more trailing tokens. As in NATS, a wildcard character
inside a longer token (`a*`) is just a character.
"""

from __future__ import annotations

import re

from nexo_actors.errors import SubjectError

# On every publish: one compiled search instead of a Python-level loop per character.
_WHITESPACE = re.compile(r"\s")

INBOUND_PREFIX = "plugin.inbound"
OUTBOUND_PREFIX = "plugin.outbound"
ROUTE_PREFIX = "agent.route"
EVENTS_PREFIX = "agent.events"
RELOAD_SUBJECT = "control.reload"


def _tokens(subject: str, what: str) -> list[str]:
    if not subject:
        raise SubjectError(f"{what} is empty")
    if _WHITESPACE.search(subject):
        raise SubjectError(f"{what} {subject!r} contains whitespace")
    tokens = subject.split(".")
    if any(t == "" for t in tokens):
        raise SubjectError(f"{what} {subject!r} has an empty token (leading, trailing or double dot)")
    return tokens


def validate_subject(subject: str) -> str:
    """A concrete subject one can publish to (no wildcard tokens)."""
    tokens = _tokens(subject, "subject")
    if any(t in ("*", ">") for t in tokens):
        raise SubjectError(f"subject {subject!r} contains a wildcard; wildcards are for subscribing")
    return subject


def validate_pattern(pattern: str) -> str:
    """A subscription pattern (`*` anywhere as a token, `>` only last)."""
    tokens = _tokens(pattern, "subscription pattern")
    if ">" in tokens[:-1]:
        raise SubjectError(f"subscription pattern {pattern!r}: '>' may only be the last token")
    return pattern


def matches(pattern: str, subject: str) -> bool:
    """Whether a message on `subject` reaches a subscription on `pattern`."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token != "*" and token != s[i]:
            return False
    return len(s) == len(p)


def inbound_subjects(channel: str) -> list[str]:
    """What an agent on `channel` listens to: the channel and every instance under it."""
    return [f"{INBOUND_PREFIX}.{channel}", f"{INBOUND_PREFIX}.{channel}.>"]


def outbound_subject_for(inbound_topic: str) -> str:
    """plugin.inbound.<channel>[.<instance>] -> plugin.outbound.<channel>[.<instance>]."""
    prefix = INBOUND_PREFIX + "."
    if inbound_topic.startswith(prefix):
        return OUTBOUND_PREFIX + "." + inbound_topic[len(prefix):]
    return OUTBOUND_PREFIX + "." + inbound_topic


def channel_of(topic: str) -> str:
    """The channel token of an inbound/outbound topic, or the topic itself."""
    parts = topic.split(".")
    return parts[2] if len(parts) > 2 and parts[0] == "plugin" else topic
