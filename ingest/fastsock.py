"""Two shortcuts around paho-mqtt's per-packet overhead, used by the ingest service.

1. A read-buffered socket for paho's network thread.

paho-mqtt 2.x reads every packet with several ``recv`` calls (1 byte of command, the
remaining length byte by byte, then the body) and goes back to ``select`` after each
packet: five system calls per telemetry message. This wrapper reads up to 256 KiB
at once and serves paho's small reads from memory. It exposes ``pending()``, which
paho's loop already consults (for TLS sockets) to skip waiting in ``select`` while
buffered bytes remain, so nothing stays stuck in the buffer.

2. :func:`ack_many`: the PUBACKs of a whole batch as one queued write instead of one
Python packet object, one wake-up byte and one ``send`` per message. The bytes on the
wire are exactly what ``Client.ack`` sends (``0x40 0x02 <packet id>``, MQTT 3.1.1 3.4 /
MQTT 5.0 3.4.2.1: a success PUBACK without properties may have remaining length 2).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

_PUBACK = struct.Struct("!BBH")
PUBACK = 0x40

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


def ack_many(client: Any, mids: list[int]) -> None:
    """Acknowledge QoS 1 messages by packet id, in one write (falls back to ``client.ack``)."""
    if not mids:
        return
    queue = getattr(client, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    queue(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, m) for m in mids]), 0, 0)
