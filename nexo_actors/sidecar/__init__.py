"""The health and metrics sidecar (SPEC §7): gunicorn running a small Flask app.

    app.py      the Flask app: /health and /ready on the health port, /metrics
                on the metrics port; it knows the runtime only through the
                control socket and the Prometheus multiprocess directory
    serve.py    the gunicorn application and `python -m nexo_actors.sidecar.serve`,
                the command the runtime launches
    process.py  SidecarProcess: the runtime's side; launches, supervises and
                stops the gunicorn master and its workers

This `__init__` holds only what both sides share (the bind check) and imports
nothing heavy on purpose: the sidecar process imports it first, and it must
not pull in the runtime's metric catalogue (that would make every gunicorn
worker write metric files of its own).
"""

from __future__ import annotations

import socket

from nexo_actors.config.load import parse_bind

__all__ = ["EXIT_PORT_IN_USE", "bind_error"]

# Exit code of the sidecar when a bind address is taken (EADDRINUSE's number on Linux).
EXIT_PORT_IN_USE = 98


def bind_error(bind: str) -> str | None:
    """None if `host:port` can be bound now the way gunicorn binds it; else why not."""
    host, port = parse_bind(bind)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {bind}: {exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # gunicorn sets SO_REUSEADDR too: connections left in TIME_WAIT by a
        # previous sidecar do not count as "in use", a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def probe_host(host: str) -> str:
    """Where to connect for a bind address (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")
