"""The circuit breaker of SPEC §4 and the backoff helpers."""

from __future__ import annotations

import itertools
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_actors.resilience import (
    BreakerState,
    CircuitBreaker,
    capped_exponential,
    decorrelated_jitter,
    exponential_backoff,
)


class FakeClock:
    """A time source the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[str, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker("nats", clock=clock, on_change=lambda n, s: changes.append((n, s)))


def fail(b: CircuitBreaker, times: int) -> None:
    for i in range(times):
        b.record_failure(f"boom {i}")


def open_then_half_open(b: CircuitBreaker, clock: FakeClock) -> None:
    fail(b, 5)
    clock.advance(b.current_backoff)
    assert b.state is BreakerState.HALF_OPEN


def test_state_values_are_the_exported_metric_values() -> None:
    assert [int(s) for s in (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)] == [0, 1, 2]


def test_closed_opens_after_five_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure("connection refused")
    assert breaker.state is BreakerState.OPEN
    assert breaker.last_error == "connection refused"


def test_a_success_between_failures_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.record_success()
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_open_rejects_calls_until_the_backoff_elapses(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    assert not breaker.allow()
    clock.advance(9.99)
    assert not breaker.allow()
    assert breaker.state is BreakerState.OPEN


def test_open_becomes_half_open_after_ten_seconds(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    assert breaker.current_backoff == 10.0
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_half_open_closes_after_two_successes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_then_half_open(breaker, clock)
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.current_backoff == 10.0


def test_half_open_reopens_on_one_failure_with_doubling_backoff(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 5)
    seen = [breaker.current_backoff]
    for _ in range(5):
        clock.advance(breaker.current_backoff)
        assert breaker.state is BreakerState.HALF_OPEN
        breaker.record_failure("still down")
        assert breaker.state is BreakerState.OPEN
        seen.append(breaker.current_backoff)
    assert seen == [10.0, 20.0, 40.0, 80.0, 120.0, 120.0]
    # The re-opened period really lasts the doubled backoff.
    clock.advance(119.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_closing_resets_the_backoff_to_base(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_then_half_open(breaker, clock)
    breaker.record_failure()
    assert breaker.current_backoff == 20.0
    clock.advance(20.0)
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 5)
    assert breaker.current_backoff == 10.0


def test_success_while_open_does_not_shorten_the_open_period(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 5)
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is BreakerState.OPEN


def test_trip_forces_open_now(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.trip()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_reset_forces_closed_with_base_counters_and_backoff(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_then_half_open(breaker, clock)
    breaker.record_failure()
    assert breaker.current_backoff == 20.0
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.current_backoff == 10.0
    fail(breaker, 4)  # the failure count restarted from zero
    assert breaker.state is BreakerState.CLOSED


def test_on_change_is_called_on_every_state_change(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    open_then_half_open(breaker, clock)
    breaker.record_failure()
    clock.advance(20.0)
    breaker.record_success()
    breaker.record_success()
    breaker.trip()
    breaker.trip()  # already open: no change, no call
    breaker.reset()
    assert changes == [
        ("nats", BreakerState.OPEN),
        ("nats", BreakerState.HALF_OPEN),
        ("nats", BreakerState.OPEN),
        ("nats", BreakerState.HALF_OPEN),
        ("nats", BreakerState.CLOSED),
        ("nats", BreakerState.OPEN),
        ("nats", BreakerState.CLOSED),
    ]


def test_on_change_runs_outside_the_lock_and_may_read_the_breaker(clock: FakeClock) -> None:
    seen: list[tuple[BreakerState, bool]] = []
    b: CircuitBreaker

    def on_change(_name: str, state: BreakerState) -> None:
        seen.append((state, b.allow()))  # would deadlock if called under the lock

    b = CircuitBreaker("llm", clock=clock, on_change=on_change)
    b.trip()
    assert seen == [(BreakerState.OPEN, False)]


def test_a_failing_on_change_does_not_break_the_breaker(clock: FakeClock) -> None:
    def on_change(_name: str, _state: BreakerState) -> None:
        raise RuntimeError("metrics exploded")

    b = CircuitBreaker("llm", clock=clock, on_change=on_change)
    fail(b, 5)
    assert b.state is BreakerState.OPEN


def test_thread_safety_many_threads_recording_failures(clock: FakeClock) -> None:
    changes: list[BreakerState] = []
    b = CircuitBreaker("nats", clock=clock, on_change=lambda _n, s: changes.append(s))
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(500):
            b.record_failure("down")
            b.allow()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]  # opened exactly once, reported once
    assert b.current_backoff == 10.0


def test_thread_safety_mixed_outcomes_keep_transitions_consistent(clock: FakeClock) -> None:
    changes: list[BreakerState] = []
    b = CircuitBreaker("nats", failure_threshold=3, clock=clock,
                       on_change=lambda _n, s: changes.append(s))
    start = threading.Barrier(6)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(2000):
            if rng.random() < 0.6:
                b.record_failure()
            else:
                b.record_success()
            if rng.random() < 0.05:
                clock.advance(200.0)  # lets open periods end (float += is fine: test clock)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    final = b.state  # may itself report open -> half-open, so read it first
    # Reported changes form a valid path through the state machine, and end
    # where the breaker is.
    allowed = {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    }
    path = [BreakerState.CLOSED, *changes]
    assert len(changes) > 3
    assert all((a, c) in allowed for a, c in itertools.pairwise(path))
    assert path[-1] is final


# --- backoff helpers ----------------------------------------------------------

attempts = st.integers(min_value=0, max_value=5000)
bases = st.floats(min_value=0.001, max_value=100.0)
caps = st.floats(min_value=0.001, max_value=1000.0)


@given(attempt=attempts, base=bases, cap=caps, seed=st.integers())
def test_exponential_backoff_stays_within_zero_and_the_cap(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    value = exponential_backoff(attempt, base, cap, random.Random(seed))
    assert 0.0 <= value <= min(cap, base * 2.0 ** min(attempt, 1023))


def test_exponential_backoff_spreads_over_the_whole_range() -> None:
    rng = random.Random(7)
    values = [exponential_backoff(3, 1.0, 100.0, rng) for _ in range(2000)]
    assert max(values) <= 8.0
    assert min(values) < 0.5 and max(values) > 7.5  # full jitter, not a narrow band


@given(attempt=attempts, base=bases, cap=caps)
def test_capped_exponential_doubles_until_the_cap(attempt: int, base: float, cap: float) -> None:
    value = capped_exponential(attempt, base, cap)
    assert value <= cap
    if value < cap:
        assert value == base * 2.0**attempt
        assert capped_exponential(attempt + 1, base, cap) == min(cap, value * 2)


def test_capped_exponential_sequence() -> None:
    assert [capped_exponential(i, 0.2, 30.0) for i in range(10)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0
    ]


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError):
        capped_exponential(-1, 1.0, 10.0)
    with pytest.raises(ValueError):
        exponential_backoff(-1, 1.0, 10.0)


@settings(max_examples=200)
@given(
    last=st.floats(min_value=0.0, max_value=1e6),
    initial=st.floats(min_value=0.0, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    seed=st.integers(),
)
def test_decorrelated_jitter_stays_between_initial_and_cap(
    last: float, initial: float, extra: float, multiplier: float, seed: int
) -> None:
    cap = initial + extra
    value = decorrelated_jitter(last, initial, cap, multiplier, random.Random(seed))
    assert initial <= value <= cap
    assert value <= max(initial, last * multiplier)
