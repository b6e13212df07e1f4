"""ControlServer: the daemon's unix socket, `<data>/run/nexo.sock` (mode 0600).

A thread accepts connections and a thread per connection answers requests
with `handler(request) -> reply`. The handler reads shared runtime state and
asks actors with short timeouts; it never waits on the Supervisor's own
mailbox, so the socket keeps answering while the Supervisor boots or stops.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pykka

from nexo_actors.control.protocol import recv_frame, send_frame
from nexo_actors.errors import MessageDecodeError, NexoError
from nexo_actors.messages import (
    ActorState,
    ControlReply,
    ErrorReply,
    RequestUnion,
    decode_request,
    encode_control,
)

log = logging.getLogger(__name__)

Handler = Callable[[RequestUnion], ControlReply]


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 refuses connections under a burst
    # of CLI calls or sidecar probes; the kernel queue is cheap.
    request_queue_size = 128
    handler: Handler
    served = 0


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                data = recv_frame(sock)
            except (MessageDecodeError, OSError):
                return
            if data is None:
                return
            try:
                payload = encode_control(self.server.handler(decode_request(data)))
            except NexoError as exc:
                payload = encode_control(ErrorReply(message=str(exc)))
            except Exception as exc:
                log.exception("control request failed")
                payload = encode_control(ErrorReply(message=f"internal error: {exc!r}"))
            self.server.served += 1
            try:
                send_frame(sock, payload)
            except OSError:
                return


class ControlServer(pykka.ThreadingActor):
    def __init__(self, path: Path, handler: Handler) -> None:
        super().__init__()
        self.path = path
        self.handler = handler
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.started = time.monotonic()

    def on_start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # We hold the data dir's lock, so a socket file left here is stale.
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = _Server(str(self.path), _Connection)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.handler = self.handler
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="control-socket", daemon=True)
        self.thread.start()
        log.info("control socket listening", extra={"socket": str(self.path)})

    def on_stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.path.unlink(missing_ok=True)

    def state(self) -> ActorState:
        return ActorState(name="control-server", kind="ControlServer", pid=os.getpid(),
                          status="running" if self.server is not None else "stopped",
                          uptime_s=round(time.monotonic() - self.started, 3),
                          details={"socket": str(self.path),
                                   "served": self.server.served if self.server else 0})


