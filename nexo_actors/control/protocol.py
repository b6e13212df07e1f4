"""Framing on the control socket: a 4-byte big-endian length, then msgpack."""

from __future__ import annotations

import socket
import struct

from nexo_actors.errors import MessageDecodeError

HEADER = struct.Struct(">I")
# A state dump of many agents fits easily; anything bigger is a bug or an attack.
MAX_FRAME = 16 << 20


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(HEADER.pack(len(payload)) + payload)


def recv_frame(sock: socket.socket) -> bytes | None:
    """One frame, or None when the peer closed the connection cleanly."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise MessageDecodeError(f"control frame of {size} bytes is over the {MAX_FRAME} limit")
    body = _recv_exact(sock, size)
    if body is None:
        raise MessageDecodeError("control connection closed in the middle of a frame")
    return body


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            if remaining == size and not chunks:
                return None
            raise MessageDecodeError("control connection closed in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
