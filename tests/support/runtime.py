"""Run `bin/nexo` as a real process and watch what it logs."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.lines import LineCollector

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
        self.output: LineCollector | None = None

    def start(self) -> RuntimeProcess:
        argv = self.argv or [str(NEXO), "--config", str(self.config_dir), "start", *self.args]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     user=self.user)
        self.output = LineCollector(self.proc, "the runtime")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def lines(self) -> list[str]:
        """Its stderr (the log) so far, one entry per line."""
        return self.output.stderr if self.output else []

    @property
    def stdout(self) -> list[str]:
        return self.output.stdout if self.output else []

    @property
    def stderr(self) -> str:
        if self.output is None:
            return ""
        with self.output.cond:
            return "\n".join(self.output.stderr)

    def wait_for_log(self, pattern: str, timeout: float = 30.0, start: int = 0) -> str:
        """The first stderr line (from index `start`) matching the regex `pattern`."""
        assert self.output is not None
        return self.output.wait_for(pattern, timeout, start)

    def wait_ready(self, timeout: float = 30.0) -> RuntimeProcess:
        self.wait_for_log(r"nexo is running", timeout)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None and self.output is not None
        code = self.proc.wait(timeout)
        self.output.join()
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
        if self.output is not None:
            self.output.join()
