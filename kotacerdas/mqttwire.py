"""A small batching MQTT client for the services' hot paths (plain TCP): ingest's consumer,
the gateway's consumer and its forwarder.

Why not paho here: paho reads and dispatches one packet at a time (a callback, a
message object and a lock per message) and sends one PUBACK per ``ack`` call. At
tens of thousands of QoS 1 messages a second that is most of the ingest's CPU. This
client reads up to 1 MiB at once, parses every complete packet in it, hands the
PUBLISHes to the service as **one list per read**, and sends a batch's PUBACKs (or a
window of PUBLISHes, :meth:`WireClient.publish_many`) as one write. It speaks only what
the services need (OASIS MQTT 3.1.1): CONNECT/CONNACK (3.1, 3.2),
PUBLISH QoS 0/1 in and out (3.3), PUBACK (3.4), SUBSCRIBE/SUBACK (3.8, 3.9),
PINGREQ/PINGRESP (3.12, 3.13), DISCONNECT (3.14). Subscriptions are granted at most
QoS 1, so the broker never starts a QoS 2 exchange with us.

``protocol=5`` speaks just enough MQTT 5.0 for a publisher (the gateway's forwarder wants
the PUBACK reason code, 3.4.2.1, to count what an upstream ACL refused): CONNECT and
PUBLISH with empty properties (3.1.2.11, 3.3.2.3); of the CONNACK's properties only Maximum
Packet Size is kept (3.2.2.3.6: a bigger packet gets the connection dropped); a v5 client does
not subscribe. TLS stays with paho: an ``ssl`` socket cannot be read by one
thread while another writes to it.

Threads: a reader thread owns (re)connecting and parsing; a keep-alive thread sends
PINGREQ and drops a silent connection (it must not share the reader's thread: the
reader blocks in ``on_messages`` while the service applies backpressure); ``ack`` and
``publish`` may be called from any thread (writes are serialised by a lock). Every
connection has a generation number; acknowledgements carry the generation their
messages arrived on and are dropped if the connection has changed since (a packet id
of a dead connection may name another message on the new one; the broker redelivers
the unacknowledged ones instead).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from typing import Callable

from kotacerdas.backoff import Backoff
from kotacerdas.errors import Disposition, TransportError, mqtt_connack_disposition
from kotacerdas.settings import MqttSettings

log = logging.getLogger("kotacerdas.mqttwire")

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0

_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_READ = 1 << 20
# reconnect backoff (full jitter, kotacerdas.backoff): the gateway's paho path uses the same numbers
RECONNECT_BASE_S, RECONNECT_CAP_S = 0.5, 5.0

# dead letters we published and the broker has not acknowledged yet (resent on reconnect)
_MAX_OUTGOING = 10_000

CONNACK_ERRORS = {
    1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorised",
}

# (topic, payload, packet id, qos) for each PUBLISH in one read; with ``retain_flag`` a fifth
# element, the RETAIN bit (3.3.1.3: 1 on a delivery of a retained message at subscription time)
Messages = list[tuple]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(b: bytes) -> bytes:
    return _U16.pack(len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, *, clean: bool, keepalive_s: int, username: str | None = None,
                   password: str | None = None, protocol: int = 4) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username else 0) | (0x40 if username and password is not None else 0)
    props = b"\x00" if protocol == 5 else b""  # v5: no properties (a clean, non-expiring session)
    body = _str(b"MQTT") + bytes([protocol, flags]) + _U16.pack(keepalive_s) + props + _str(client_id.encode())
    if username:
        body += _str(username.encode())
        if password is not None:
            body += _str(password.encode())
    return packet(CONNECT, body)


def subscribe_packet(mid: int, topics: list[tuple[str, int]]) -> bytes:
    return packet(SUBSCRIBE, _U16.pack(mid) + b"".join(_str(t.encode()) + bytes([q]) for t, q in topics))


def publish_packet(topic: str, payload: bytes, qos: int, mid: int, dup: bool = False, retain: bool = False,
                   protocol: int = 4) -> bytes:
    first = PUBLISH | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    props = b"\x00" if protocol == 5 else b""
    return packet(first, _str(topic.encode()) + (_U16.pack(mid) if qos else b"") + props + payload)


def pubacks(mids: list[int]) -> bytes:
    # 0x40 0x02 <packet id>: MQTT 3.1.1 section 3.4
    pack = _PUBACK.pack
    return b"".join([pack(PUBACK, 2, m) for m in mids])


# MQTT 5.0 property identifiers by the width of their value (section 2.2.2.2), so a CONNACK's
# properties can be walked to the one we read (Maximum Packet Size, 3.2.2.3.6)
_PROP_BYTE = frozenset((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A))
_PROP_U16 = frozenset((0x13, 0x21, 0x22, 0x23))
_PROP_U32 = frozenset((0x02, 0x11, 0x18, 0x27))
_PROP_STR = frozenset((0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F))  # string or binary data
MAXIMUM_PACKET_SIZE = 0x27


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(b) or shift > 21:
            raise ProtocolError("bad variable byte integer")
        n |= (b[i] & 0x7F) << shift
        i += 1
        if not b[i - 1] & 0x80:
            return n, i
        shift += 7


def connack_properties(body: bytes) -> dict[int, int]:
    """The integer properties of an MQTT 5 CONNACK ``body`` (after flags and reason code):
    identifier -> value (strings and pairs skipped). Raises ProtocolError if they do not parse."""
    total, i = _read_varint(body, 0)
    end, out = i + total, {}
    if end > len(body):
        raise ProtocolError("CONNACK properties longer than the packet")
    while i < end:
        pid = body[i]
        i += 1
        if pid in _PROP_BYTE:
            out[pid], i = body[i], i + 1
        elif pid in _PROP_U16:
            out[pid], i = _U16.unpack_from(body, i)[0], i + 2
        elif pid in _PROP_U32:
            out[pid], i = struct.unpack_from("!I", body, i)[0], i + 4
        elif pid == 0x0B:
            out[pid], i = _read_varint(body, i)
        elif pid in _PROP_STR:
            i += 2 + _U16.unpack_from(body, i)[0]
        elif pid == 0x26:  # user property: a string pair
            i += 2 + _U16.unpack_from(body, i)[0]
            i += 2 + _U16.unpack_from(body, i)[0]
        else:
            raise ProtocolError(f"unknown CONNACK property 0x{pid:02x}")
    if i != end:
        raise ProtocolError("CONNACK properties overrun")
    return out


def publish_overhead(topic: str, protocol: int = 4) -> int:
    """Bytes a QoS 1 PUBLISH adds to its payload (fixed header with a 4-byte length, topic, packet id,
    v5's empty properties): what a payload must leave free under a broker's maximum packet size."""
    return 1 + 4 + 2 + len(topic.encode()) + 2 + (1 if protocol == 5 else 0)


def parse(buf: bytes, start: int = 0, retain_flag: bool = False) -> tuple[list[tuple[int, bytes]], Messages, int]:
    """Split ``buf[start:]`` into complete packets (MQTT 3.1.1 PUBLISHes).

    Returns (control packets as (first byte, body), PUBLISHes as (topic, payload, id, qos)
    (``retain_flag``: (topic, payload, id, qos, retain)), offset of the first incomplete packet). The PUBLISH branch is inlined: it is the per-message
    cost of the whole ingest.
    """
    ctrl: list[tuple[int, bytes]] = []
    msgs: Messages = []
    n = len(buf)
    i = start
    while i + 1 < n:
        first = buf[i]
        # remaining length, 1-4 bytes (3.1.1 section 2.2.3)
        j = i + 1
        rl = buf[j] & 0x7F
        if buf[j] & 0x80:
            shift = 7
            while True:
                j += 1
                if j >= n:
                    return ctrl, msgs, i
                rl |= (buf[j] & 0x7F) << shift
                if not buf[j] & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
        body = j + 1
        end = body + rl
        if end > n:
            break
        if first & 0xF0 == PUBLISH:
            tl = (buf[body] << 8) | buf[body + 1]
            p = body + 2 + tl
            topic = buf[body + 2:p].decode("utf-8", "replace")  # never raise: a redelivered bad topic would loop
            qos = (first >> 1) & 3
            if qos:
                mid = (buf[p] << 8) | buf[p + 1]
                p += 2
            else:
                mid = 0
            if retain_flag:
                msgs.append((topic, buf[p:end], mid, qos, first & 1))
            else:
                msgs.append((topic, buf[p:end], mid, qos))
        else:
            ctrl.append((first, buf[body:end]))
        i = end
    return ctrl, msgs, i


class ProtocolError(TransportError):
    """The broker broke the protocol (a transport failure: retried on a new connection)."""


def _read_packet(sock: socket.socket, deadline: float, peer: str) -> bytes:
    """One whole packet during the handshake, as [first byte, body[0], body[1], ...] (the
    remaining length left out): a 3.1.1 CONNACK is 4 bytes, a v5 one carries properties."""
    def take(n: int) -> bytes:
        got = b""
        while len(got) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK from {peer}")
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(n - len(got))
            if not chunk:
                raise TransportError("connection closed before CONNACK")
            got += chunk
        return got

    first = take(1)
    rl, shift = 0, 0
    while True:
        b = take(1)[0]
        rl |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 21:
            raise ProtocolError("remaining length longer than 4 bytes")
    return first + b"\x00" + take(rl)  # index 2 = flags, 3 = return/reason code, as before


class WireClient:
    """See the module docstring. ``on_connect(session_present)`` runs on the reader thread right
    after CONNACK (subscribe from there); ``on_messages(generation, messages)`` runs on the reader
    thread once per read and may block (backpressure: while it blocks, nothing is read).
    ``on_puback([(mid, reason_code), ...])`` runs on the reader thread with the PUBACKs of one read."""

    def __init__(self, settings: MqttSettings, client_id: str, *, clean: bool = False,
                 on_connect: Callable[[bool], None] | None = None,
                 on_disconnect: Callable[[str], None] | None = None,
                 on_messages: Callable[[int, Messages], None] | None = None,
                 on_subscribed: Callable[[list[int]], None] | None = None,
                 on_puback: Callable[[list[tuple[int, int]]], None] | None = None,
                 retain_flag: bool = False, protocol: int = 4, name: str = "mqtt"):
        if settings.tls_ca:
            raise ValueError("WireClient speaks plain TCP; use paho for TLS")
        if protocol not in (4, 5):
            raise ValueError("protocol is 4 (MQTT 3.1.1) or 5 (MQTT 5.0, publishing only)")
        self.on_puback = on_puback
        self.retain_flag = retain_flag
        self.protocol = protocol
        self.name = name
        self.settings = settings
        self.client_id = client_id
        self.clean = clean
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_messages = on_messages
        self.on_subscribed = on_subscribed
        self.generation = 0
        self.max_qos = 1
        self.max_packet_size: int | None = None  # the broker's limit from the last CONNACK (v5), None: none said
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._last_send = 0.0
        self._last_recv = 0.0
        self._ping_out = False
        self._busy = False
        self._next_mid = 0
        self._outgoing: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)

    # ------------------------------------------------------------ public API

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect (raises ConnectionError / TimeoutError / OSError like ``kotacerdas.mqtt.connect``),
        then keep the connection up from a reader thread until :meth:`stop`."""
        self._connect(timeout_s)
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        self._pinger = threading.Thread(target=self._ping_loop, name=f"{self.name}-ping", daemon=True)
        self._pinger.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        sock = self._sock
        if sock is not None:
            try:
                with self._send_lock:
                    sock.sendall(bytes([DISCONNECT, 0]))
            except OSError:
                pass
            self._close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        self._send(subscribe_packet(self._mid(), [(t, min(q, self.max_qos)) for t, q in topics]))

    def ack(self, generation: int, mids: list[int]) -> bool:
        """PUBACK these packet ids in one write, if they belong to the current connection."""
        if not mids:
            return False
        data = pubacks(mids)
        # checked under the lock that also guards a reconnect's swap of socket and generation:
        # ids of the old connection sent on a new one would acknowledge other messages
        with self._send_lock:
            sock = self._sock
            if generation != self.generation or sock is None:
                return False
            try:
                sock.sendall(data)
            except OSError:
                return False  # the reader notices the broken connection and reconnects
            self._last_send = time.monotonic()
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Fire-and-track: QoS 1 messages are kept until PUBACK and resent after a reconnect."""
        qos = min(qos, 1)
        mid = self._mid() if qos else 0
        if qos:
            with self._send_lock:
                if len(self._outgoing) >= _MAX_OUTGOING:
                    old, _ = self._outgoing.popitem(last=False)
                    log.warning("unacknowledged outgoing publish dropped", extra={"mid": old})
                self._outgoing[mid] = (topic, payload)
        try:
            self._send(publish_packet(topic, payload, qos, mid, protocol=self.protocol))
        except OSError:
            pass  # resent on reconnect

    def publish_many(self, items: list[tuple[str, bytes, bool]]) -> tuple[int, list[int]]:
        """QoS 1 PUBLISHes of (topic, payload, retain) as one write, NOT kept for resending:
        the caller keeps them until every PUBACK (``on_puback``) came back and sends them again
        after a reconnect. Returns (generation, packet ids); raises OSError when not connected."""
        with self._send_lock:
            sock = self._sock
            if sock is None:
                raise OSError("not connected")
            mids = []
            nxt = self._next_mid
            for _ in items:
                nxt = nxt % 65535 + 1
                mids.append(nxt)
            self._next_mid = nxt
            proto = self.protocol
            data = b"".join([publish_packet(t, p, 1, m, retain=r, protocol=proto) for (t, p, r), m in zip(items, mids)])
            sock.sendall(data)
            self._last_send = time.monotonic()
            return self.generation, mids

    # ------------------------------------------------------------ connection

    def _mid(self) -> int:
        with self._send_lock:
            self._next_mid = self._next_mid % 65535 + 1
            return self._next_mid

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise OSError("not connected")
        with self._send_lock:
            sock.sendall(data)
            self._last_send = time.monotonic()

    def _connect(self, timeout_s: float) -> None:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pw = s.password.get_secret_value() if s.password else None
            sock.sendall(connect_packet(self.client_id, clean=self.clean, keepalive_s=s.keepalive_s,
                                        username=s.username, password=pw, protocol=self.protocol))
            head = _read_packet(sock, time.monotonic() + timeout_s, f"{s.host}:{s.port}")
        except BaseException:
            sock.close()
            raise
        if head[0] != CONNACK or len(head) < 4:
            sock.close()
            raise ProtocolError(f"expected CONNACK, got {head[:4].hex()}")
        if head[3] != 0:
            sock.close()
            code = head[3]
            raise TransportError(
                f"MQTT connect refused: {CONNACK_ERRORS.get(code, code) if self.protocol == 4 else hex(code)}",
                refusal=mqtt_connack_disposition(code, mqtt5=self.protocol == 5))
        try:  # v5: the broker may announce the largest packet it accepts (it drops us for a bigger one)
            props = connack_properties(head[4:]) if self.protocol == 5 else {}
        except (ProtocolError, IndexError, struct.error):
            sock.close()
            raise ProtocolError(f"malformed CONNACK properties: {head[4:36].hex()}") from None
        self.max_packet_size = props.get(MAXIMUM_PACKET_SIZE)
        sock.settimeout(None)  # blocking; the reader waits in select, so keep-alive still runs
        session_present = bool(head[2] & 1)
        with self._send_lock:
            self._sock = sock
            self.generation += 1
            self._last_send = self._last_recv = time.monotonic()
            self._ping_out = False
            pending = list(self._outgoing.items())
        self._connected.set()
        self._backoff.reset()
        for mid, (topic, payload) in pending:  # 3.1.1 section 4.4: resend unacknowledged publishes
            self._send(publish_packet(topic, payload, 1, mid, dup=True, protocol=self.protocol))
        if self.on_connect is not None:
            self.on_connect(session_present)

    def _close(self) -> bool:
        with self._send_lock:
            sock, self._sock = self._sock, None
        was = self._connected.is_set()
        self._connected.clear()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        return was

    def _drop(self, why: str) -> None:
        if self._close() and self.on_disconnect is not None:
            self.on_disconnect(why)

    def _loop(self) -> None:
        buf = b""
        while not self._stopping.is_set():
            sock = self._sock
            if sock is None:
                buf = b""
                try:
                    self._connect(10.0)
                except (OSError, ConnectionError, TimeoutError, ProtocolError) as exc:
                    wait = self._backoff.delay()
                    # refused for our credentials or client id: retried too, but an operator must act
                    fatal = isinstance(exc, TransportError) and exc.disposition is Disposition.FATAL
                    (log.error if fatal else log.warning)("MQTT connect failed; retrying",
                                                          extra={"error": str(exc)[:200], "retry_in_s": round(wait, 3)})
                    self._stopping.wait(wait)
                continue
            try:
                r, _, _ = select.select([sock], [], [], 1.0)
                if r:
                    data = sock.recv(_READ)
                    if not data:
                        raise ConnectionError("connection closed by broker")
                    self._last_recv = time.monotonic()
                    buf = buf + data if buf else data
                    ctrl, msgs, used = parse(buf, 0, self.retain_flag)
                    buf = buf[used:]
                    acks = []
                    for first, body in ctrl:
                        if first & 0xF0 == PUBACK:
                            # v5: a reason code follows the id unless it is 0 (success), 3.4.2.1
                            acks.append((_U16.unpack_from(body)[0], body[2] if len(body) > 2 else 0))
                        else:
                            self._control(first, body)
                    if acks:
                        self._pubacks(acks)
                    if msgs and self.on_messages is not None:
                        self._busy = True  # unread PINGRESPs while we wait are not a dead broker
                        try:
                            self.on_messages(self.generation, msgs)
                        finally:
                            self._busy = False
                            self._last_recv = time.monotonic()
            except (OSError, ConnectionError, ProtocolError, ValueError) as exc:
                if self._stopping.is_set():
                    break
                log.warning("MQTT connection lost; reconnecting", extra={"error": str(exc)[:200]})
                self._drop(str(exc))

    def _ping_loop(self) -> None:
        ka = self.settings.keepalive_s
        while ka and not self._stopping.wait(min(1.0, ka / 4)):
            if self._sock is None:
                continue
            now = time.monotonic()
            try:
                if self._ping_out and not self._busy and now - self._last_recv > ka * 1.5:
                    raise ConnectionError(f"no answer from the broker for {ka * 1.5:.0f} s")
                if now - self._last_send >= ka / 2:
                    self._ping_out = True
                    self._send(bytes([PINGREQ, 0]))
            except (OSError, ConnectionError) as exc:
                if not self._stopping.is_set():
                    log.warning("MQTT keep-alive failed; reconnecting", extra={"error": str(exc)[:200]})
                    self._drop(str(exc))

    def _pubacks(self, acks: list[tuple[int, int]]) -> None:
        """All PUBACKs of one read: (packet id, reason code)."""
        if self._outgoing:
            with self._send_lock:
                for mid, _ in acks:
                    self._outgoing.pop(mid, None)
        if self.on_puback is not None:
            self.on_puback(acks)

    def _control(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == PINGRESP:
            self._ping_out = False
        elif kind == SUBACK:
            codes = list(body[2:])
            if any(c == 0x80 for c in codes):
                log.error("broker refused a subscription", extra={"return_codes": codes})
            if self.on_subscribed is not None:
                self.on_subscribed(codes)
        else:
            log.warning("unexpected MQTT packet ignored", extra={"type": hex(first)})
