"""`nexo start`: the boot sequence, the signal loop and the shutdown (SPEC §6).

Boot: load + validate config (exit 1 with every error) -> preflight -> the
single-instance lock -> the actor tree (Supervisor starts store, bridge,
workers, control socket, sidecar). Then the main thread only waits for
signals: handlers record them and this loop acts, as in gunicorn's arbiter.
SIGTERM/SIGINT start the shutdown; a second one cuts it short; SIGHUP reloads.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from pathlib import Path
from types import FrameType

from nexo_actors import __version__
from nexo_actors.config import load_config
from nexo_actors.errors import ConfigErrors, LockHeldError, NexoError, PreflightError
from nexo_actors.lock import acquire
from nexo_actors.logs import register_secrets, setup_logging
from nexo_actors.preflight import run_preflight

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1


class SignalQueue:
    """Signal handlers only enqueue; the main loop decides what to do."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        for sig in self.HANDLED:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self._queue.put(signum)

    def get(self, timeout: float) -> int | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


def run_daemon(config_dir: Path, takeover: bool = True) -> int:
    setup_logging()
    started = time.monotonic()
    try:
        config = load_config(config_dir)
    except ConfigErrors as exc:
        log.error(str(exc))
        return EXIT_FAILURE
    register_secrets(config.secret_values)
    signals = SignalQueue()
    try:
        run_preflight(config)
        lock = acquire(config.lock_file, takeover=takeover and config.runtime.lock.takeover,
                       wait=config.runtime.lock.takeover_wait,
                       poll=config.runtime.lock.poll_interval)
    except (PreflightError, LockHeldError) as exc:
        log.error(str(exc))
        return EXIT_FAILURE
    try:
        log.info("nexo is running", extra={"version": __version__, "pid": os.getpid(),
                                           "config": str(config_dir),
                                           "boot_s": round(time.monotonic() - started, 3)})
        while True:
            sig = signals.get(timeout=1.0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("shutting down", extra={"signal": signal.Signals(sig).name})
                break
    except NexoError as exc:
        log.error(str(exc))
        return EXIT_FAILURE
    finally:
        lock.release()
    log.info("nexo stopped")
    return EXIT_OK
