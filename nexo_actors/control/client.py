"""The CLI (and sidecar) side of the control socket.

Never hangs: connecting and every read have a timeout, and a missing or
refused socket becomes DaemonNotRunningError naming the socket path.
"""

from __future__ import annotations

import socket
from pathlib import Path

from nexo_actors.control.protocol import recv_frame, send_frame
from nexo_actors.errors import ControlBusyError, ControlError, DaemonNotRunningError
from nexo_actors.messages import ControlRequest, ErrorReply, ReplyUnion, decode_reply, encode_control


def request(sock_path: Path, message: ControlRequest, timeout: float = 5.0,
            config_hint: str = "") -> ReplyUnion:
    """Send one request and return the daemon's reply; ErrorReply becomes ControlError."""
    where = f" on {config_hint}" if config_hint else ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(sock_path))
            except FileNotFoundError:
                raise DaemonNotRunningError(f"no running nexo{where}: {sock_path} not found") from None
            except ConnectionRefusedError:
                raise DaemonNotRunningError(
                    f"no running nexo{where}: nothing listens on {sock_path} (left by a stopped "
                    "instance)") from None
            except BlockingIOError:
                raise ControlBusyError(f"nexo{where} is not accepting control connections right "
                                       f"now (its backlog on {sock_path} is full); try again"
                                       ) from None
            send_frame(sock, encode_control(message))
            data = recv_frame(sock)
    except TimeoutError:
        raise ControlError(f"nexo{where} did not answer within {timeout:g}s on {sock_path}") from None
    except PermissionError:
        raise ControlError(f"not allowed to use {sock_path} (mode 0600: run as the daemon's user)"
                           ) from None
    if data is None:
        raise ControlError(f"nexo{where} closed the control connection without answering")
    reply = decode_reply(data)
    if isinstance(reply, ErrorReply):
        raise ControlError(reply.message)
    return reply
