"""Single-instance lock on `<data>/nexo.lock` (SPEC §6).

Two runtimes on one data dir would each consume every message, so the data
dir is guarded by a POSIX record lock (`fcntl` F_SETLK). The kernel drops it
when the holder dies, so there are no stale locks, and `F_GETLK` tells us the
holder's PID from the lock itself: the pid/start/host text in the file is
for humans only and is never trusted for signalling.

A second boot asks the holder to stop (SIGTERM), polls for up to
`takeover_wait`, then SIGKILLs it and takes the lock: the newest instance
wins, as in the reference runtime. `--no-takeover` refuses instead.

POSIX locks belong to the process and vanish when *any* descriptor of the
file is closed by it, so this module opens the file exactly once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from nexo_actors.errors import LockHeldError, PreflightError

log = logging.getLogger(__name__)

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
_FLOCK = "hhqqi"
_FLOCK_SIZE = 32


def _flock_struct(kind: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0).ljust(_FLOCK_SIZE, b"\0")


@dataclass
class InstanceLock:
    path: Path
    fd: int

    def release(self) -> None:
        """Drop the lock (closing the only descriptor releases it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder_pid(fd: int) -> int | None:
    """PID holding a conflicting lock on the file, None if it is free."""
    result = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
    l_type, _whence, _start, _len, pid = struct.unpack(_FLOCK, result[: struct.calcsize(_FLOCK)])
    if l_type == fcntl.F_UNLCK:
        return None
    return int(pid)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _write_info(fd: int) -> None:
    info = f"pid={os.getpid()}\nstarted={time.strftime('%Y-%m-%dT%H:%M:%S%z')}\nhost={socket.gethostname()}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)


def _wait_free(fd: int, deadline: float, poll: float) -> bool:
    while True:
        if _try_lock(fd):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def acquire(path: Path, takeover: bool = True, wait: float = 5.0, poll: float = 0.1) -> InstanceLock:
    """Take the data-dir lock, replacing a live holder unless `takeover` is False."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise PreflightError(f"cannot open lock file {path}: {exc.strerror}; check the data "
                             "directory's owner and mode") from exc
    try:
        if _try_lock(fd):
            _write_info(fd)
            return InstanceLock(path, fd)
        pid = holder_pid(fd)
        if pid is None:  # released between our two calls
            if _wait_free(fd, time.monotonic() + wait, poll):
                _write_info(fd)
                return InstanceLock(path, fd)
            pid = holder_pid(fd) or 0
        if not takeover:
            raise LockHeldError(str(path), pid)
        if pid <= 0:
            raise LockHeldError(str(path), pid, "holder is in another PID namespace; "
                                "cannot signal it from here")
        log.warning("data directory is in use; asking the running instance to stop",
                    extra={"holder_pid": pid, "lock": str(path)})
        _signal(pid, signal.SIGTERM)
        if not _wait_free(fd, time.monotonic() + wait, poll):
            current = holder_pid(fd)
            if current is not None and current > 0:
                log.warning("instance did not stop in time; killing it",
                            extra={"holder_pid": current, "waited_s": wait})
                _signal(current, signal.SIGKILL)
            if not _wait_free(fd, time.monotonic() + wait, poll):
                raise LockHeldError(str(path), holder_pid(fd) or pid, "it survived SIGKILL")
        _write_info(fd)
        return InstanceLock(path, fd)
    except BaseException:
        os.close(fd)
        raise


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
