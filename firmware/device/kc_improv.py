# Improv Wi-Fi over serial: a browser (ESP Web Tools) or phone app sends Wi-Fi credentials
# over the USB serial port, no USB tooling or config file needed.
# Protocol: https://www.improv-wifi.com/serial/ (improv-wifi/website src/serial.md):
#   frame = "IMPROV" | version (1) | type | length | data[length] | checksum
#   checksum = low byte of the sum of every preceding byte of the frame (header included; as
#   the reference SDKs compute it; some senders add a trailing "\n", which is skipped here)
#   types: 0x01 current state, 0x02 error state (device -> client), 0x03 RPC command
#   (client -> device), 0x04 RPC result (device -> client)
#   RPC data = command | data length | data; results are length-prefixed UTF-8 strings
#   commands: 0x01 send Wi-Fi settings (ssid_len ssid pw_len pw), 0x02 request current state,
#   0x03 device information, 0x04 scanned networks (one result per network, then an empty one)
#   states: 0x02 ready (authorized), 0x03 provisioning, 0x04 provisioned
#   errors: 0x00 none, 0x01 invalid RPC packet, 0x02 unknown RPC command, 0x03 unable to
#   connect, 0xFF unknown
HEADER = b"IMPROV"
VERSION = 1
T_STATE, T_ERROR, T_RPC, T_RESULT = 1, 2, 3, 4
S_READY, S_PROVISIONING, S_PROVISIONED = 2, 3, 4
E_NONE, E_INVALID, E_UNKNOWN_CMD, E_CONNECT, E_UNKNOWN = 0, 1, 2, 3, 0xFF
C_WIFI, C_STATE, C_INFO, C_SCAN = 1, 2, 3, 4
MAX_BUF = 300  # one frame is at most 6 + 3 + 255 + 1 bytes


def checksum(b):
    return sum(b) & 0xFF


def frame(ptype, data):
    body = HEADER + bytes([VERSION, ptype, len(data)]) + bytes(data)
    return body + bytes([checksum(body)])


def strings(items):
    out = bytearray()
    for s in items:
        b = s.encode() if isinstance(s, str) else bytes(s)
        out.append(len(b))
        out.extend(b)
    return bytes(out)


def result(cmd, items):
    data = strings(items)
    return frame(T_RESULT, bytes([cmd, len(data)]) + data)


def parse_wifi(payload):
    """(ssid, password) from the data of RPC 0x01; ValueError if the lengths do not add up."""
    if len(payload) < 2:
        raise ValueError("short wifi settings")
    n = payload[0]
    if 1 + n + 1 > len(payload):
        raise ValueError("ssid length beyond data")
    ssid = bytes(payload[1:1 + n])
    m = payload[1 + n]
    if 2 + n + m != len(payload):
        raise ValueError("password length does not match")
    return ssid.decode(), bytes(payload[2 + n:]).decode()


class Parser:
    """Byte stream -> frames. Anything before "IMPROV" (REPL echo, log lines) is skipped;
    a frame with a bad checksum or version is reported, not fatal."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        """Append bytes; return [(type, data)] for good frames, (None, reason) for bad ones."""
        self.buf.extend(data)
        out = []  # type: list
        while True:
            i = self.buf.find(HEADER)
            if i < 0:
                # keep a tail that might be the start of a header split across reads
                keep = len(HEADER) - 1
                if len(self.buf) > keep:
                    self.buf = self.buf[-keep:]
                return out
            if i:
                self.buf = self.buf[i:]
            if len(self.buf) < 9:
                return out
            n = self.buf[8]
            if len(self.buf) < 10 + n:
                return out
            f = self.buf[:10 + n]
            self.buf = self.buf[10 + n:]
            if f[6] != VERSION:
                out.append((None, "version"))
            elif checksum(f[:9 + n]) != f[9 + n]:
                out.append((None, "checksum"))
            else:
                out.append((f[7], bytes(f[9:9 + n])))
            if len(self.buf) > MAX_BUF:
                self.buf = self.buf[-MAX_BUF:]


class ImprovService:
    """The device side. `write(bytes)` goes to the serial port; `connect(ssid, password)` tries
    the network and returns the URL to show the user (str, "" for none) or None on failure;
    `info` is (firmware, version, chip, device name); `scan()` -> [(ssid, rssi, secured)]."""

    def __init__(self, write, connect, info, scan=None):
        self.write = write
        self.connect = connect
        self.info = info
        self.scan = scan
        self.parser = Parser()
        self.state = S_READY
        self.error = E_NONE
        self.provisioned = None  # (ssid, password) once a connection succeeded
        self.url = ""
        self.bad = 0

    def _state(self, s):
        self.state = s
        self.write(frame(T_STATE, bytes([s])))

    def _error(self, e):
        self.error = e
        self.write(frame(T_ERROR, bytes([e])))

    def feed(self, data):
        for ptype, body in self.parser.feed(data):
            if ptype is None:
                self.bad += 1
                self._error(E_INVALID)
            elif ptype == T_RPC:
                self._rpc(body)
            # state/error/result frames only travel to the client: ignore echoes

    def _rpc(self, body):
        if len(body) < 2 or body[1] != len(body) - 2:
            self.bad += 1
            self._error(E_INVALID)
            return
        cmd, payload = body[0], body[2:]
        self._error(E_NONE)  # the spec: clear the error state on every RPC
        if cmd == C_WIFI:
            try:
                ssid, password = parse_wifi(payload)
            except (ValueError, UnicodeError):
                self.bad += 1
                self._error(E_INVALID)
                return
            self._state(S_PROVISIONING)
            url = self.connect(ssid, password)
            if url is None:
                self._error(E_CONNECT)
                self._state(S_READY)
                return
            self.provisioned = (ssid, password)
            self.url = url
            self._state(S_PROVISIONED)
            self.write(result(C_WIFI, [url] if url else []))
        elif cmd == C_STATE:
            self.write(frame(T_STATE, bytes([self.state])))
            if self.state == S_PROVISIONED:  # the spec: repeat the provisioning result
                self.write(result(C_WIFI, [self.url] if self.url else []))
        elif cmd == C_INFO:
            self.write(result(C_INFO, self.info))
        elif cmd == C_SCAN and self.scan is not None:
            for ssid, rssi, secured in self.scan():
                self.write(result(C_SCAN, [ssid, str(rssi), "YES" if secured else "NO"]))
            self.write(result(C_SCAN, []))
        else:
            self._error(E_UNKNOWN_CMD)
