"""The QueueStore's mailbox: pykka's ActorInbox, cheaper on the sending side.

`queue.Queue` (pykka's default) takes a lock and signals a condition on every
`put`, about a microsecond per message, which on the enqueue path costs as
much as the INSERT. Here a put is a deque append, and the lock is taken only
when the actor's thread sleeps waiting for mail. Its `items` deque is also
what the store reads to group-commit the writes waiting behind the current one.

Promises: FIFO across all senders; unbounded; any number of sending threads,
exactly one receiving thread (the actor's); `get` blocks until a message is
there and never misses a wake-up (see `get`).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Mailbox:
    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._sleeping = False

    def put(self, envelope: Any, /) -> None:
        self.items.append(envelope)
        if self._sleeping:
            with self._cond:
                self._cond.notify()

    def get(self) -> Any:
        items = self.items
        while True:
            if items:
                return items.popleft()
            with self._cond:
                # No lost wake-up: a sender that read `_sleeping` as False appended
                # before it did so, hence before we set it, so the check below sees
                # its item; one that read True notifies under the lock, which we
                # hold from here until wait() releases it.
                self._sleeping = True
                try:
                    if not items:
                        self._cond.wait()
                finally:
                    self._sleeping = False

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)
