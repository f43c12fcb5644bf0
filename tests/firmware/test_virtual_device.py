"""The firmware main loop under CPython with fake hardware against the real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from firmware.virtual import VirtualDevice
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings


KOTACERDAS = str(Path(sys.executable).with_name("kotacerdas"))


class Collector:
    """Persistent-session QoS 1 subscriber that survives a broker restart."""

    def __init__(self, settings: Settings, pattern: str, client_id: str):
        self.msgs: list[tuple[str, bytes, float]] = []
        self.lock = threading.Lock()
        self.c = make_client(settings.mqtt, client_id, v5=False, clean=False)
        self.c.reconnect_delay_set(0.2, 1)

        def on_connect(client, userdata, flags, rc, props=None):  # noqa: ANN001
            client.subscribe(pattern, qos=1)

        def on_message(client, userdata, msg):  # noqa: ANN001
            with self.lock:
                self.msgs.append((msg.topic, msg.payload, time.time()))

        self.c.on_connect = on_connect
        self.c.on_message = on_message
        connect(self.c, settings.mqtt)

    def where(self, suffix: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p, _ in self.msgs if t.endswith(suffix)]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def validated_seqs(settings: Settings, msgs: list[tuple[str, bytes]]) -> list[int]:
    """Run every telemetry message through the gateway's own validation."""
    seqs = []
    for topic, payload in msgs:
        r = contract.validate_telemetry(topic, payload, int(time.time() * 1000), root=settings.mqtt.topic_root,
                                        limits=contract.Limits.from_settings(settings.contract))
        assert isinstance(r, contract.Reading), f"gateway would reject {payload!r}: {r}"
        seqs.append(r.seq)
    return seqs


@pytest.mark.parametrize("kind", ["water", "waste_bin", "air"])
def test_virtual_device_publishes_valid_telemetry(kind: str, settings: Settings, tmp_path: Path, uid: str) -> None:
    col = Collector(settings, f"{settings.mqtt.topic_root}/#", f"col-{uid}")
    try:
        vd = VirtualDevice(settings, kind, f"V-{kind}-{uid}", interval_s=0.2, state_dir=tmp_path / "dev")
        res = vd.run(duration_s=30, count=4)
        assert res.readings == 4 and res.delivered == 4 and res.buffered == 0
        wait_for(lambda: len(col.where("/telemetry")) >= 4, 10, "telemetry")
        tel = col.where("/telemetry")
        assert validated_seqs(settings, tel) == [1, 2, 3, 4]
        doc = json.loads(tel[0][1])
        assert set(doc["fields"]) == set(load_catalogue()[kind].field_names)
        assert 0 < doc["bat"] <= 5 and doc["fw"] == "1.0.0-virtual"
        wait_for(lambda: len(col.where("/status")) >= 2, 5, "status")
        states = [json.loads(p)["state"] for _, p in col.where("/status")]
        assert states[0] == "online" and states[-1] == "offline"
    finally:
        col.close()


def test_survives_broker_restart_without_gap(private_broker, settings: Settings, tmp_path: Path, uid: str) -> None:
    broker = private_broker()
    s = settings.model_copy(deep=True)
    s.mqtt.host, s.mqtt.port, s.mqtt.keepalive_s = broker.host, broker.port, 5
    col = Collector(s, f"{s.mqtt.topic_root}/v1/+/air/+/telemetry", f"col-{uid}")
    # reconnect backoff capped at 2 s: after three or four failed tries a full-jitter draw could wait 8 s
    vd = VirtualDevice(s, "air", "AIR-R1", interval_s=0.2, state_dir=tmp_path / "dev",
                       config_overrides={"backoff_cap_ms": 2000})
    t = threading.Thread(target=vd.run, kwargs={"duration_s": 90}, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(col.where("/telemetry")) >= 5, 20, "first readings")
        broker.stop()
        wait_for(lambda: vd.node is not None and len(vd.node.ring) >= 15, 20, "readings buffered in flash")
        offline_last = vd.node.seq
        broker.start()
        wait_for(lambda: len(set(validated_seqs(s, col.where("/telemetry")))) >= offline_last + 5, 60,
                 "buffer flushed after restart")
    finally:
        vd.stop()
        t.join(20)
        col.close()
    seqs = validated_seqs(s, col.where("/telemetry"))
    distinct = sorted(set(seqs))
    assert distinct == list(range(1, distinct[-1] + 1)), "gap in sequence numbers"
    assert distinct[-1] > offline_last
    assert vd.result.link_errors >= 1 and vd.result.dropped == 0
    assert not t.is_alive()


def test_ring_overflow_loss_is_counted_and_reported(private_broker, settings: Settings, tmp_path: Path,
                                                    uid: str) -> None:
    broker = private_broker()
    s = settings.model_copy(deep=True)
    s.mqtt.host, s.mqtt.port = broker.host, broker.port
    broker.stop()  # the device boots with no broker: everything goes to a 5-slot ring
    vd = VirtualDevice(s, "air", "AIR-OV", interval_s=0.1, state_dir=tmp_path / "dev",
                       config_overrides={"ring": {"capacity": 5, "slot": 512}})
    t = threading.Thread(target=vd.run, kwargs={"duration_s": 60}, daemon=True)
    t.start()
    try:
        wait_for(lambda: vd.node is not None and vd.node.seq >= 12, 20, "readings while offline")
        broker.start()
        col = Collector(s, f"{s.mqtt.topic_root}/#", f"col-{uid}")
        wait_for(lambda: len(col.where("/status")) >= 1, 30, "birth message")
        birth = json.loads(col.where("/status")[0][1])
        assert birth["state"] == "online" and birth["dropped"] >= 7
        col.close()
    finally:
        vd.stop()
        t.join(20)
    assert vd.result.dropped >= 7


def test_remote_config_and_ping_over_broker(settings: Settings, tmp_path: Path, uid: str) -> None:
    root = settings.mqtt.topic_root
    dev = f"W-CFG-{uid}"  # client id = device id: a persistent session must not leak between runs
    cfg_topic = contract.config_topic(root, settings.city, "water", dev)
    cmd_topic = contract.cmd_topic(root, settings.city, "water", dev)
    pub = make_client(settings.mqtt, f"pub-{uid}", v5=False)
    connect(pub, settings.mqtt)
    pub.publish(cfg_topic, json.dumps({"v": 1, "interval_s": 7, "thresholds": {"ph": [6.5, 8.5]}}),
                qos=1, retain=True).wait_for_publish(5)
    col = Collector(settings, f"{root}/v1/+/water/{dev}/ack", f"col-{uid}")
    vd = VirtualDevice(settings, "water", dev, interval_s=60, state_dir=tmp_path / "dev")
    t = threading.Thread(target=vd.run, kwargs={"duration_s": 30}, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(col.where("/ack")) >= 1, 15, "config ack")
        assert json.loads(col.where("/ack")[0][1]) == {"v": 1, "id": "config", "ok": True, "detail": "applied"}
        assert vd.node.interval_s == 7
        pub.publish(cmd_topic, json.dumps({"v": 1, "id": "p1", "cmd": "ping"}), qos=1).wait_for_publish(5)
        pub.publish(cmd_topic, b"{not json", qos=1).wait_for_publish(5)
        wait_for(lambda: len(col.where("/ack")) >= 3, 15, "command acks")
        pong, bad = (json.loads(p) for _, p in col.where("/ack")[1:3])
        assert pong["id"] == "p1" and pong["ok"] and pong["data"]["interval_s"] == 7
        assert bad["ok"] is False and "malformed" in bad["detail"]
    finally:
        vd.stop()
        t.join(20)
        col.close()
        pub.publish(cfg_topic, b"", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
    stored = json.loads((tmp_path / "dev" / "remote.json").read_text())
    assert stored["interval_s"] == 7


def test_virtual_cli_subprocess(settings: Settings, tmp_path: Path, uid: str) -> None:
    """The command the simulators spawn: stable flags, JSON summary on stdout, MQTT from settings."""
    col = Collector(settings, f"{settings.mqtt.topic_root}/#", f"col-{uid}")
    env = dict(os.environ, KC_MQTT__TOPIC_ROOT=settings.mqtt.topic_root, KC_MQTT__PORT=str(settings.mqtt.port))
    try:
        r = subprocess.run(
            [KOTACERDAS, "firmware", "virtual", "--kind", "waste_bin", "--device",
             f"BIN-CLI-{uid}", "--city", "bogor", "--interval", "0.3", "--count", "3", "--duration", "60",
             "--state-dir", str(tmp_path / "dev")],
            capture_output=True, text=True, timeout=90, env=env,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert summary["readings"] == 3 and summary["delivered"] == 3 and summary["last_seq"] == 3
        wait_for(lambda: len(col.where("/telemetry")) >= 3, 10, "telemetry")
        topics = {t for t, _ in col.where("/telemetry")}
        assert topics == {contract.telemetry_topic(settings.mqtt.topic_root, "bogor", "waste_bin", f"BIN-CLI-{uid}")}
        assert validated_seqs(settings, col.where("/telemetry")) == [1, 2, 3]
    finally:
        col.close()


def test_virtual_cli_stops_on_sigterm(settings: Settings, tmp_path: Path, uid: str) -> None:
    env = dict(os.environ, KC_MQTT__TOPIC_ROOT=settings.mqtt.topic_root, KC_MQTT__PORT=str(settings.mqtt.port))
    p = subprocess.Popen(
        [KOTACERDAS, "firmware", "virtual", "--kind", "air", "--device", f"AIR-SIG-{uid}",
         "--interval", "0.5", "--state-dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(lambda: ring_last(tmp_path / "dev" / "log") >= 1, 20, "first reading")
        p.terminate()
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["readings"] >= 1


def _make_ca_and_server_cert(d: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1 (cryptography, no openssl binary)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kc-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    srv = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
           .issuer_name(ca_name).public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                          critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
           .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(srv.public_bytes(pem))
    (d / "server.key").write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption()))


def test_tls_with_ca_verification(private_broker, settings: Settings, tmp_path: Path, uid: str) -> None:
    """The firmware's own TLS path (ssl.SSLContext, CA as DER) against a TLS-only Mosquitto."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _make_ca_and_server_cert(certs)
    from devtools.stack import free_port

    # a plain listener for the fixture's readiness probe (an MQTT CONNECT), the device uses the TLS one
    port, tls_port = free_port(), free_port()
    broker = private_broker(extra_config=(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nlistener {tls_port} 127.0.0.1\n"
        f"cafile {certs / 'ca.pem'}\ncertfile {certs / 'server.pem'}\nkeyfile {certs / 'server.key'}\n"), port=port)
    s = settings.model_copy(deep=True)
    s.mqtt.host, s.mqtt.port, s.mqtt.tls_ca = broker.host, tls_port, certs / "ca.pem"
    col = Collector(s, f"{s.mqtt.topic_root}/#", f"col-{uid}")
    try:
        vd = VirtualDevice(s, "air", "AIR-TLS", interval_s=0.2, state_dir=tmp_path / "dev")
        assert vd.cfg["mqtt"]["tls"] and vd.cfg["mqtt"]["tls_ca"].endswith("ca.der")
        res = vd.run(duration_s=30, count=3)
        assert res.delivered == 3
        wait_for(lambda: len(col.where("/telemetry")) >= 3, 10, "telemetry over TLS")
        assert validated_seqs(s, col.where("/telemetry")) == [1, 2, 3]
    finally:
        col.close()
    # a broker whose certificate is not signed by the configured CA is refused: nothing delivered
    other = tmp_path / "other"
    other.mkdir()
    _make_ca_and_server_cert(other)
    s.mqtt.tls_ca = other / "ca.pem"
    vd = VirtualDevice(s, "air", "AIR-TLS2", interval_s=0.2, state_dir=tmp_path / "dev2")
    res = vd.run(duration_s=3)
    assert res.delivered == 0 and res.link_errors >= 1 and res.buffered == res.readings >= 1


def test_accepted_by_the_real_gateway(settings: Settings, tmp_path: Path, uid: str) -> None:
    """End to end over the wire only: virtual device -> Mosquitto -> `kotacerdas gateway run`
    (auto-register) -> normalised topic. Every reading comes out, none dead-lettered."""
    root = settings.mqtt.topic_root
    env = dict(os.environ, KC_MQTT__TOPIC_ROOT=root, KC_MQTT__PORT=str(settings.mqtt.port),
               KC_GATEWAY__REGISTRY_PATH=str(tmp_path / "gw" / "registry.sqlite"),
               KC_GATEWAY__QUEUE_PATH=str(tmp_path / "gw" / "queue.sqlite"), KC_GATEWAY__HTTP_PORT="0",
               KC_GATEWAY__CLIENT_ID=f"kc-gw-{uid}", KC_STATE_DIR=str(tmp_path / "state"))
    col = Collector(settings, f"{root}/v1/_platform/#", f"col-{uid}")
    log_path = tmp_path / "gateway.log"
    with open(log_path, "w") as log_file:
        gw = subprocess.Popen([KOTACERDAS, "gateway", "run", "--auto-register"], env=env,
                              stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        # its JSON log says when the subscription is in place; readings before that would be lost
        wait_for(lambda: gw.poll() is not None or '"gateway started"' in log_path.read_text(), 30, "gateway start")
        assert gw.poll() is None, log_path.read_text()[-2000:]
        dev = f"AIR-GW-{uid}"
        vd = VirtualDevice(settings, "air", dev, interval_s=0.2, state_dir=tmp_path / "dev")
        res = vd.run(duration_s=40, count=5)
        assert res.delivered == 5
        def readings() -> list:
            """This device's readings, sent alone or in batches (gateway.forward_batch)."""
            out: list = []
            for _, p in col.where(f"/norm/{settings.city}/air/{dev}"):
                out.append(contract.decode_normalized(p))
            for t, p in col.where(f"/norm/{settings.city}/air/{contract.NORMALIZED_BATCH}"):
                got = contract.decode_normalized_batch(t, p)
                assert isinstance(got, list), got
                out += [r for r in got if not isinstance(r, contract.NormalizedReading) or r.device == dev]
            return out

        wait_for(lambda: len(readings()) >= 5, 30, "normalised readings")
        norm = readings()
        assert all(isinstance(n, contract.NormalizedReading) for n in norm), norm
        assert sorted({n.seq for n in norm}) == [1, 2, 3, 4, 5]
        # the topic root is this test's own: any dead letter would be about our device's messages
        assert not [t for t, _ in col.where("") if "/deadletter/" in t]
    finally:
        gw.terminate()
        try:
            gw.wait(20)
        except subprocess.TimeoutExpired:
            gw.kill()
        col.close()


@pytest.mark.long
def test_hung_broker_detected_by_keepalive(private_broker, settings: Settings, tmp_path: Path, uid: str) -> None:
    """A broker that stops answering without closing the socket (SIGSTOP): the node's PINGREQ goes
    unanswered, it drops the link, buffers, and after SIGCONT delivers everything (dups allowed, no gap)."""
    import signal

    broker = private_broker()
    s = settings.model_copy(deep=True)
    s.mqtt.host, s.mqtt.port, s.mqtt.keepalive_s = broker.host, broker.port, 2
    col = Collector(s, f"{s.mqtt.topic_root}/v1/+/air/+/telemetry", f"col-{uid}")
    vd = VirtualDevice(s, "air", "AIR-HANG", interval_s=0.25, state_dir=tmp_path / "dev")
    t = threading.Thread(target=vd.run, kwargs={"duration_s": 90}, daemon=True)
    t.start()
    pid = broker.pid()
    assert pid
    try:
        wait_for(lambda: len(col.where("/telemetry")) >= 4, 20, "first readings")
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: vd.node.stats["link_errors"] >= 1, 20, "keepalive timeout noticed")
        wait_for(lambda: len(vd.node.ring) >= 8, 20, "buffering while the broker hangs")
        hung_seq = vd.node.seq
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        wait_for(lambda: len(set(validated_seqs(s, col.where("/telemetry")))) >= hung_seq + 2, 60,
                 "delivery after the broker resumes")
    finally:
        vd.stop()
        t.join(20)
        col.close()
    distinct = sorted(set(validated_seqs(s, col.where("/telemetry"))))
    assert distinct == list(range(1, distinct[-1] + 1)), "gap in sequence numbers"


def ring_last(path: Path, slot: int = 512) -> int:
    """Last record id in a node's flash log (kc_ring layout: segment files named by their first
    id in hex, fixed-size records), 0 if nothing is there yet."""
    last = 0
    try:
        for seg in path.iterdir():
            if len(seg.name) == 8:
                last = max(last, int(seg.name, 16) + seg.stat().st_size // slot - 1)
    except (OSError, ValueError):
        return last
    return last


def test_buffer_survives_power_cut(private_broker, settings: Settings, tmp_path: Path, uid: str) -> None:
    """Readings buffered offline survive a kill -9 (power cut) of the device process: the next
    boot sends them oldest-first and continues the sequence."""
    import signal

    broker = private_broker()
    s_port = broker.port
    broker.stop()  # offline from the start
    env = dict(os.environ, KC_MQTT__TOPIC_ROOT=settings.mqtt.topic_root, KC_MQTT__PORT=str(s_port))
    state = tmp_path / "dev"
    dev = f"AIR-PWR-{uid}"
    cmd = [KOTACERDAS, "firmware", "virtual", "--kind", "air", "--device", dev, "--interval", "0.2",
           "--state-dir", str(state)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ring_last(state / "log") >= 8, 30, "readings into flash while the broker is down")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    broker.start()
    s = settings.model_copy(deep=True)
    s.mqtt.port = s_port
    col = Collector(s, f"{s.mqtt.topic_root}/#", f"col-{uid}")
    try:
        r = subprocess.run(cmd[:-2] + ["--state-dir", str(state), "--count", "3", "--duration", "60"], env=env,
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        wait_for(lambda: len(col.where("/telemetry")) >= summary["last_seq"], 15, "all readings")
    finally:
        col.close()
    seqs = validated_seqs(s, col.where("/telemetry"))
    assert summary["last_seq"] >= 8  # the killed boot's readings plus 3 new ones
    assert sorted(set(seqs)) == list(range(1, summary["last_seq"] + 1))
    assert seqs == sorted(seqs)  # oldest first
    birth = json.loads(col.where("/status")[0][1])
    assert birth["boots"] == 1 and birth["buffered"] >= 5  # RTC memory is gone after a power cut
