"""Collect a child process's output lines on threads and wait for one."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import IO, Any


class LineCollector:
    """Reads a process's stdout and stderr line by line as they come."""

    def __init__(self, proc: subprocess.Popen[Any], name: str) -> None:
        self.proc = proc
        self.name = name
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                        for stream, sink in ((proc.stdout, self.stdout), (proc.stderr, self.stderr))
                        if stream is not None]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: IO[Any], sink: list[str]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            with self.cond:
                sink.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def finished(self) -> bool:
        """The process exited and every line it wrote has been read."""
        return self.proc.poll() is not None and not any(t.is_alive() for t in self.readers)

    def wait_for(self, pattern: str, timeout: float, start: int = 0, stdout: bool = False) -> str:
        """The first line (from index `start`) of stderr, or stdout, matching `pattern`."""
        rx = re.compile(pattern)
        sink = self.stdout if stdout else self.stderr
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in sink[start:]:
                    if rx.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.finished():
                    raise AssertionError(
                        f"{self.name} wrote no line matching {pattern!r} within {timeout}s "
                        f"(exit code {self.proc.poll()});\nstdout tail:\n" + "\n".join(self.stdout[-20:])
                        + "\nstderr tail:\n" + "\n".join(self.stderr[-60:]))
                self.cond.wait(min(remaining, 0.2))

    def join(self, timeout: float = 5.0) -> None:
        for reader in self.readers:
            reader.join(timeout)
