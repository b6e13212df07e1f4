"""Restart policy and exit descriptions (SPEC §5 supervision)."""

from __future__ import annotations

import signal
import subprocess

from nexo_actors.config.schema import RestartPolicy
from nexo_actors.supervision import ChildRegistry, ChildState, RestartTracker, describe_exit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_until_the_intensity_limit_then_fails() -> None:
    clock = Clock()
    tracker = RestartTracker(RestartPolicy(max_restarts=3, window=60.0, backoff=0.2, max_backoff=1.0),
                             clock=clock)
    decisions = [tracker.record_exit() for _ in range(4)]
    assert [d.delay for d in decisions[:3]] == [0.2, 0.4, 0.8]
    assert [d.failed for d in decisions] == [False, False, False, True]
    assert decisions[3].delay == 1.0  # failed: retried every max_backoff


def test_exits_outside_the_window_do_not_count() -> None:
    clock = Clock()
    tracker = RestartTracker(RestartPolicy(max_restarts=1, window=10.0, backoff=0.1, max_backoff=5.0),
                             clock=clock)
    tracker.record_exit()
    clock.now += 11
    decision = tracker.record_exit()
    assert not decision.failed and decision.recent_exits == 1 and decision.delay == 0.1


def test_exit_descriptions_tell_signals_from_codes() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    assert ChildState.BACKOFF.status == "restarting"


def test_child_registry_kills_registered_processes() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    registry = ChildRegistry()
    registry.add(proc.pid)
    assert registry.kill_all() == [proc.pid]
    assert proc.wait(5) == -signal.SIGKILL
