# The installer's web page while the node is in provisioning mode (its own Wi-Fi access
# point): a form for Wi-Fi networks, device id, city, kind and MQTT host, checked with the
# same rules as config.json (kc_config.validate_device) and saved atomically. A small HTTP/1.0
# server on non-blocking sockets and select.poll: one slow or silent client cannot stop it,
# the watchdog is fed on every poll, every refused request is counted with its reason.
# A DNS responder on the same poll answers every name with the AP's address, so a phone's
# connectivity probe lands on the page and the phone opens it by itself (captive portal).
import json
import select
import socket

import kc_config
import kc_schema

MAX_REQUEST = 4096  # the form is < 1 KB; anything bigger is not ours
CONN_TIMEOUT_MS = 5000
MAX_CONNS = 4
MAX_NETWORKS = 3
BUSY = (11, 115, 119)  # EAGAIN, EINPROGRESS, and lwIP's 119 on the ESP32
# The IP the ESP32's soft AP gives itself; captive-portal probes (Android /generate_204, Apple
# /hotspot-detect.html, Windows /connecttest.txt) get a redirect here, so phones open the form.
AP_IP = "192.168.4.1"


def dns_answer(q, ip):
    """The reply to DNS query `q` (RFC 1035 4.1): every A question is answered with `ip`
    (TTL 60 s), any other type gets an empty NOERROR answer. ValueError if `q` is not a
    plain standard query with one question."""
    if len(q) < 17 or q[2] & 0xF8 or q[4:6] != b"\x00\x01":  # QR, opcode 0; QDCOUNT 1
        raise ValueError("not a standard query")
    i = 12
    while q[i]:
        if q[i] >= 0x40 or i + q[i] + 1 >= len(q):  # compression or a label past the end
            raise ValueError("bad name")
        i += q[i] + 1
    end = i + 5
    if end > len(q):
        raise ValueError("short question")
    qtype = (q[i + 1] << 8) | q[i + 2]
    qclass = (q[i + 3] << 8) | q[i + 4]
    a = qtype == 1 and qclass == 1
    # flags: QR, AA, RD copied from the query, RA; RCODE 0
    head = bytes([q[0], q[1], 0x84 | (q[2] & 0x01), 0x80, 0, 1, 0, 1 if a else 0, 0, 0, 0, 0])
    out = head + bytes(q[12:end])
    if a:
        # the name as a pointer to the question (offset 12), A, IN, TTL 60, 4 bytes of address
        out += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([int(x) for x in ip.split(".")])
    return out


def url_decode(s):
    """application/x-www-form-urlencoded value -> str ('+' is space, %XX bytes, UTF-8)."""
    b = s.replace("+", " ").encode()
    out = bytearray()
    i = 0
    while i < len(b):
        c = b[i]
        if c == 0x25 and i + 2 < len(b):
            out.append(int(b[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out).decode()


def parse_form(body):
    out = {}
    for part in body.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out[url_decode(k)] = url_decode(v)
    return out


def esc(s):
    s = str(s)
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
        s = s.replace(a, b)
    return s


def check_network(ssid, password):
    """IEEE 802.11: an SSID is 1..32 octets; a WPA2-PSK passphrase is 8..63 printable ASCII
    characters or 64 hex digits (802.11i-2004 Annex H.4); empty = an open network."""
    if not 1 <= len(ssid.encode()) <= 32:
        raise kc_config.ConfigError("SSID must be 1..32 bytes")
    if password == "":
        return
    if len(password) == 64:
        try:
            int(password, 16)
            return
        except ValueError:
            pass
    try:
        kc_config.check_passphrase(password)
    except kc_config.ConfigError:
        raise kc_config.ConfigError("Wi-Fi password must be 8..63 ASCII characters (or empty for an open network)") from None


def apply_form(current, form):
    """The new config.json document from the stored one (possibly {}) and the form; the merged
    config must pass kc_config.validate_device. A blank password keeps the stored one of the
    same SSID (passwords are never sent back to the page). Raises ConfigError."""
    doc = dict(current) if isinstance(current, dict) else {}
    old = {}  # type: dict
    for w in (doc.get("wifi_networks") or []) + [doc.get("wifi") or {}]:
        if isinstance(w, dict) and w.get("ssid"):
            old.setdefault(w["ssid"], w.get("password") or "")
    nets = []
    for i in range(1, MAX_NETWORKS + 1):
        ssid = form.get("ssid%d" % i, "").strip()
        if not ssid:
            continue
        pw = form.get("pass%d" % i, "")
        if pw == "" and ssid in old:
            pw = old[ssid]
        check_network(ssid, pw)
        nets.append({"ssid": ssid, "password": pw})
    if not nets:
        raise kc_config.ConfigError("at least one Wi-Fi network is needed")
    doc["wifi_networks"] = nets
    doc["wifi"] = nets[0]
    for key in ("device", "city", "kind"):
        v = form.get(key, "").strip()
        if v:
            doc[key] = v
    mqtt = dict(doc.get("mqtt") or {})
    host = form.get("mqtt_host", "").strip()
    if host:
        if len(host) > 253 or " " in host or "/" in host:
            raise kc_config.ConfigError("MQTT host must be a host name or address")
        mqtt["host"] = host
    port = form.get("mqtt_port", "").strip()
    if port:
        try:
            mqtt["port"] = int(port)
        except ValueError:
            raise kc_config.ConfigError("mqtt.port must be 1..65535") from None
    doc["mqtt"] = mqtt
    kc_config.validate_device(doc)
    return doc


def page(doc, msg="", ok=False):
    doc = doc if isinstance(doc, dict) else {}
    m = doc.get("mqtt") or {}
    nets = [w for w in (doc.get("wifi_networks") or [doc.get("wifi") or {}]) if isinstance(w, dict)]
    rows = []
    for i in range(1, MAX_NETWORKS + 1):
        ssid = nets[i - 1].get("ssid", "") if i <= len(nets) else ""
        rows.append('<p>Wi-Fi %d: <input name="ssid%d" value="%s" maxlength="32"> password '
                    '<input name="pass%d" type="password" placeholder="%s" maxlength="64"></p>'
                    % (i, i, esc(ssid), i, "unchanged" if ssid else ""))
    kinds = "".join('<option%s>%s</option>' % (" selected" if k == doc.get("kind") else "", esc(k))
                    for k in sorted(kc_schema.KINDS))
    note = ('<p class="%s">%s</p>' % ("ok" if ok else "err", esc(msg))) if msg else ""
    return ('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width">'
            '<title>Kota Cerdas node setup</title></head><body><h1>Node setup</h1>%s'
            '<form method="post" action="/save">%s'
            '<p>Device id <input name="device" value="%s" maxlength="64"></p>'
            '<p>City <input name="city" value="%s" maxlength="32"> Kind <select name="kind">%s</select></p>'
            '<p>MQTT host <input name="mqtt_host" value="%s"> port <input name="mqtt_port" value="%s"></p>'
            '<p><button>Save and restart</button></p></form></body></html>'
            % (note, "".join(rows), esc(doc.get("device", "")), esc(doc.get("city", "")), kinds,
               esc(m.get("host", "")), esc(m.get("port", ""))))


class Portal:
    def __init__(self, cfg_path, feed=None, ticks_ms=None, ticks_diff=None, port=80, bind="0.0.0.0",
                 ap_ip=AP_IP, dns_port=53):
        import time
        self.cfg_path = cfg_path
        self.feed = feed
        self.ticks_ms = ticks_ms or time.ticks_ms
        self.ticks_diff = ticks_diff or time.ticks_diff
        self.port = port
        self.bind = bind
        self.ap_ip = ap_ip
        self.saved = False
        self.stats = {"requests": 0, "saved": 0}
        self.conns = {}  # fileno-less ports: keyed by the socket object itself
        self.sock = None
        self.dns_port = dns_port  # None: no DNS responder
        self.dns = None
        self.poller = select.poll()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(self.bind, self.port)[0][-1])
        s.listen(MAX_CONNS)
        s.setblocking(False)
        self.sock = s
        self.poller.register(s, select.POLLIN)
        if self.dns_port is not None:
            d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            d.bind(socket.getaddrinfo(self.bind, self.dns_port)[0][-1])
            d.setblocking(False)
            self.dns = d
            self.poller.register(d, select.POLLIN)

    def close(self):
        for c in list(self.conns):
            self._drop(c)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.dns is not None:
            self.dns.close()
            self.dns = None

    def _reject(self, why):
        k = "rejected_" + why
        self.stats[k] = self.stats.get(k, 0) + 1

    def _drop(self, c):
        try:
            self.poller.unregister(c)
        except (OSError, ValueError, KeyError):
            pass
        try:
            c.close()
        except OSError:
            pass
        self.conns.pop(c, None)

    def poll(self, ms=50):
        """Serve for up to `ms`; returns True once a valid config has been saved."""
        if self.feed is not None:
            self.feed()
        for ev in self.poller.poll(ms):
            s = ev[0]
            if s is self.sock:
                self._accept()
            elif s is self.dns:
                self._dns()
            elif s in self.conns:
                self._read(s)
        now = self.ticks_ms()
        for c in list(self.conns):
            if self.ticks_diff(now, self.conns[c][1]) > CONN_TIMEOUT_MS:
                self._reject("timeout")
                self._drop(c)
        return self.saved

    def _dns(self):
        d = self.dns
        if d is None:
            return
        try:
            q, addr = d.recvfrom(512)
        except OSError:
            return
        try:
            d.sendto(dns_answer(q, self.ap_ip), addr)
            self.stats["dns"] = self.stats.get("dns", 0) + 1
        except (ValueError, IndexError):
            self._reject("dns")
        except OSError:
            pass

    def _accept(self):
        sock = self.sock
        if sock is None:
            return
        try:
            c, _addr = sock.accept()
        except OSError:
            return
        if len(self.conns) >= MAX_CONNS:
            self._reject("busy")
            c.close()
            return
        c.setblocking(False)
        self.conns[c] = [bytearray(), self.ticks_ms()]
        self.poller.register(c, select.POLLIN)

    def _read(self, c):
        buf = self.conns[c][0]
        try:
            d = c.recv(512)
        except OSError as e:
            if e.args and e.args[0] in BUSY:
                return
            self._drop(c)
            return
        if not d:
            self._drop(c)
            return
        buf.extend(d)
        if len(buf) > MAX_REQUEST:
            self._reject("too_large")
            self._respond(c, 413, "text/plain", "request too large")
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            head = bytes(buf[:end]).decode()
        except UnicodeError:
            self._reject("bad_request")
            self._respond(c, 400, "text/plain", "bad request")
            return
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        length = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                try:
                    length = int(v.strip())
                except ValueError:
                    length = -1
        if len(parts) != 3 or length < 0:
            self._reject("bad_request")
            self._respond(c, 400, "text/plain", "bad request")
            return
        if len(buf) < end + 4 + length:
            return  # the body is still coming
        self.stats["requests"] += 1
        self._route(c, parts[0], parts[1], bytes(buf[end + 4:end + 4 + length]))

    def _route(self, c, method, path, body):
        if method == "GET" and path == "/":
            self._respond(c, 200, "text/html", page(kc_config.load_json(self.cfg_path, {})))
        elif method == "GET" and path == "/status.json":
            doc = kc_config.load_json(self.cfg_path, {}) or {}
            nets = [w.get("ssid") for w in doc.get("wifi_networks") or [] if isinstance(w, dict)]
            self._respond(c, 200, "application/json", json.dumps(
                {"device": doc.get("device"), "kind": doc.get("kind"), "networks": nets, "saved": self.saved,
                 "stats": self.stats}))
        elif method == "POST" and path == "/save":
            current = kc_config.load_json(self.cfg_path, {})
            try:
                form = parse_form(body.decode())
                doc = apply_form(current, form)
            except (kc_config.ConfigError, ValueError, UnicodeError) as e:
                self._reject("invalid")
                self._respond(c, 400, "text/html", page(current, "Not saved: %s" % e))
                return
            kc_config.save_json(self.cfg_path, doc)
            self.saved = True
            self.stats["saved"] += 1
            self._respond(c, 200, "text/html", page(doc, "Saved. The node restarts and joins %s."
                                                    % doc["wifi_networks"][0]["ssid"], ok=True))
        elif method == "GET":
            self._respond(c, 302, "text/plain", "", "Location: http://%s/\r\n" % self.ap_ip)
        else:
            self._reject("method")
            self._respond(c, 405, "text/plain", "method not allowed")

    def _respond(self, c, code, ctype, text, extra=""):
        body = text.encode()
        reason = {200: "OK", 302: "Found", 400: "Bad Request", 405: "Method Not Allowed",
                  413: "Payload Too Large"}[code]
        head = ("HTTP/1.0 %d %s\r\nContent-Type: %s; charset=utf-8\r\nContent-Length: %d\r\n%s"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n" % (code, reason, ctype, len(body), extra))
        self._send_all(c, head.encode() + body)
        self._drop(c)

    def _send_all(self, c, data):
        """Write with a deadline on a non-blocking socket, the watchdog fed while waiting."""
        mv = memoryview(data)
        t0 = self.ticks_ms()
        while mv:
            try:
                n = c.send(mv)
            except OSError as e:
                if not (e.args and e.args[0] in BUSY):
                    return
                n = 0
            if n:
                mv = mv[n:]
                continue
            if self.ticks_diff(self.ticks_ms(), t0) > CONN_TIMEOUT_MS:
                self._reject("write_timeout")
                return
            if self.feed is not None:
                self.feed()
            p = select.poll()
            p.register(c, select.POLLOUT)
            p.poll(50)
