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


# Transport (the resilience ideas of Peter Hinch's mqtt_as, written anew): the socket is
# non-blocking from the start and every wait is a select.poll slice of at most SLICE_MS with a
# deadline, calling `idle` (the node feeds the watchdog there). MicroPython's TLS socket has no
# settimeout() and its handshake runs inside the first read/write, so the same write loop that
# sends CONNECT also drives the handshake. Reads go into one preallocated buffer (readinto).
SLICE_MS = 50
# "try again" errnos: EAGAIN, EINPROGRESS, ETIMEDOUT (MicroPython/Linux numbering), BSD EAGAIN,
# and 118/119, which lwIP on the ESP32 returns while a non-blocking connect or write is pending
BUSY_ERRNOS = (11, 35, 110, 115, 118, 119)
POLLIN = 1
POLLOUT = 4
try:
    import select as _select
except ImportError:  # the WebAssembly port: stand-in sockets only, no waiting needed
    _select = None  # type: ignore[assignment]


def _busy(exc):
    """True for "would block" (MicroPython errno, CPython BlockingIOError or ssl want-read/write)."""
    name = type(exc).__name__
    if name in ("SSLWantReadError", "SSLWantWriteError", "BlockingIOError"):
        return True
    a = exc.args[0] if exc.args else None
    return a in BUSY_ERRNOS


class MQTTClient:
    """One connection at a time; the caller owns reconnect policy (see kc_node).

    Unacknowledged QoS 1 publishes stay in ``inflight`` across disconnects and are
    re-sent with DUP on the next connect, as 3.1.1 section 4.4 requires for
    clean_session=0; ``on_puback(pid)`` tells the caller when one is acknowledged.
    Every failure of the link (socket, TLS, DNS, protocol) surfaces as OSError or MQTTError.
    """

    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 ssl=False, ssl_params=None, socket_factory=None, max_inflight=16,
                 retry_ms=0, max_packet=8192, io_timeout_ms=10000, idle=None):
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
        self.io_timeout_ms = io_timeout_ms
        self.idle = idle  # called in every wait slice (watchdog)
        # 0: resend only on reconnect (the spec's rule); >0: also after this long unacked
        self.retry_ms = retry_ms
        self.sock = None
        self._poll = None
        self._rb = bytearray(512)
        self._rmv = memoryview(self._rb)
        self.rbuf = bytearray()
        self.addr_cache = {}
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
        self.stats = {"connects": 0, "published": 0, "acked": 0, "resent": 0, "received": 0, "pings": 0,
                      "dns_cached": 0}

    # -- connection ------------------------------------------------------
    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def _resolve(self, socket):
        # DNS on a flaky uplink fails more often than the broker does: keep the last answer
        key = (self.host, self.port)
        try:
            addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
            self.addr_cache[key] = addr
            return addr
        except Exception as e:  # noqa: BLE001  (OSError, or IndexError on an empty answer)
            if key in self.addr_cache:
                self.stats["dns_cached"] += 1
                return self.addr_cache[key]
            raise OSError("dns: %r" % (e,)) from None

    def _wait(self, sock, event, ms):
        """Wait up to ms for event on sock; feeds `idle` first. No poller: return at once."""
        if self.idle is not None:
            self.idle()
        p = self._poll
        if p is None or ms <= 0:
            return True
        try:
            p.register(sock, event)
        except (TypeError, ValueError, OSError):  # a stand-in socket without ioctl/fileno
            self._poll = None
            return True
        return bool(p.poll(ms))

    def _open(self, timeout_ms):
        if self.socket_factory is not None:
            self._poll = None
            return self.socket_factory(self.host, self.port, timeout_ms / 1000)
        import socket
        if self.idle is not None:
            self.idle()
        addr = self._resolve(socket)
        s = socket.socket()
        self._poll = _select.poll() if _select is not None else None
        try:
            s.setblocking(False)
            try:
                s.connect(addr)
            except OSError as e:
                if not _busy(e):
                    raise
            start = _ticks_ms()
            while not self._wait(s, POLLOUT, SLICE_MS):
                if _ticks_diff(_ticks_ms(), start) > timeout_ms:
                    raise OSError(110, "tcp connect timeout")
            if hasattr(s, "getsockopt") and hasattr(socket, "SO_ERROR"):  # CPython reports the result here
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, "tcp connect failed")
            if self.ssl:
                s = self._wrap_tls(s, timeout_ms, start)
            return s
        except BaseException:
            s.close()
            raise

    def _wrap_tls(self, s, timeout_ms, start):
        # ssl.SSLContext is the same API on MicroPython >= 1.23 (mbedTLS) and CPython.
        # cadata = the broker CA in DER. No do_handshake_on_connect: on a non-blocking socket
        # the handshake is driven by our own wait loop (CPython: do_handshake(); MicroPython:
        # inside the first write, i.e. the CONNECT packet's write loop).
        import ssl as _ssl
        ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        ca = self.ssl_params.get("cadata")
        # setattr: the ESP32 stubs lack SSLContext.verify_mode, which MicroPython documents and has
        if ca:
            setattr(ctx, "verify_mode", _ssl.CERT_REQUIRED)
            ctx.load_verify_locations(cadata=ca)
        else:
            # encrypted but unauthenticated: only for bench setups; deploy refuses --tls without a CA
            if hasattr(ctx, "check_hostname"):
                setattr(ctx, "check_hostname", False)
            setattr(ctx, "verify_mode", _ssl.CERT_NONE)
        t = ctx.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)
        if hasattr(t, "do_handshake"):
            while True:
                try:
                    t.do_handshake()
                    break
                except OSError as e:
                    if not _busy(e):
                        raise
                if _ticks_diff(_ticks_ms(), start) > timeout_ms:
                    raise OSError(110, "tls handshake timeout")
                self._wait(t, POLLIN | POLLOUT, SLICE_MS)
        return t

    def connect(self, clean_session=False, timeout_s=10):
        self.close()
        try:
            self.sock = self._open(int(timeout_s * 1000))
        except (OSError, MQTTError):
            raise
        except Exception as e:  # noqa: BLE001  mbedTLS reports a bad CA/certificate as ValueError
            raise MQTTError("connect: %r" % (e,)) from None
        self.rbuf = bytearray()
        w = self.will
        pkt = encode_connect(self.client_id, self.keepalive, clean_session, self.user, self.password,
                             w[0] if w else None, w[1] if w else None, w[3] if w else 0, w[2] if w else False)
        try:
            self._send(pkt, int(timeout_s * 1000))
            first, body = self._wait_for(CONNACK, int(timeout_s * 1000))
        except (OSError, MQTTError):
            raise
        except Exception as e:  # noqa: BLE001  (MicroPython: TLS verification fails inside write)
            self.close()
            raise MQTTError("connect: %r" % (e,)) from None
        if len(body) != 2:
            self.close()
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
            entry = self.inflight[pid]
            self._send(encode_publish(entry[0], entry[1], 1, entry[2], pid, dup=True))
            entry[3] = _ticks_ms()
            self.stats["resent"] += 1
        return self.session_present

    def connected(self):
        return self.sock is not None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:  # noqa: BLE001  closing a broken TLS socket may raise anything
                pass
        self.sock = None
        self._poll = None

    def disconnect(self):
        if self.sock is not None:
            try:
                self._send(bytes([DISCONNECT, 0]), 1000)
            except Exception:  # noqa: BLE001
                pass
        self.close()

    # -- I/O -------------------------------------------------------------
    def _write(self, s, mv):
        """Bytes written, or None when the socket would block."""
        try:
            if hasattr(s, "write"):
                return s.write(mv)   # MicroPython (plain and TLS), CPython SSLSocket, the fakes
            return s.send(mv)        # CPython plain socket
        except OSError as e:
            if _busy(e):
                return None
            raise

    def _read(self, s):
        """Bytes read into self._rb (0 = closed by the peer), or None when nothing is there."""
        try:
            if hasattr(s, "readinto"):
                return s.readinto(self._rmv)  # MicroPython: None when it would block
            return s.recv_into(self._rmv)
        except OSError as e:
            if _busy(e):
                return None
            raise

    def _send(self, data, timeout_ms=None):
        s = self.sock
        if s is None:
            raise OSError("not connected")
        deadline = self.io_timeout_ms if timeout_ms is None else timeout_ms
        start = _ticks_ms()
        mv = memoryview(data)
        try:
            while len(mv):
                n = self._write(s, mv)
                if n:
                    mv = mv[n:]
                    continue
                if _ticks_diff(_ticks_ms(), start) > deadline:
                    raise OSError(110, "write timeout")
                self._wait(s, POLLOUT | POLLIN, SLICE_MS)
        except BaseException:
            self.close()
            raise
        self.last_tx = _ticks_ms()

    def _fill(self, timeout_ms):
        """Read what is available into rbuf; False on timeout. Raises OSError when closed."""
        s = self.sock
        if s is None:
            raise OSError("not connected")
        try:
            n = self._read(s)
            if n is None and timeout_ms > 0:
                # TLS may hold decrypted bytes poll() cannot see: read first, then wait
                self._wait(s, POLLIN, timeout_ms)
                n = self._read(s)
        except BaseException:
            self.close()
            raise
        if n is None:
            return False
        if not n:
            self.close()
            raise OSError("connection closed by broker")
        self.rbuf.extend(self._rmv[:n])
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
            self._fill(min(left, SLICE_MS))

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
