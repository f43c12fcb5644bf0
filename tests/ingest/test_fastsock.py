"""The buffered socket serves paho's small reads from one large read, and reports what it holds."""

from __future__ import annotations

import socket

import pytest

from ingest.fastsock import BufferedSocket, install
from kotacerdas.mqtt import connect, make_client


def test_small_reads_come_from_one_buffer():
    a, b = socket.socketpair()
    a.setblocking(False)
    s = BufferedSocket(a)
    b.sendall(b"\x30\x05hello\x30\x03abc")
    assert s.recv(1) == b"\x30" and s.pending() == 11
    assert s.recv(1) == b"\x05" and s.recv(5) == b"hello"
    assert s.recv(100) == b"\x30\x03abc" and s.pending() == 0
    with pytest.raises(BlockingIOError):
        s.recv(1)  # nothing buffered, nothing on the wire: same as the raw non-blocking socket
    assert s.fileno() == a.fileno()
    b.close()
    assert s.recv(1) == b""  # EOF passes through
    a.close()


def test_install_wraps_a_connected_client(settings):
    c = make_client(settings.mqtt)
    connect(c, settings.mqtt)
    try:
        assert install(c) and isinstance(c._sock, BufferedSocket)
        assert not install(c)  # never wrapped twice
        got = []
        c.on_message = lambda cl, u, m: got.append(m.payload)
        c.subscribe(f"{settings.mqtt.topic_root}/fs", qos=1)
        import time
        time.sleep(0.3)
        for i in range(200):
            c.publish(f"{settings.mqtt.topic_root}/fs", b"x%d" % i, qos=1)
        deadline = time.monotonic() + 10
        while len(got) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"x%d" % i for i in range(200)]
    finally:
        c.disconnect()
        c.loop_stop()
