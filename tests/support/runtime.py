"""Run `bin/nexo` as a real process and watch what it logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NEXO = REPO / "bin" / "nexo"


def nexo(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 30.0, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `bin/nexo` command to completion."""
    return subprocess.run([str(NEXO), *args], cwd=cwd or REPO, env=_env(env), timeout=timeout,
                          capture_output=True, text=True, user=user)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AGENT_ENV", None)
    env.setdefault("LOG_LEVEL", "info")
    env.update(extra or {})
    return env


class RuntimeProcess:
    """`bin/nexo --config DIR start` in its own session; torn down even on failure."""

    def __init__(self, config_dir: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, args: list[str] | None = None,
                 user: int | None = None, argv: list[str] | None = None) -> None:
        self.config_dir = config_dir
        self.cwd = cwd or REPO
        self.env = _env(env)
        self.args = args or []
        self.user = user
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []

    def start(self) -> RuntimeProcess:
        argv = self.argv or [str(NEXO), "--config", str(self.config_dir), "start", *self.args]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     user=self.user)
        for stream, sink in ((self.proc.stderr, self.lines), (self.proc.stdout, self.stdout)):
            t = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            t.start()
            self._readers.append(t)
        return self

    def _read(self, stream: object, sink: list[str]) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            with self._cond:
                sink.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 30.0, start: int = 0) -> str:
        """The first stderr line (from index `start`) matching the regex `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return line
                exited = self.proc is not None and self.proc.poll() is not None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (exited and not any(t.is_alive() for t in self._readers)):
                    raise AssertionError(
                        f"no log line matching {pattern!r} within {timeout}s "
                        f"(exit code {self.proc.poll() if self.proc else None}); stderr:\n"
                        + "\n".join(self.lines[-60:])
                    )
                self._cond.wait(min(remaining, 0.2))

    def wait_ready(self, timeout: float = 30.0) -> RuntimeProcess:
        self.wait_for_log(r"nexo is running", timeout)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return code

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group; always reaps."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        return self.proc.returncode

    def kill_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._readers:
            t.join(5)
