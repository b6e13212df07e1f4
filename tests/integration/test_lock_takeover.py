"""Single-instance lock with real `bin/nexo start` processes on one data dir
(SPEC §6): the newest instance wins, `--no-takeover` refuses, a killed holder
leaves no stale lock, and the PID written in the file is never trusted."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TAKEOVER_WARNING = r"data directory is in use; asking the running instance to stop"


def test_second_start_takes_over_within_5s_and_first_exits_0(conf_dir: Path, start_runtime) -> None:  # type: ignore[no-untyped-def]
    first = start_runtime(conf_dir).wait_ready()
    second = start_runtime(conf_dir)
    warning = second.wait_for_log(TAKEOVER_WARNING, timeout=30)
    asked = time.monotonic()
    assert f"holder_pid={first.pid}" in warning
    assert first.wait_exit(timeout=5.0) == 0, first.stderr
    assert time.monotonic() - asked < 5.0
    first.wait_for_log(r"shutting down", timeout=1)
    second.wait_ready()
    assert second.proc.poll() is None
    assert f"pid={second.pid}\n" in (conf_dir.parent / "data" / "nexo.lock").read_text()


def test_no_takeover_exits_1_naming_the_holder_pid(conf_dir: Path, start_runtime) -> None:  # type: ignore[no-untyped-def]
    holder = start_runtime(conf_dir).wait_ready()
    refused = start_runtime(conf_dir, args=["--no-takeover"])
    assert refused.wait_exit(timeout=30) == 1
    assert f"is held by a running nexo, pid {holder.pid};" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "nexo is running" not in refused.stderr
    assert holder.proc.poll() is None
    assert "shutting down" not in holder.stderr


def test_lock_of_a_kill9ed_holder_is_free_at_once(conf_dir: Path, start_runtime) -> None:  # type: ignore[no-untyped-def]
    holder = start_runtime(conf_dir).wait_ready()
    holder.proc.kill()
    assert holder.wait_exit(timeout=10) == -signal.SIGKILL
    # --no-takeover too: a stale lock would make this exit 1 instead of booting.
    after = start_runtime(conf_dir, args=["--no-takeover"]).wait_ready()
    assert "data directory is in use" not in after.stderr
    assert "did not stop in time" not in after.stderr


def test_unrelated_live_pid_in_lock_file_text_is_not_signalled(conf_dir: Path, data_dir: Path,
                                                               start_runtime) -> None:  # type: ignore[no-untyped-def]
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "nexo.lock").write_text(
            f"pid={bystander.pid}\nstarted=2020-01-01T00:00:00+0000\nhost=elsewhere\n")
        rt = start_runtime(conf_dir).wait_ready()
        assert "data directory is in use" not in rt.stderr
        assert bystander.poll() is None
        rt.send_signal(signal.SIGTERM)
        assert rt.wait_exit(timeout=10) == 0, rt.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
