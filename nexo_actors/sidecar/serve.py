"""`python -m nexo_actors.sidecar.serve`: gunicorn serving the sidecar app.

The runtime launches this (see process.py) with everything it needs on the
command line: the control socket, the metrics directory, both binds and the
timeouts. No secret is passed, none is needed.

What this process promises:

* it binds `--health-bind` and `--metrics-bind` (one listener when they are
  equal) or exits with EXIT_PORT_IN_USE before starting gunicorn;
* the gunicorn master exits when the runtime that launched it dies: a
  thread started from the `when_ready` hook watches `os.getppid()` and
  sends the master SIGTERM, so a dead runtime never leaves a port bound;
* exited workers are reported to prometheus_client (`mark_process_dead`,
  from the `child_exit` hook); the workers themselves never create metric
  files, because this process runs without PROMETHEUS_MULTIPROC_DIR and
  reads the directory only through the explicit `--metrics-dir`;
* gunicorn's own log lines go through the runtime's logging setup (JSON in
  production, secrets scrubbed), not its private handlers.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from nexo_actors.config.load import parse_bind
from nexo_actors.logs import setup_logging
from nexo_actors.sidecar import EXIT_PORT_IN_USE, bind_error
from nexo_actors.sidecar.app import AppSettings, create_app

log = logging.getLogger(__name__)

PROC_NAME = "nexo-sidecar"


class RuntimeLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing through the root logger that setup_logging configured."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        # LOG_LEVEL decides, as for every other logger of the runtime.
        self.error_log.setLevel(logging.NOTSET)
        self.error_log.propagate = True


class SidecarApplication(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose settings come from a dict, not a config file."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in self.options.items():
            # A setting this gunicorn does not know (older release) is skipped, not fatal.
            if key in known and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nexo_actors.sidecar.serve",
                                description="nexo health/metrics sidecar (started by the runtime)")
    p.add_argument("--control-socket", required=True, type=Path)
    p.add_argument("--metrics-dir", required=True, type=Path)
    p.add_argument("--health-bind", required=True)
    p.add_argument("--metrics-bind", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--control-timeout", type=float, default=2.0)
    p.add_argument("--health-timeout", type=float, default=1.0)
    p.add_argument("--graceful-timeout", type=float, default=1.0)
    p.add_argument("--parent-pid", type=int, default=0,
                   help="stop when this process is no longer our parent (0: do not watch)")
    p.add_argument("--parent-check-interval", type=float, default=0.5)
    return p.parse_args(argv)


def gunicorn_options(args: argparse.Namespace, binds: list[str]) -> dict[str, Any]:
    metrics_dir = str(args.metrics_dir)
    parent_pid = args.parent_pid

    def when_ready(server: Any) -> None:
        if parent_pid:
            threading.Thread(target=watch_parent, args=(parent_pid, args.parent_check_interval),
                             name="parent-watch", daemon=True).start()

    def child_exit(server: Any, worker: Any) -> None:
        # Workers write no metric files (see the module docstring); this keeps
        # that true even if one ever does, so dead pids never pile up.
        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]

    return {
        "bind": binds,
        "workers": max(1, args.workers),
        "worker_class": "gthread",
        "threads": max(1, args.threads),
        # gunicorn takes whole seconds here.
        "graceful_timeout": math.ceil(args.graceful_timeout),
        # A worker silent this long is hung: gunicorn kills and replaces it.
        "timeout": max(10, math.ceil(4 * args.control_timeout)),
        "keepalive": 2,
        "proc_name": PROC_NAME,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": RuntimeLogger,
        "control_socket_disable": True,
        "when_ready": when_ready,
        "child_exit": child_exit,
    }


def watch_parent(parent_pid: int, interval: float) -> None:
    """Runs in the gunicorn master: SIGTERM ourselves once the runtime is gone."""
    stop = threading.Event()
    while not stop.wait(interval):
        if os.getppid() != parent_pid:
            log.warning("the runtime (pid %d) is gone; stopping the sidecar", parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    binds = list(dict.fromkeys([args.health_bind, args.metrics_bind]))
    for bind in binds:
        problem = bind_error(bind)
        if problem is not None:
            log.error("cannot bind %s: %s", bind, problem)
            return EXIT_PORT_IN_USE
    health_port = parse_bind(args.health_bind)[1]
    metrics_port = parse_bind(args.metrics_bind)[1]
    app = create_app(AppSettings(
        control_socket=args.control_socket, metrics_dir=args.metrics_dir,
        health_ports=frozenset({health_port}), metrics_ports=frozenset({metrics_port}),
        control_timeout=args.control_timeout, health_timeout=args.health_timeout))
    SidecarApplication(app, gunicorn_options(args, binds)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
