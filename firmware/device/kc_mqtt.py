# Minimal MQTT 3.1.1 client for the Kota Cerdas nodes (MicroPython and CPython).
#
# Written from the OASIS MQTT Version 3.1.1 specification (29 October 2014):
#   2.2 fixed header, 2.2.3 remaining length (7-bit varint, at most 4 bytes),
#   3.1 CONNECT (protocol name "MQTT", level 4, flags: username 0x80, password 0x40,
#       will retain 0x20, will QoS bits 3-4, will flag 0x04, clean session 0x02),
#   3.2 CONNACK (return codes 0..5), 3.3 PUBLISH (DUP 0x08, QoS bits 1-2, RETAIN 0x01),
#   3.4 PUBACK, 3.8 SUBSCRIBE (fixed header flags 0b0010), 3.9 SUBACK (0x80 = failure),
#   3.12/3.13 PINGREQ/PINGRESP, 3.14 DISCONNECT,
#   4.4 "When a Client reconnects with CleanSession set to 0, both the Client and Server
#       MUST re-send any unacknowledged PUBLISH Packets (where QoS > 0)" with DUP set.
# Incoming bytes are buffered and parsed whole-packet, so a TCP read that ends in the
# middle of a packet never desynchronises the stream.
import struct

try:
    import time
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython: emulate MicroPython's wrapping tick counter
    import time

    _monotonic = getattr(time, "monotonic")

    def _ticks_ms():
        return int(_monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTError(Exception):
    pass


def encode_len(n):
    if n < 0 or n > 268435455:
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_len(buf, pos):
    """(length, next_pos) or None when the buffer does not hold the whole varint yet."""
    mult = 1
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + i + 1
        mult *= 128
    raise MQTTError("malformed remaining length")


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def packet(first, body):
    return bytes([first]) + encode_len(len(body)) + body


def encode_connect(client_id, keepalive, clean_session=False, user=None, password=None,
                   will_topic=None, will_msg=None, will_qos=0, will_retain=False):
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _str(will_topic) + _str(will_msg)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, body)


def encode_publish(topic, msg, qos=0, retain=False, pid=0, dup=False):
    if isinstance(msg, str):
        msg = msg.encode()
    first = PUBLISH | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic)
    if qos:
        body += struct.pack("!H", pid)
    return packet(first, body + msg)


def encode_subscribe(pid, topics):
    body = struct.pack("!H", pid)
    for topic, qos in topics:
        body += _str(topic) + bytes([qos])
    return packet(SUBSCRIBE, body)


def encode_puback(pid):
    return bytes([PUBACK, 2]) + struct.pack("!H", pid)


def parse_packet(buf):
    """(first_byte, body, consumed) for the first whole packet in buf, or None."""
    if len(buf) < 2:
        return None
    r = decode_len(buf, 1)
    if r is None:
        return None
    n, start = r
    if len(buf) < start + n:
        return None
    return buf[0], bytes(buf[start:start + n]), start + n


def parse_publish(first, body):
    """(topic, msg, qos, pid, retain, dup) of a PUBLISH body."""
    tlen = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + tlen].decode()
    pos = 2 + tlen
    qos = (first >> 1) & 3
    pid = 0
    if qos:
        pid = struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
    return topic, body[pos:], qos, pid, bool(first & 1), bool(first & 8)


def _is_timeout(exc):
    a = exc.args[0] if exc.args else None
    # CPython: socket.timeout("timed out"); MicroPython: EAGAIN 11 / ETIMEDOUT 110 (116 on some libcs)
    return a is None or isinstance(a, str) or a in (11, 35, 110, 116)


class MQTTClient:
    """One connection at a time; the caller owns reconnect policy (see kc_node).

    Unacknowledged QoS 1 publishes stay in ``inflight`` across disconnects and are
    re-sent with DUP on the next connect, as 3.1.1 section 4.4 requires for
    clean_session=0; ``on_puback(pid)`` tells the caller when one is acknowledged.
    """

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 ssl=False, ssl_params=None, socket_factory=None, max_inflight=16,
                 retry_ms=0, max_packet=8192):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params or {}
        self.socket_factory = socket_factory
        self.max_inflight = max_inflight
        self.max_packet = max_packet
        # 0: resend only on reconnect (the spec's rule); >0: also after this long unacked
        self.retry_ms = retry_ms
        self.sock = None
        self.rbuf = bytearray()
        self.pid = 0
        self.inflight = {}   # pid -> [topic, msg, retain, sent_ticks]
        self.order = []      # pids in send order, so re-sends keep the original order
        self.will = None
        self.on_message = None
        self.on_puback = None
        self.last_tx = _ticks_ms()
        self.last_rx = _ticks_ms()
        self.ping_outstanding = False
        self.session_present = False
        self.stats = {"connects": 0, "published": 0, "acked": 0, "resent": 0, "received": 0, "pings": 0}

    # -- connection ------------------------------------------------------
    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def _open(self, timeout_s):
        if self.socket_factory is not None:
            return self.socket_factory(self.host, self.port, timeout_s)
        import socket
        addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
        s = socket.socket()
        s.settimeout(timeout_s)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            raise
        if self.ssl:
            return self._wrap_tls(s)
        return s

    def _wrap_tls(self, s):
        # ssl.SSLContext is the same API on MicroPython >= 1.23 (mbedTLS) and CPython, so the
        # virtual device exercises this exact path. cadata = the broker CA in DER.
        import ssl as _ssl
        ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        ca = self.ssl_params.get("cadata")
        # setattr: the ESP32 stubs lack SSLContext.verify_mode, which MicroPython documents and has
        try:
            if ca:
                setattr(ctx, "verify_mode", _ssl.CERT_REQUIRED)
                ctx.load_verify_locations(cadata=ca)
            else:
                # encrypted but unauthenticated: only for bench setups; deploy with a CA
                if hasattr(ctx, "check_hostname"):
                    setattr(ctx, "check_hostname", False)
                setattr(ctx, "verify_mode", _ssl.CERT_NONE)
            return ctx.wrap_socket(s, server_hostname=self.host)
        except Exception:
            s.close()
            raise

    def connect(self, clean_session=False, timeout_s=10):
        self.close()
        self.sock = self._open(timeout_s)
        self.rbuf = bytearray()
        w = self.will
        pkt = encode_connect(self.client_id, self.keepalive, clean_session, self.user, self.password,
                             w[0] if w else None, w[1] if w else None, w[3] if w else 0, w[2] if w else False)
        self._send(pkt)
        first, body = self._wait_for(CONNACK, int(timeout_s * 1000))
        if len(body) != 2:
            raise MQTTError("bad CONNACK")
        if body[1] != 0:
            self.close()
            raise MQTTError("connection refused: " + CONNACK_ERRORS.get(body[1], str(body[1])))
        self.session_present = bool(body[0] & 1)
        self.stats["connects"] += 1
        self.ping_outstanding = False
        self.last_rx = _ticks_ms()
        # 4.4: re-send every unacknowledged QoS 1 PUBLISH with DUP, in original order
        for pid in self.order:
            e = self.inflight[pid]
            self._send(encode_publish(e[0], e[1], 1, e[2], pid, dup=True))
            e[3] = _ticks_ms()
            self.stats["resent"] += 1
        return self.session_present

    def connected(self):
        return self.sock is not None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def disconnect(self):
        if self.sock is not None:
            try:
                self._send(bytes([DISCONNECT, 0]))
            except OSError:
                pass
        self.close()

    # -- I/O -------------------------------------------------------------
    def _send(self, data):
        s = self.sock
        if s is None:
            raise OSError("not connected")
        try:
            if hasattr(s, "sendall"):
                s.sendall(data)
            else:  # MicroPython TLS socket: write() may be partial
                mv = memoryview(data)
                while len(mv):
                    n = s.write(mv)
                    if n is None:
                        continue
                    mv = mv[n:]
        except OSError:
            self.close()
            raise
        self.last_tx = _ticks_ms()

    def _fill(self, timeout_ms):
        """Read what is available into rbuf; False on timeout. Raises OSError when closed."""
        s = self.sock
        if s is None:
            raise OSError("not connected")
        s.settimeout(timeout_ms / 1000)
        try:
            data = s.recv(512) if hasattr(s, "recv") else s.read(512)
        except OSError as e:
            if _is_timeout(e):
                return False
            self.close()
            raise
        if data is None:
            return False
        if not data:
            self.close()
            raise OSError("connection closed by broker")
        self.rbuf.extend(data)
        self.last_rx = _ticks_ms()
        return True

    def _next_packet(self):
        if len(self.rbuf) >= 2:
            r = decode_len(self.rbuf, 1)
            if r is not None and r[0] > self.max_packet:
                # a broker (or an attacker on the config topic) must not be able to exhaust the heap
                self.close()
                raise MQTTError("incoming packet of %d bytes exceeds %d" % (r[0], self.max_packet))
        p = parse_packet(self.rbuf)
        if p is None:
            return None
        first, body, used = p
        self.rbuf = self.rbuf[used:]
        return first, body

    def _wait_for(self, ptype, timeout_ms):
        start = _ticks_ms()
        while True:
            p = self._next_packet()
            while p is not None:
                if p[0] & 0xF0 == ptype:
                    return p
                self._dispatch(p[0], p[1])
                p = self._next_packet()
            left = timeout_ms - _ticks_diff(_ticks_ms(), start)
            if left <= 0:
                self.close()
                raise OSError("timeout waiting for packet 0x%02x" % ptype)
            self._fill(min(left, 500))

    def _dispatch(self, first, body):
        t = first & 0xF0
        if t == PUBLISH:
            topic, msg, qos, pid, retain, dup = parse_publish(first, body)
            if qos == 1:
                self._send(encode_puback(pid))
            self.stats["received"] += 1
            if self.on_message is not None:
                self.on_message(topic, msg, retain)
        elif t == PUBACK:
            pid = struct.unpack("!H", body[:2])[0]
            if pid in self.inflight:
                del self.inflight[pid]
                self.order.remove(pid)
                self.stats["acked"] += 1
                if self.on_puback is not None:
                    self.on_puback(pid)
        elif t == PINGRESP:
            self.ping_outstanding = False
        elif t == SUBACK:
            if body[2:3] == b"\x80":
                raise MQTTError("subscription refused")
        # anything else (PUBREC for QoS 2 we never request) is ignored

    # -- operations ------------------------------------------------------
    def _next_pid(self):
        while True:
            self.pid = self.pid % 65535 + 1
            if self.pid not in self.inflight:
                return self.pid

    def can_publish(self):
        return len(self.inflight) < self.max_inflight

    def publish(self, topic, msg, retain=False, qos=0):
        """Send; for QoS 1 returns the packet id, tracked until its PUBACK."""
        if qos == 0:
            self._send(encode_publish(topic, msg, 0, retain))
            self.stats["published"] += 1
            return 0
        if qos != 1:
            raise ValueError("QoS 2 is not supported")
        pid = self._next_pid()
        self.inflight[pid] = [topic, msg, retain, _ticks_ms()]
        self.order.append(pid)
        # tracked before sending: if the send fails the message is re-sent on reconnect
        self._send(encode_publish(topic, msg, 1, retain, pid))
        self.stats["published"] += 1
        return pid

    def subscribe(self, topic, qos=1, timeout_ms=5000):
        pid = self._next_pid()
        self._send(encode_subscribe(pid, [(topic, qos)]))
        first, body = self._wait_for(SUBACK, timeout_ms)
        if body[2:3] == b"\x80":
            raise MQTTError("subscription refused: " + topic)
        return body[2]

    def ping(self):
        self._send(bytes([PINGREQ, 0]))
        self.ping_outstanding = True
        self.stats["pings"] += 1

    def poll(self, timeout_ms=0):
        """Process incoming packets, keepalive and timed re-sends. Raises OSError on a dead link."""
        if self.sock is None:
            raise OSError("not connected")
        self._fill(max(timeout_ms, 1))
        p = self._next_packet()
        while p is not None:
            self._dispatch(p[0], p[1])
            p = self._next_packet()
        now = _ticks_ms()
        ka = self.keepalive * 1000
        if ka:
            if self.ping_outstanding and _ticks_diff(now, self.last_rx) > ka:
                self.close()
                raise OSError("keepalive: no PINGRESP")
            if not self.ping_outstanding and _ticks_diff(now, self.last_tx) >= ka // 2:
                self.ping()
        if self.retry_ms:
            for pid in self.order:
                e = self.inflight[pid]
                if _ticks_diff(now, e[3]) > self.retry_ms:
                    self._send(encode_publish(e[0], e[1], 1, e[2], pid, dup=True))
                    e[3] = now
                    self.stats["resent"] += 1
