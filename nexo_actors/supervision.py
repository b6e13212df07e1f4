"""Child-process supervision: explicit states and the restart policy.

Modelled on supervisord's process states and OTP's one-for-one intensity:
every child (agent worker, sidecar) moves through these states, and every
transition is made in one place by its owner actor.

    STARTING  spawned; waiting for its ready handshake
        -> RUNNING   it said ready in time
        -> BACKOFF   it exited, or missed the ready deadline (then killed)
    RUNNING   serving and answering heartbeats
        -> BACKOFF   it exited or stopped answering heartbeats (then killed)
        -> STOPPING  we asked it to stop (shutdown, or recycling past max_rss_mb)
    BACKOFF   waiting `delay` before the next start; delay doubles per
              restart within `window`, capped at `max_backoff`
        -> STARTING  the delay elapsed
        -> FAILED    more than `max_restarts` exits within `window`
    FAILED    given up on for now: its agents are reported failed (/ready
              503, `nexo actors`), and a new start is tried every `max_backoff`
        -> STARTING  the retry timer fired
    STOPPING  asked to stop; SIGKILL at the deadline
        -> STOPPED   it exited
        -> STARTING  it was being recycled, so a replacement starts at once
    STOPPED   gone on purpose (terminal during shutdown)
"""

from __future__ import annotations

import enum
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from nexo_actors.config.schema import RestartPolicy
from nexo_actors.resilience import capped_exponential


class ChildState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def status(self) -> str:
        """The state-record status of SPEC §1 (`restarting` while backing off)."""
        return "restarting" if self is ChildState.BACKOFF else self.value


@dataclass(frozen=True)
class RestartDecision:
    delay: float
    failed: bool
    recent_exits: int


class RestartTracker:
    """Counts exits within the window and decides the next delay."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.exits: deque[float] = deque()
        self.total = 0

    def record_exit(self) -> RestartDecision:
        now = self.clock()
        self.exits.append(now)
        self.total += 1
        while self.exits and self.exits[0] < now - self.policy.window:
            self.exits.popleft()
        recent = len(self.exits)
        if recent > self.policy.max_restarts:
            return RestartDecision(self.policy.max_backoff, True, recent)
        delay = capped_exponential(recent - 1, self.policy.backoff, self.policy.max_backoff)
        return RestartDecision(delay, False, recent)


def describe_exit(exitcode: int | None) -> str:
    """`killed by SIGKILL` for a signal, `exited with code 3` otherwise."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}"
    return f"exited with code {exitcode}"


class ChildRegistry:
    """Pids of every child process, for the one step that cannot wait for actors.

    A second SIGTERM during shutdown (and the shutdown watchdog) SIGKILLs
    everything here directly from the main thread, whatever the actors are
    doing. Owners add a pid when they spawn and discard it when they reap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def kill_all(self) -> list[int]:
        """SIGKILL every registered child (and its process group); returns the pids."""
        with self._lock:
            pids = sorted(self._pids)
        for pid in pids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        return pids
