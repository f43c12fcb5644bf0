"""A read-buffered socket for paho's network thread.

paho-mqtt 2.x reads every packet with several ``recv`` calls (1 byte of command, the
remaining length byte by byte, then the body) and goes back to ``select`` after each
packet: five system calls per telemetry message. This wrapper reads up to 256 KiB
at once and serves paho's small reads from memory. It exposes ``pending()``, which
paho's loop already consults (for TLS sockets) to skip waiting in ``select`` while
buffered bytes remain, so nothing stays stuck in the buffer.
"""

from __future__ import annotations

import socket
from typing import Any

_CHUNK = 256 * 1024


class BufferedSocket:
    def __init__(self, sock: Any):
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(n, _CHUNK))  # raises BlockingIOError like the raw socket
            if len(data) <= n:
                return data
            self._buf, self._pos = data, 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)


def install(client: Any) -> bool:
    """Wrap the client's current plain TCP socket (call from on_connect: the socket is new on
    every (re)connect, and nothing after CONNACK has been read yet). TLS sockets are left alone."""
    sock = getattr(client, "_sock", None)
    if isinstance(sock, socket.socket) and not getattr(client, "_ssl", False):
        client._sock = BufferedSocket(sock)
        return True
    return False
