"""Provisioning mode on MicroPython's unix port: the node's own HTTP server (kc_portal, real
non-blocking sockets) driven by a real HTTP client (httpx), and Improv Wi-Fi over the process's
stdin/stdout (the board's USB serial), both ending in one atomically saved config.json."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from devtools.stack import free_port
from firmware import unixport
from firmware.mpnode import DEVICE_DIR, FAKES_DIR
from firmware.virtual import device_path

pytestmark = pytest.mark.micropython


def improv_rpc(cmd: int, data: bytes = b"") -> bytes:
    body = b"IMPROV" + bytes([1, 3, len(data) + 2, cmd, len(data)]) + data
    return body + bytes([sum(body) & 0xFF])


def improv_frames(raw: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while (i := raw.find(b"IMPROV", i)) >= 0:
        n = raw[i + 8]
        f = raw[i:i + 10 + n]
        assert f[-1] == sum(f[:-1]) & 0xFF, f
        out.append((f[7], f[9:9 + n]))
        i += 10 + n
    return out


class Node:
    """The unix-port process in provisioning mode; stdout collected by a thread."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None, script: str = "kc_prov_unix.py",
                 extra: dict[str, Any] | None = None, path: str = "") -> None:
        self.cfg = tmp / "config.json"
        if config is not None:
            self.cfg.write_text(json.dumps(config))
        self.port = free_port()
        self.dns_port = free_port()
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"config": str(self.cfg), "port": self.port, "timeout_ms": 60000,
                                    "dns_port": self.dns_port,
                                    "nets": {"site-ap": ["site-secret-1", -60], "backup": ["b4ckup-pass", -75]},
                                    **(extra or {})}))
        binary = unixport.binary()
        assert binary, "micropython unix port missing"
        env = {"MICROPYPATH": f".frozen:{DEVICE_DIR}:{FAKES_DIR}{path}", "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen([binary, str(FAKES_DIR / script), str(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
        self.out = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:  # the listening socket is up when a connect succeeds
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "portal did not start listening"
                time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self.out.extend(chunk)

    def improv(self, frame: bytes, want: int) -> list[tuple[int, bytes]]:
        """Send one frame on stdin; wait until `want` more Improv frames came back."""
        before = len(improv_frames(bytes(self.out)))
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame)
        self.proc.stdin.flush()
        deadline = time.monotonic() + 10
        while len(improv_frames(bytes(self.out))) < before + want:
            assert time.monotonic() < deadline, bytes(self.out)[-500:]
            time.sleep(0.02)
        return improv_frames(bytes(self.out))[before:]

    def result(self) -> dict[str, Any]:
        self.proc.wait(timeout=20)
        self.reader.join(timeout=5)
        for line in bytes(self.out).decode(errors="replace").splitlines():
            if line.startswith("UNIXJSON "):
                return json.loads(line[9:])
        raise AssertionError(bytes(self.out)[-2000:] + self.proc.stderr.read()[-2000:])  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def node(tmp_path: Path):  # noqa: ANN201
    nodes: list[Node] = []

    def start(config: dict[str, Any] | None, **kw: Any) -> Node:
        n = Node(tmp_path, config, **kw)
        nodes.append(n)
        return n
    yield start
    for n in nodes:
        n.kill()


def test_blank_node_provisioned_by_improv_then_the_page(node, tmp_path: Path) -> None:  # noqa: ANN001
    n = node(None)  # a factory-fresh node: no config.json at all
    with httpx.Client(base_url=n.base, timeout=10, follow_redirects=False) as http:
        r = http.get("/")
        assert r.status_code == 200 and '<form method="post" action="/save">' in r.text
        # Improv over the serial port: device info, a wrong password, then the right one
        info = n.improv(improv_rpc(3), 2)
        assert info[1] == (4, b"\x03\x1c\x0akotacerdas\x051.0.0\x04unix\x05setup")
        bad = n.improv(improv_rpc(1, b"\x07site-ap\x05wrong"), 4)
        assert bad[2:] == [(2, b"\x03"), (1, b"\x02")]  # unable to connect, ready again
        assert not n.cfg.exists()
        ok = n.improv(improv_rpc(1, b"\x07site-ap\x0dsite-secret-1"), 4)
        url = b"http://127.0.0.1/"
        # provisioned, and since the node still has no identity, the URL of the page for the rest
        assert ok[2:] == [(1, b"\x04"), (4, bytes([1, len(url) + 1, len(url)]) + url)]
        assert json.loads(n.cfg.read_text())["wifi_networks"] == [{"ssid": "site-ap", "password": "site-secret-1"}]
        # a phone's captive-portal probe is sent to the page
        r = http.get("/generate_204")
        assert r.status_code == 302 and r.headers["location"] == "http://192.168.4.1/"
        # a client that opens a connection and sends half a request does not block the server
        slow = socket.create_connection(("127.0.0.1", n.port))
        slow.sendall(b"GET / HTTP/1.0\r\n")
        t0 = time.monotonic()
        r = http.get("/")
        assert r.status_code == 200 and time.monotonic() - t0 < 2
        assert 'value="site-ap"' in r.text and "site-secret-1" not in r.text  # passwords never echoed
        # refused: a bad device id, a too-short WPA2 password, an oversized body (counted, nothing saved)
        before = n.cfg.read_bytes()
        form = {"ssid1": "site-ap", "pass1": "", "device": "bad id!", "city": "bogor", "kind": "water",
                "mqtt_host": "mqtt.kota.example", "mqtt_port": "8883"}
        r = http.post("/save", data=form)
        assert r.status_code == 400 and "device id must be" in r.text
        r = http.post("/save", data=dict(form, device="WTR-0007", ssid2="phone", pass2="short"))
        assert r.status_code == 400 and "8..63" in r.text
        r = http.post("/save", content=b"x" * 5000, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
        assert n.cfg.read_bytes() == before
        # the silent client is dropped after its 5 s deadline, while the server keeps answering
        deadline = time.monotonic() + 10
        while http.get("/status.json").json()["stats"].get("rejected_timeout", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        slow.close()
        # valid: the blank password keeps the one Improv stored; a second network with its own
        r = http.post("/save", data=dict(form, device="WTR-0007", ssid2="backup", pass2="b4ckup-pass"))
        assert r.status_code == 200 and "Saved" in r.text
    res = n.result()
    assert n.proc.returncode == 0 and res["outcome"] == "saved", res
    doc = json.loads(n.cfg.read_text())
    assert doc["wifi_networks"] == [{"ssid": "site-ap", "password": "site-secret-1"},
                                    {"ssid": "backup", "password": "b4ckup-pass"}]
    assert doc["mqtt"] == {"host": "mqtt.kota.example", "port": 8883} and doc["device"] == "WTR-0007"
    assert not (tmp_path / "config.json.tmp").exists()  # written via tmp + rename
    device_path()
    import kc_config  # the saved file passes the board's own validation (CPython this time)
    assert kc_config.validate_device(doc)["city"] == "bogor"
    st = res["stats"]
    assert st["rejected_invalid"] == 2 and st["rejected_too_large"] == 1 and st["rejected_timeout"] >= 1
    assert st["saved"] == 1 and res["improv_bad"] == 0 and res["wifi_attempts"] == ["site-ap", "site-ap"]
    assert res["feeds"] > 50  # the watchdog fed on every poll of the serving loop
    # the "provision" pattern: 100 ms on / 100 ms off (loop slices of 50 ms, a loaded machine)
    on = [b[0] - a[0] for a, b in zip(res["led"], res["led"][1:]) if a[1] == 1]
    assert len(on) >= 10 and sorted(on)[len(on) // 2] in range(90, 160), res["led"]


def test_identity_present_improv_alone_finishes(node) -> None:  # noqa: ANN001
    """A node deployed with its identity and broker but no Wi-Fi: Improv's credentials are all
    it needs, so it saves and leaves provisioning mode at once (no page step, empty URL)."""
    n = node({"kind": "air", "device": "AIR-0042", "city": "depok", "mqtt": {"host": "10.0.0.5", "port": 1883}})
    ok = n.improv(improv_rpc(1, b"\x06backup\x0bb4ckup-pass"), 4)
    assert ok[2:] == [(1, b"\x04"), (4, b"\x01\x00")]
    res = n.result()
    assert res["outcome"] == "saved" and res["stats"]["saved"] == 0
    doc = json.loads(n.cfg.read_text())
    assert doc["device"] == "AIR-0042" and doc["wifi_networks"] == [{"ssid": "backup", "password": "b4ckup-pass"}]


def test_captive_dns_answers_every_name_with_the_ap(node) -> None:  # noqa: ANN001
    """A phone on the AP resolves its connectivity-check host: the answer is the AP's address,
    so its HTTP probe reaches the page (queried with dnspython, an independent DNS client)."""
    n = node({"kind": "water", "device": "W-1", "wifi_networks": [{"ssid": "site-ap", "password": "site-secret-1"}]})
    for host in ("connectivitycheck.gstatic.com", "captive.apple.com", "www.msftconnecttest.com"):
        r = dns.query.udp(dns.message.make_query(host, "A"), "127.0.0.1", port=n.dns_port, timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert [a.address for a in r.answer[0]] == ["192.168.4.1"] and r.answer[0].ttl == 60
        assert str(r.question[0].name) == host + "."
    r = dns.query.udp(dns.message.make_query("example.org", "AAAA"), "127.0.0.1", port=n.dns_port, timeout=5)
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []  # no IPv6 on the AP: empty, not an error
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:  # garbage gets no reply, only a count
        u.sendto(b"\x12\x34\x81\x00garbage", ("127.0.0.1", n.dns_port))
    with httpx.Client(base_url=n.base, timeout=10) as http:
        deadline = time.monotonic() + 5
        while http.get("/status.json").json()["stats"].get("rejected_dns", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = http.post("/save", data={"ssid1": "site-ap", "kind": "water", "device": "W-1", "city": "depok"})
        assert r.status_code == 200
    res = n.result()
    assert res["stats"]["dns"] == 4 and res["stats"]["rejected_dns"] == 1


def test_board_provision_as_main_calls_it(node, tmp_path: Path) -> None:  # noqa: ANN001
    """kc_board.provision() itself (what main.py runs): the soft AP named after the device, WPA2
    with the configured ap_password, ProvisionIO trying Improv's credentials on the station, the
    watchdog started and fed, and machine.reset() once a config is saved (board stand-ins for
    `machine` and `network`; real sockets for the page and DNS; Improv on stdin/stdout)."""
    # only these two stand-ins: the unix port's own socket (real) must not be shadowed by esp32/socket.py
    (tmp_path / "fake_machine.py").write_text((FAKES_DIR / "esp32" / "machine.py").read_text())
    (tmp_path / "network.py").write_text((FAKES_DIR / "esp32" / "network.py").read_text())
    cfg = {"kind": "waste_bin", "device": "BIN-0042", "city": "bogor", "ap_password": "install-2026",
           "mqtt": {"host": "10.0.0.5", "port": 1883}}
    n = node(cfg, script="kc_prov_board_unix.py", extra={"good": {"site-ap": "site-secret-1"}},
             path=f":{tmp_path}")
    assert n.improv(improv_rpc(1, b"\x07site-ap\x05wrong"), 4)[2:] == [(2, b"\x03"), (1, b"\x02")]
    ok = n.improv(improv_rpc(1, b"\x07site-ap\x0dsite-secret-1"), 4)
    assert ok[2:] == [(1, b"\x04"), (4, b"\x01\x00")]  # identity was there: nothing left to ask
    res = n.result()
    assert res["why"] == "no Wi-Fi network configured" and res["reset"] is True
    assert res["ap"] == {"essid": "kc-setup-BIN-0042", "password": "install-2026", "authmode": 4, "active": False}
    assert res["attempts"] == ["site-ap", "site-ap"] and res["feeds"] >= 2  # started and fed (the run is short)
    doc = json.loads(n.cfg.read_text())
    assert doc["wifi_networks"] == [{"ssid": "site-ap", "password": "site-secret-1"}] and doc["device"] == "BIN-0042"


def test_board_without_ap_password_makes_one_and_a_fallback_window_ends(node, tmp_path: Path) -> None:  # noqa: ANN001
    """No `ap_password` in config.json: kc_board.provision makes one (12 symbols of the label
    alphabet), keeps it in config.json and prints it on the serial console, and the soft AP is
    WPA2 with it, never open. Entered as the node's own fallback (a valid config whose networks
    kept failing; Board.setup_window's request read back as main.py does) it serves for the
    bounded window only, feeding the watchdog, then resets back into the node with config.json
    otherwise untouched."""
    (tmp_path / "fake_machine.py").write_text((FAKES_DIR / "esp32" / "machine.py").read_text())
    (tmp_path / "network.py").write_text((FAKES_DIR / "esp32" / "network.py").read_text())
    cfg = {"kind": "air", "device": "AIR-0042", "city": "depok", "mqtt": {"host": "10.0.0.5", "port": 1883},
           "wifi_networks": [{"ssid": "site-ap", "password": "changed-by-it"}]}
    n = node(cfg, script="kc_prov_board_unix.py", path=f":{tmp_path}",
             extra={"why": "no Wi-Fi for 10 rounds", "window_ms": 1500,
                    "window_file": str(tmp_path / "setup_window.json")})
    with httpx.Client(base_url=n.base, timeout=10) as http:
        r = http.get("/")  # the page is served during the window, pre-filled
        assert r.status_code == 200 and 'value="site-ap"' in r.text and 'value="AIR-0042"' in r.text
    res = n.result()
    saved = json.loads(n.cfg.read_text())
    pw = saved.pop("ap_password")
    assert re.fullmatch(r"[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}", pw), pw
    assert saved == cfg  # nothing else written
    assert res["ap"] == {"essid": "kc-setup-AIR-0042", "password": pw, "authmode": 4, "active": False}
    assert f"setup AP kc-setup-AIR-0042 password {pw}" in bytes(n.out).decode()
    assert "provisioning: timeout" in bytes(n.out).decode()
    assert res["reset"] is True and 1500 <= res["ms"] < 8000, res  # the window, then back to the node
    assert res["why"] == "no Wi-Fi for 10 rounds" and not (tmp_path / "setup_window.json").exists()
    assert res["feeds"] >= 20  # fed on every 50 ms poll of the window
    # the next provisioning mode uses the stored one: the label stays right
    n2 = node(json.loads(n.cfg.read_text()), script="kc_prov_board_unix.py", path=f":{tmp_path}",
              extra={"why": "button", "window_ms": 300})
    assert n2.result()["ap"]["password"] == pw
