"""Circuit breaker and backoff arithmetic for calls to external dependencies.

`CircuitBreaker` is the state machine of SPEC §4: closed -> open after
`failure_threshold` consecutive failures; open -> half-open once the current
backoff has elapsed; half-open -> closed after `success_threshold`
consecutive successes, -> open again on any failure with the backoff doubled
(capped at `max_backoff`). One breaker guards one dependency (`nats`, an LLM
provider); its state is exported as `circuit_breaker_state{breaker=name}`
using the `BreakerState` values.

The backoff helpers are pure functions of the attempt number, shared by the
NATS link, the supervisor and (later) LLM retries.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class BreakerState(enum.IntEnum):
    """Breaker states; the values are what the metric exports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """A thread-safe circuit breaker for one external dependency.

    Callers ask `allow()` before a call and report the outcome with
    `record_success()` / `record_failure()`. The open -> half-open move needs
    no timer: it happens when the state is next read (`state`, `allow()`)
    after the backoff has elapsed on `clock`.

    `on_change(name, new_state)` is called once per state change, in the
    order the changes happened, never while the breaker's lock is held (so
    the callback may read the breaker). It may run on whichever thread is
    already delivering notifications, so it can complete shortly after the
    call that caused the change returns. A callback that raises is logged and
    does not affect the breaker.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        success_threshold: int = 2,
        backoff: float = 10.0,
        max_backoff: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ValueError("breaker thresholds must be at least 1")
        if backoff <= 0 or max_backoff < backoff:
            raise ValueError("breaker backoff must be > 0 and max_backoff >= backoff")
        self.name = name
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.base_backoff = backoff
        self.max_backoff = max_backoff
        self.last_error = ""
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._backoff = backoff
        self._opened_at = 0.0
        # Changes waiting to be reported, and whether a thread is reporting
        # them: one reporter at a time keeps on_change in transition order
        # without calling it under the lock.
        self._pending: deque[tuple[BreakerState, float, str]] = deque()
        self._notifying = False

    # --- reading ----------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose backoff elapsed reads as half-open."""
        with self._lock:
            state = self._refresh()
        self._notify()
        return state

    @property
    def current_backoff(self) -> float:
        """How long the current open period lasts (or the next one, when not open)."""
        with self._lock:
            return self._backoff

    def allow(self) -> bool:
        """Whether a call may go through now: yes unless open with backoff still running."""
        return self.state is not BreakerState.OPEN

    # --- reporting outcomes -----------------------------------------------

    def record_success(self) -> None:
        """A call succeeded: resets the failure count; may close a half-open breaker."""
        with self._lock:
            state = self._refresh()
            if state is BreakerState.CLOSED:
                self._failures = 0
            elif state is BreakerState.HALF_OPEN:
                self._successes += 1
                if self._successes >= self.success_threshold:
                    self._close()
            # OPEN: a call that started before the breaker opened; the open
            # period still runs its full backoff.
        self._notify()

    def record_failure(self, error: str = "") -> None:
        """A call failed: may open a closed breaker; re-opens a half-open one with doubled backoff."""
        with self._lock:
            if error:
                self.last_error = error
            state = self._refresh()
            if state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()
            elif state is BreakerState.HALF_OPEN:
                self._backoff = min(self.max_backoff, self._backoff * 2)
                self._open()
        self._notify()

    # --- forcing ----------------------------------------------------------

    def trip(self) -> None:
        """Force the breaker open now, for the current backoff."""
        with self._lock:
            self._open()
        self._notify()

    def reset(self) -> None:
        """Force the breaker closed; counters and backoff go back to their base."""
        with self._lock:
            self._close()
        self._notify()

    # --- internals (called with the lock held) ----------------------------

    def _refresh(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._backoff
        ):
            self._set(BreakerState.HALF_OPEN)
            self._successes = 0
        return self._state

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._successes = 0
        self._set(BreakerState.OPEN)

    def _close(self) -> None:
        self._failures = 0
        self._successes = 0
        self._backoff = self.base_backoff
        self._set(BreakerState.CLOSED)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            self._pending.append((state, self._backoff, self.last_error))

    def _notify(self) -> None:
        """Report queued changes (log line, then on_change) outside the lock, in order."""
        while True:
            with self._lock:
                if self._notifying or not self._pending:
                    return
                self._notifying = True
                batch = list(self._pending)
                self._pending.clear()
            try:
                for state, backoff, last_error in batch:
                    self._report(state, backoff, last_error)
            finally:
                with self._lock:
                    self._notifying = False

    def _report(self, state: BreakerState, backoff: float, last_error: str) -> None:
        extra = {"breaker": self.name}
        if state is BreakerState.OPEN:
            log.warning("circuit breaker %s opened for %.1fs (last error: %s)",
                        self.name, backoff, last_error or "none", extra=extra)
        else:
            log.info("circuit breaker %s is %s", self.name, state.name.lower(), extra=extra)
        if self._on_change is None:
            return
        try:
            self._on_change(self.name, state)
        except Exception:
            log.exception("circuit breaker %s: on_change callback failed", self.name, extra=extra)


def _doubling(attempt: int, base: float, cap: float) -> float:
    if attempt < 0:
        raise ValueError(f"backoff attempt must be >= 0, got {attempt}")
    try:
        return min(cap, base * 2.0**attempt)
    except OverflowError:  # 2.0**attempt beyond float range: far above any cap
        return cap


def exponential_backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter wait before retry `attempt` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
    upper = _doubling(attempt, base, cap)
    return min(cap, (rng or random).uniform(0.0, upper))


def capped_exponential(attempt: int, base: float, cap: float) -> float:
    """Deterministic wait before retry `attempt` (0-based): min(cap, base * 2**attempt)."""
    return _doubling(attempt, base, cap)


def decorrelated_jitter(
    last: float,
    initial: float,
    cap: float,
    multiplier: float = 3.0,
    rng: random.Random | None = None,
) -> float:
    """Next wait from the previous one: uniform in [initial, min(cap, last * multiplier)].

    When `last * multiplier` is below `initial` (first retry, `last` = 0) the
    result is `initial`; the result never exceeds `cap`.
    """
    upper = max(initial, min(cap, last * multiplier))
    return min(cap, (rng or random).uniform(initial, upper))
