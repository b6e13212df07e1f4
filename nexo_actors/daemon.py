"""`nexo start`: the boot sequence, the signal loop and the shutdown (SPEC §6).

Boot: load + validate config (exit 1 with every error) -> preflight -> the
single-instance lock -> the actor tree (the Supervisor starts the store, the
bridge, the workers, the control socket and the sidecar). The main thread
then only waits for signals: handlers record them and this loop acts, as in
gunicorn's arbiter. SIGTERM/SIGINT start the shutdown; a second one kills
the children at once; SIGHUP reloads. A watchdog makes sure the process is
gone within `shutdown.grace` whatever happens, with exit code 0.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import pykka

from nexo_actors import __version__
from nexo_actors.config import Config, load_config
from nexo_actors.errors import ConfigErrors, LockHeldError, NexoError, PreflightError
from nexo_actors.lock import InstanceLock, acquire
from nexo_actors.logs import register_secrets, setup_logging
from nexo_actors.preflight import run_preflight
from nexo_actors.supervision import ChildRegistry

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
# The shutdown plan ends this long before the grace, leaving room to exit.
SHUTDOWN_MARGIN = 0.6
POLL = 0.05


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


def prepare_metrics_dir(path: Path) -> None:
    """Wipe the Prometheus multiprocess dir of the last run; must precede importing metrics."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


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
        return _run(config, config_dir, signals, started, lock)
    finally:
        lock.release()


def _run(config: Config, config_dir: Path, signals: SignalQueue, started: float,
         lock: InstanceLock) -> int:
    prepare_metrics_dir(config.metrics_dir)
    # Imported only now: prometheus_client picks multiprocess mode at import.
    from nexo_actors.messages import Boot, Reload, Shutdown
    from nexo_actors.supervisor import Supervisor
    from nexo_actors.view import RuntimeView

    children = ChildRegistry()
    stop_requested = threading.Event()
    view = RuntimeView(config=config, config_dir=config_dir, instance_id=uuid.uuid4().hex[:12],
                       children=children)
    supervisor = Supervisor.start(view, stop_requested)
    view.supervisor = supervisor
    boot: pykka.Future[Any] | None = supervisor.ask(Boot(), block=False)
    shutdown: pykka.Future[Any] | None = None
    hard_deadline = float("inf")
    exit_code = EXIT_OK

    def begin_shutdown(reason: str) -> pykka.Future[Any]:
        nonlocal hard_deadline
        now = time.monotonic()
        hard_deadline = now + config.runtime.shutdown.grace - 0.1
        log.info("shutting down", extra={"signal": reason, "grace_s": config.runtime.shutdown.grace})
        stop_requested.set()
        deadline = now + max(0.5, config.runtime.shutdown.grace - SHUTDOWN_MARGIN)
        future: pykka.Future[Any] = supervisor.ask(Shutdown(deadline=deadline), block=False)
        return future

    while True:
        sig = signals.get(timeout=POLL)
        if boot is not None and _done(boot):
            try:
                boot.get(timeout=0)
            except NexoError as exc:
                log.error(str(exc))
                exit_code = EXIT_FAILURE
                if shutdown is None:
                    shutdown = begin_shutdown("boot failed")
            else:
                if shutdown is None:
                    log.info("nexo is running", extra={
                        "version": __version__, "pid": os.getpid(), "config": str(config_dir),
                        "instance": view.instance_id, "boot_s": round(time.monotonic() - started, 3)})
            boot = None
        if sig in (signal.SIGTERM, signal.SIGINT):
            if shutdown is None:
                shutdown = begin_shutdown(signal.Signals(sig).name)
            else:
                killed = children.kill_all()
                log.warning("second signal during shutdown: killing child processes now",
                            extra={"pids": ",".join(map(str, killed))})
        elif sig == signal.SIGHUP and shutdown is None:
            supervisor.tell(Reload(source="SIGHUP"))
        if shutdown is not None and _done(shutdown):
            break
        if time.monotonic() > hard_deadline:
            log.error("shutdown overran its grace; killing what is left")
            children.kill_all()
            lock.release()
            os._exit(exit_code)
    try:
        shutdown.get(timeout=0)
    except Exception as exc:
        log.error("shutdown step failed: %r", exc)
    supervisor.stop()
    pykka.ActorRegistry.stop_all(block=True, timeout=max(0.1, hard_deadline - time.monotonic()))
    log.info("nexo stopped", extra={"exit_code": exit_code})
    return exit_code


def _done(future: pykka.Future[Any]) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:
        return True
    return True
