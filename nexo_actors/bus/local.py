"""The in-process bus: NATS subject matching, one ordered queue per subscriber.

It delivers events inside one process when there is no NATS (`type: local`)
and, in `type: nats`, whenever an event had to go to the disk queue instead
(SPEC §4 publish path, step 2).

Promises:

* a subscription on `pattern` receives every event published on a subject
  that `subjects.matches(pattern, subject)` accepts, in publish order (per
  publishing thread), one handler call at a time, on the subscription's own
  daemon thread;
* nothing is ever dropped: a full subscriber queue makes the publisher wait
  for room (counted in `slow_waits`, warned about at most once a second per
  subscription), and a slow subscriber stays subscribed;
* a handler that raises is logged and counted; its subscription goes on.

Deadlock note: a handler that publishes to its *own* full queue would wait
for itself, so that one case enqueues past the bound instead. A cycle of two
handlers publishing to each other's full queues is not detected; handlers
that publish should hand heavy work to an actor instead.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Mapping

from nexo_actors.bus.subjects import matches, validate_pattern, validate_subject
from nexo_actors.errors import BusError
from nexo_actors.messages import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event, Mapping[str, str]], None]

# A full queue is warned about at most this often per subscription.
_WARN_INTERVAL = 1.0
_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})


class LocalSubscription:
    """One subscriber: a bounded FIFO queue drained by a dedicated thread.

    `delivered` counts handler calls that returned, `errors` those that
    raised; `delivered + errors` is how many events were handed over.
    """

    def __init__(self, bus: LocalBus, pattern: str, handler: Handler, name: str, queue_size: int) -> None:
        self.pattern = pattern
        self.name = name or pattern
        self.delivered = 0
        self.errors = 0
        self.slow_waits = 0
        self._bus = bus
        self._handler = handler
        self._capacity = queue_size
        self._items: deque[tuple[Event, Mapping[str, str]]] = deque()
        self._cond = threading.Condition()
        self._closing = False  # no new items; the thread exits once the queue is empty
        self._abandon = False  # close() deadline passed: exit after the current handler
        self._last_warning = -_WARN_INTERVAL
        self._thread = threading.Thread(target=self._run, name=f"bus-sub:{self.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"LocalSubscription(pattern={self.pattern!r}, name={self.name!r})"

    def pending(self) -> int:
        """Events queued and not yet handed to the handler."""
        with self._cond:
            return len(self._items)

    @property
    def active(self) -> bool:
        """Still accepting events (not unsubscribed)."""
        with self._cond:
            return not self._closing

    def unsubscribe(self, timeout: float = 2.0) -> None:
        """Stop receiving new events; those already queued are still delivered.

        Waits up to `timeout` for the queue to drain. If a handler is slower
        than that, the thread keeps draining in the background (nothing queued
        is lost) and a warning says so.
        """
        self._bus._remove(self)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is self._thread:
            return  # a handler unsubscribing itself: its loop drains the queue, then ends
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "subscription %s still delivering %d queued events after %.1fs; continuing in background",
                self.name, self.pending(), timeout, extra={"subscription": self.name},
            )

    # --- used by LocalBus -------------------------------------------------

    def _offer(self, topic: str, event: Event, headers: Mapping[str, str]) -> bool:
        """Queue one event, waiting for room; False if the subscription closed meanwhile."""
        with self._cond:
            full = len(self._items) >= self._capacity and not self._closing
            if full and threading.current_thread() is not self._thread:
                self.slow_waits += 1
                self._bus._count_slow_wait()
                now = time.monotonic()
                if now - self._last_warning >= _WARN_INTERVAL:
                    self._last_warning = now
                    log.warning(
                        "subscriber %s is slow: its queue of %d is full; publisher waits",
                        self.name, self._capacity,
                        extra={"subject": topic, "subscription": self.name},
                    )
                self._cond.wait_for(lambda: self._closing or len(self._items) < self._capacity)
            if self._closing:
                # Unsubscribed (before or while we waited): the publish lost the
                # race with unsubscribe, as if it had come just after it.
                return False
            self._items.append((event, headers))
            self._cond.notify_all()
            return True

    def _stop(self, deadline: float) -> int:
        """Close, drain until `deadline`, then abandon; returns events left undelivered."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:  # a handler closing the bus
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._abandon = True
            left = len(self._items)
            self._items.clear()
            self._cond.notify_all()
        return left

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if self._abandon or not self._items:
                    return
                event, headers = self._items.popleft()
                self._cond.notify_all()  # room for a waiting publisher
            try:
                self._handler(event, headers)
            except Exception:
                with self._cond:
                    self.errors += 1
                log.exception(
                    "handler of subscription %s failed on %s", self.name, event.topic,
                    extra={"subject": event.topic, "subscription": self.name, "event_id": event.id},
                )
            else:
                with self._cond:
                    self.delivered += 1


class LocalBus:
    """In-process publish/subscribe with NATS subject semantics; thread-safe."""

    def __init__(self, queue_size: int = 1024) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self.slow_waits = 0
        self._lock = threading.Lock()
        # Separate from _lock: it is taken while a subscription's own lock is held.
        self._stats_lock = threading.Lock()
        self._subs: list[LocalSubscription] = []
        self._closed = False

    def subscribe(self, pattern: str, handler: Handler, *, name: str = "") -> LocalSubscription:
        """Start delivering events on subjects matching `pattern` (SubjectError if invalid)."""
        validate_pattern(pattern)
        with self._lock:
            if self._closed:
                raise BusError(f"local bus is closed; cannot subscribe {pattern!r}")
            sub = LocalSubscription(self, pattern, handler, name, self.queue_size)
            self._subs.append(sub)
        return sub

    def publish(self, topic: str, event: Event, headers: Mapping[str, str] | None = None) -> int:
        """Queue `event` for every subscription matching `topic`; returns how many.

        Blocks while a matching subscriber's queue is full. Raises SubjectError
        for an invalid subject and BusError once the bus is closed.
        """
        validate_subject(topic)
        with self._lock:
            if self._closed:
                raise BusError(f"local bus is closed; event {event.id} on {topic} was not published")
            targets = [s for s in self._subs if matches(s.pattern, topic)]
        # One read-only copy shared by every subscriber: no handler can change
        # what another one sees, nor can the caller after publish returns.
        frozen = types.MappingProxyType(dict(headers)) if headers else _NO_HEADERS
        return sum(1 for sub in targets if sub._offer(topic, event, frozen))

    def subscriptions(self) -> list[LocalSubscription]:
        """The subscriptions currently receiving events."""
        with self._lock:
            return list(self._subs)

    def close(self, timeout: float = 2.0) -> None:
        """Refuse new publishes, deliver what is queued for up to `timeout`, stop every thread.

        Events still queued at the deadline (a handler stuck past it) are not
        delivered; their number is logged as an error.
        """
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, []
        deadline = time.monotonic() + timeout
        for sub in subs:
            left = sub._stop(deadline)
            if left:
                log.error(
                    "local bus closed with %d events undelivered to %s (handler did not finish in %.1fs)",
                    left, sub.name, timeout, extra={"subscription": sub.name},
                )

    # --- used by LocalSubscription ------------------------------------------

    def _remove(self, sub: LocalSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _count_slow_wait(self) -> None:
        with self._stats_lock:
            self.slow_waits += 1
