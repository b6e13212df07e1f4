"""The single-instance lock (SPEC §6) across real processes: the kernel's
record lock names its holder, takeover signals that holder and only it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nexo_actors.errors import LockHeldError
from nexo_actors.lock import acquire, holder_pid

REPO = Path(__file__).resolve().parents[2]

# A process that takes the lock, says so, and then waits for stdin to close.
HOLDER = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from nexo_actors.lock import acquire
    if sys.argv[2] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = acquire(Path(sys.argv[1]), takeover=False)
    print("locked", flush=True)
    sys.stdin.read()
    lock.release()
""")

Holder = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    """start(lock_path, mode="default"|"ignore-term") -> a child process holding the lock."""
    children: list[subprocess.Popen[str]] = []

    def start(path: Path, mode: str = "default") -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked", f"holder exited {proc.wait()}"
        return proc

    try:
        yield start
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "nexo.lock"


def test_free_lock_is_taken_and_info_written(lock_path: Path) -> None:
    lock = acquire(lock_path)
    try:
        text = lock_path.read_text()
        assert f"pid={os.getpid()}\n" in text
        assert "started=" in text and "host=" in text
    finally:
        lock.release()


def test_holder_pid_comes_from_the_kernel_lock(lock_path: Path, holder: Holder) -> None:
    child = holder(lock_path)
    fd = os.open(lock_path, os.O_RDWR)
    try:
        assert holder_pid(fd) == child.pid
        child.stdin.close()  # type: ignore[union-attr]
        assert child.wait(10) == 0
        assert holder_pid(fd) is None
    finally:
        os.close(fd)


def test_no_takeover_raises_naming_the_holder_and_leaves_it_alone(lock_path: Path,
                                                                  holder: Holder) -> None:
    child = holder(lock_path)
    with pytest.raises(LockHeldError) as info:
        acquire(lock_path, takeover=False)
    assert info.value.pid == child.pid
    assert f"pid {child.pid}" in str(info.value)
    assert str(lock_path) in str(info.value)
    assert child.poll() is None


def test_takeover_sends_sigterm_to_the_holder_then_takes_the_lock(
        lock_path: Path, holder: Holder, caplog: pytest.LogCaptureFixture) -> None:
    child = holder(lock_path)
    caplog.set_level(logging.WARNING, logger="nexo_actors.lock")
    lock = acquire(lock_path, takeover=True, wait=5.0, poll=0.05)
    try:
        assert child.wait(5) == -signal.SIGTERM
        assert f"pid={os.getpid()}\n" in lock_path.read_text()
        assert [r.getMessage() for r in caplog.records] == [
            "data directory is in use; asking the running instance to stop"]
        assert caplog.records[0].holder_pid == child.pid
    finally:
        lock.release()


def test_takeover_kills_a_holder_that_ignores_sigterm(lock_path: Path, holder: Holder,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    child = holder(lock_path, "ignore-term")
    caplog.set_level(logging.WARNING, logger="nexo_actors.lock")
    lock = acquire(lock_path, takeover=True, wait=0.3, poll=0.05)
    try:
        assert child.wait(5) == -signal.SIGKILL
        assert "instance did not stop in time; killing it" in [r.getMessage() for r in caplog.records]
    finally:
        lock.release()


def test_lock_of_a_killed_holder_is_free_at_once(lock_path: Path, holder: Holder,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    child = holder(lock_path)
    child.kill()
    child.wait(5)
    caplog.set_level(logging.DEBUG, logger="nexo_actors.lock")
    lock = acquire(lock_path, takeover=False)
    try:
        assert caplog.records == []
    finally:
        lock.release()


def test_pid_in_the_file_text_is_never_signalled(lock_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock_path.write_text(f"pid={sleeper.pid}\nstarted=2020-01-01T00:00:00+0000\nhost=x\n")
        caplog.set_level(logging.DEBUG, logger="nexo_actors.lock")
        lock = acquire(lock_path, takeover=True, wait=0.5, poll=0.05)
        lock.release()
        assert sleeper.poll() is None
        assert caplog.records == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_release_lets_another_process_take_it(lock_path: Path, holder: Holder) -> None:
    lock = acquire(lock_path)
    lock.release()
    lock.release()  # idempotent
    child = holder(lock_path)
    assert child.poll() is None


def test_unopenable_lock_file_is_a_preflight_error(tmp_path: Path) -> None:
    from nexo_actors.errors import PreflightError

    with pytest.raises(PreflightError, match="cannot open lock file"):
        acquire(tmp_path / "missing-dir" / "nexo.lock")
