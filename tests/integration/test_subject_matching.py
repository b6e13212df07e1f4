"""Subject matching of the local bus and `subjects.matches` agree with a real nats-server.

Hypothesis draws a subject and a few patterns; each pattern is subscribed on
the server (one long-lived nats-py connection, one event loop for the whole
run) and on a LocalBus; the subject is published to both. NATS delivers in
order per connection, so once a sentinel published after the subject has
arrived, every message the server was going to deliver is already queued in
its subscription.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping

import nats
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_actors.bus import subjects
from nexo_actors.bus.local import LocalBus
from nexo_actors.messages import Event, new_event
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until

ALPHABET = ["a", "b", "c", "ab"]
subject_tokens = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from([*ALPHABET, "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        tokens[-1] = ">"
    return ".".join(tokens)


def test_local_bus_and_matches_agree_with_nats_server(nats_server: NatsServer) -> None:
    loop = asyncio.new_event_loop()
    bus = LocalBus()
    lock = threading.Lock()
    local_hits: set[int] = set()
    nc = loop.run_until_complete(nats.connect(nats_server.url, max_reconnect_attempts=0))
    try:

        async def nats_hits(subject: str, pats: list[str]) -> set[int]:
            subs = [await nc.subscribe(p) for p in pats]
            sentinel_subject = f"sentinel.{uuid.uuid4().hex}"
            sentinel = await nc.subscribe(sentinel_subject)
            try:
                await nc.publish(subject, b"probe")
                await nc.publish(sentinel_subject, b"done")
                await sentinel.next_msg(timeout=5)
                hits: set[int] = set()
                for i, s in enumerate(subs):
                    # Wildcard patterns may also have caught the sentinel.
                    queued = [await s.next_msg(timeout=1) for _ in range(s.pending_msgs)]
                    if any(m.subject == subject for m in queued):
                        hits.add(i)
                return hits
            finally:
                for s in [*subs, sentinel]:
                    await s.unsubscribe()

        def recorder(i: int):  # type: ignore[no-untyped-def]
            def handle(_event: Event, _headers: Mapping[str, str]) -> None:
                with lock:
                    local_hits.add(i)
            return handle

        @settings(max_examples=60, deadline=None)
        @given(tokens=subject_tokens, pats=st.lists(patterns(), min_size=1, max_size=4))
        def check(tokens: list[str], pats: list[str]) -> None:
            subject = ".".join(tokens)
            with lock:
                local_hits.clear()
            local_subs = [bus.subscribe(p, recorder(i)) for i, p in enumerate(pats)]
            try:
                queued = bus.publish(subject, new_event(subject, {"text": "probe"}, "test"))
                wait_until(lambda: sum(s.delivered for s in local_subs) == queued, timeout=5,
                           what="local deliveries")
            finally:
                for s in local_subs:
                    s.unsubscribe()
            server = loop.run_until_complete(nats_hits(subject, pats))
            predicted = {i for i, p in enumerate(pats) if subjects.matches(p, subject)}
            assert local_hits == server, (subject, pats)
            assert predicted == server, (subject, pats)

        check()
    finally:
        loop.run_until_complete(nc.close())
        bus.close()
        loop.close()
