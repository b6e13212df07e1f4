"""The sidecar's Flask app: liveness, readiness and Prometheus metrics (SPEC §7).

| endpoint       | port    | answer                                                  |
|----------------|---------|---------------------------------------------------------|
| `GET /health`  | health  | `200 ok` if the runtime answers a ping within           |
|                |         | `health_timeout`; `503` with the reason otherwise       |
| `GET /ready`   | health  | the runtime's ReadyReply as JSON, 200 or 503; no answer |
|                |         | within `control_timeout` is itself a 503 reason         |
|                |         | (`runtime unresponsive`)                                |
| `GET /metrics` | metrics | Prometheus text from every process's metric files       |

Each endpoint answers only on its own port (404 elsewhere), so exposing the
metrics port to a scraper never exposes readiness, and the other way round.

The app holds no secret and no runtime state: every answer is computed from
one control-socket request with a short timeout, or from the multiprocess
directory. So it keeps answering, truthfully, while the runtime is wedged,
stopped with SIGSTOP, or gone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from nexo_actors.control.client import request as control_request
from nexo_actors.errors import (
    ControlBusyError,
    ControlError,
    DaemonNotRunningError,
    MessageDecodeError,
    NexoError,
)
from nexo_actors.messages import ControlRequest, PingRequest, ReadyReply, ReadyRequest, ReplyUnion

log = logging.getLogger(__name__)

UNRESPONSIVE = "runtime unresponsive"
NOT_RUNNING = "runtime not running"
# Pause between connects while the control socket's backlog is full.
CONNECT_RETRY = 0.01


@dataclass(frozen=True)
class AppSettings:
    """Everything the app needs; built from the command line of serve.py."""

    control_socket: Path
    metrics_dir: Path
    health_ports: frozenset[int]
    metrics_ports: frozenset[int]
    control_timeout: float
    health_timeout: float


def ask_runtime(sock: Path, message: ControlRequest, timeout: float) -> ReplyUnion:
    """One control request that gets the whole `timeout` to be answered.

    A unix socket refuses a connect at once (EAGAIN) while its accept backlog
    is full, which happens to a busy runtime as well as to a stopped one; so
    the connect is retried until the deadline instead of reporting the
    runtime unresponsive after a few microseconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ControlError(f"nexo did not answer within {timeout:g}s on {sock}")
        try:
            return control_request(sock, message, timeout=remaining)
        except ControlBusyError:
            time.sleep(min(CONNECT_RETRY, max(0.0, deadline - time.monotonic())))


def _unavailable(exc: BaseException) -> str:
    """The runtime's side of a failed control request, in the words /ready uses."""
    if isinstance(exc, DaemonNotRunningError):
        return NOT_RUNNING
    if isinstance(exc, MessageDecodeError):
        return f"runtime answered something unreadable: {exc}"
    return UNRESPONSIVE


def ready_document(reply: ReadyReply) -> dict[str, Any]:
    """The /ready body: the runtime's answer, as plain JSON (no type tag)."""
    return {
        "ready": reply.ready,
        "agents_running": reply.agents_running,
        "agents_total": reply.agents_total,
        "broker": reply.broker,
        "reasons": [{"subsystem": r.subsystem, "detail": r.detail} for r in reply.reasons],
        "degraded": [{"subsystem": r.subsystem, "detail": r.detail} for r in reply.degraded],
    }


def unready_document(detail: str) -> dict[str, Any]:
    """The /ready body when the runtime itself did not answer."""
    return {"ready": False, "agents_running": None, "agents_total": None, "broker": "unknown",
            "reasons": [{"subsystem": "runtime", "detail": detail}], "degraded": []}


def create_app(settings: AppSettings) -> Flask:
    """The WSGI app gunicorn serves; see the module docstring for what it answers."""
    app = Flask("nexo_actors.sidecar")
    # Logged once per change per process, not once per probe.
    last_problem: list[str] = [""]

    def only_on(ports: frozenset[int]) -> None:
        try:
            port = int(request.environ.get("SERVER_PORT") or 0)
        except ValueError:
            port = 0
        if port not in ports:
            abort(404)

    def note(problem: str) -> None:
        if problem != last_problem[0]:
            if problem:
                log.warning("the runtime is not answering the sidecar: %s", problem)
            else:
                log.info("the runtime answers the sidecar again")
            last_problem[0] = problem

    @app.get("/health")
    def health() -> Response:
        only_on(settings.health_ports)
        try:
            ask_runtime(settings.control_socket, PingRequest(), settings.health_timeout)
        except (NexoError, OSError) as exc:
            detail = _unavailable(exc)
            note(detail)
            return Response(detail + "\n", status=503, mimetype="text/plain",
                            headers={"Cache-Control": "no-store"})
        note("")
        return Response("ok\n", status=200, mimetype="text/plain", headers={"Cache-Control": "no-store"})

    @app.get("/ready")
    def ready() -> Response:
        only_on(settings.health_ports)
        try:
            reply = ask_runtime(settings.control_socket, ReadyRequest(), settings.control_timeout)
        except (NexoError, OSError) as exc:
            # ControlError: no answer in time; DaemonNotRunningError: no socket
            # or nobody listening; OSError: anything else the socket says.
            detail = _unavailable(exc)
            note(detail)
            return _json(unready_document(detail), 503)
        note("")
        if not isinstance(reply, ReadyReply):
            return _json(unready_document(f"unexpected answer {type(reply).__name__}"), 503)
        return _json(ready_document(reply), 200 if reply.ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        only_on(settings.metrics_ports)
        # A fresh registry per scrape, as prometheus_client's multiprocess
        # mode prescribes: the collector reads every process's files now.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(settings.metrics_dir))  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), status=200, mimetype=None,
                        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    return app


def _json(document: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(document, separators=(",", ":")) + "\n", status=status,
                    mimetype="application/json", headers={"Cache-Control": "no-store"})
