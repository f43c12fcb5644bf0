"""Provisioned broker security, proven on a private Mosquitto with the generated config.

Password file + ACL from the registry; TLS with the generated local CA.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time

import paho.mqtt.client as paho
import pytest
from pydantic import SecretStr

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings
from devtools.stack import free_port

from gateway.passwords import hash_password, verify_password
from gateway.provision import GATEWAY_USER, INGEST_USER, provision
from gateway.registry import Registry
from gateway.service import Gateway
from tests.gateway.helpers import Collector, devices, good_fields, normalized, wait_for


@pytest.fixture
def secure(settings, private_broker, tmp_path):
    """A private broker with allow_anonymous false, the generated password/ACL files and a TLS listener."""
    with Registry(settings.gateway.registry_path) as reg:
        _, pws = reg.import_devices(devices())
    port, tls_port = free_port(), free_port()
    out = tmp_path / "provision"
    paths = provision(settings, out, port=port, tls_port=tls_port)
    broker = private_broker(extra_config=paths["broker_config"].read_text(), port=port)
    creds = json.loads(paths["service_credentials"].read_text())

    def account(user: str, password: str | None, tls: bool = False) -> MqttSettings:
        return MqttSettings(host="127.0.0.1", port=tls_port if tls else port, username=user,
                            password=SecretStr(password) if password is not None else None,
                            topic_root=settings.mqtt.topic_root, tls_ca=out / "ca.crt" if tls else None)

    yield {"broker": broker, "port": port, "tls_port": tls_port, "out": out, "pws": pws, "creds": creds,
           "account": account, "root": settings.mqtt.topic_root, "settings": settings}


def client(m: MqttSettings) -> paho.Client:
    c = make_client(m, v5=True)
    connect(c, m, timeout_s=5)
    return c


def close(*cs: paho.Client) -> None:
    for c in cs:
        c.disconnect()
        c.loop_stop()


def suback(c: paho.Client, topic: str) -> list:
    got: list = []
    ev = threading.Event()

    def on_sub(client, userdata, mid, reason_codes, props):  # noqa: ANN001
        got.extend(reason_codes)
        ev.set()

    c.on_subscribe = on_sub
    c.subscribe(topic, qos=1)
    assert ev.wait(5)
    return got


def test_password_hash_format_matches_mosquitto_passwd():
    # produced by `mosquitto_passwd -b file alice secret` (mosquitto 2.0.11)
    ref = "$7$101$MA9eQvllF56uSCHK$fecpkvIArpT6VVsjS0pwITJFDJ8s1R43PfqUYhUincYw2nELojNwZJPb1lq3u6uGwsH1AaDqAEgfUnxiZRBxyA=="
    assert verify_password("secret", ref)
    assert not verify_password("Secret", ref)
    h = hash_password("secret")
    assert h.startswith("$7$101$") and verify_password("secret", h) and h != hash_password("secret")


def test_anonymous_and_wrong_password_are_refused(secure):
    acc = secure["account"]
    with pytest.raises(ConnectionError):
        client(MqttSettings(host="127.0.0.1", port=secure["port"]))
    with pytest.raises(ConnectionError):
        client(acc("air-0", "wrong-password"))
    with pytest.raises(ConnectionError):
        client(acc("air-0", secure["pws"]["air-1"]))  # another device's password
    close(client(acc("air-0", secure["pws"]["air-0"])))  # the right one works


def test_device_cannot_publish_as_another_device_nor_read_its_commands(secure):
    acc, pws, root = secure["account"], secure["pws"], secure["root"]
    gw = Collector(acc(GATEWAY_USER, secure["creds"][GATEWAY_USER]), contract.device_subscription(root, "telemetry"),
                   contract.device_subscription(root, "ack"))
    a0, a1 = client(acc("air-0", pws["air-0"])), client(acc("air-1", pws["air-1"]))
    try:
        t0 = contract.telemetry_topic(root, "depok", "air", "air-0")
        now = int(time.time() * 1000)
        spoof = contract.encode_telemetry(now, 666, {"pm25": 999.0})
        wait_published([a1.publish(t0, spoof, qos=1)])  # air-1 pretending to be air-0
        wait_published([a1.publish(contract.telemetry_topic(root, "bogor", "air", "air-1"), spoof, qos=1)])  # wrong city
        wait_published([a0.publish(t0, contract.encode_telemetry(now, 1, {"pm25": 9.0}), qos=1)])
        # air-0's reading was sent after air-1's were PUBACKed (routed or refused) and one session's
        # deliveries keep routing order: a spoof that got through would have arrived before it
        assert wait_for(lambda: len(gw.msgs) >= 1)
        assert [json.loads(p)["seq"] for _, p in gw.msgs] == [1]  # only air-0's own reading arrived

        # commands: air-1 listening on air-0's cmd topic gets nothing (Mosquitto 2.0 enforces read ACLs
        # at delivery, so the SUBACK itself may say granted); air-0 receives its own
        got0: list = []
        got1: list = []
        a0.on_message = lambda c, u, m: got0.append(m.payload)
        a1.on_message = lambda c, u, m: got1.append(m.payload)
        suback(a1, contract.cmd_topic(root, "depok", "air", "air-0"))
        suback(a1, contract.device_subscription(root, "cmd"))
        assert not any(rc.is_failure for rc in suback(a0, contract.cmd_topic(root, "depok", "air", "air-0")))
        g = client(acc(GATEWAY_USER, secure["creds"][GATEWAY_USER]))
        wait_published([g.publish(contract.cmd_topic(root, "depok", "air", "air-0"), b'{"v":1,"cmd":"ping"}', qos=1)])
        assert wait_for(lambda: got0 == [b'{"v":1,"cmd":"ping"}'])
        # a sentinel air-1 may read (its own command), sent after air-0's: had air-0's reached air-1's
        # session, it would have been delivered first
        wait_published([g.publish(contract.cmd_topic(root, "depok", "air", "air-1"), b'{"v":1,"cmd":"own"}', qos=1)])
        assert wait_for(lambda: got1 != [])
        assert got1 == [b'{"v":1,"cmd":"own"}']
        close(g)
    finally:
        close(a0, a1)
        gw.close()


def test_gateway_account_has_least_privilege(secure):
    acc, root, creds = secure["account"], secure["root"], secure["creds"]
    ingest = Collector(acc(INGEST_USER, creds[INGEST_USER]), f"{root}/v1/_platform/norm/#",
                       f"{root}/v1/_platform/deadletter/#")
    watcher = Collector(acc(GATEWAY_USER, creds[GATEWAY_USER]), contract.device_subscription(root, "telemetry"))
    g = client(acc(GATEWAY_USER, creds[GATEWAY_USER]))
    try:
        # may: normalised telemetry and its own dead letters
        wait_published([g.publish(contract.normalized_topic(root, "depok", "air", "air-0"), b"{}", qos=1),
                        g.publish(contract.deadletter_topic(root, "gateway", "duplicate"), b"{}", qos=1)])
        # may not: speak for a device, or for another stage
        wait_published([g.publish(contract.telemetry_topic(root, "depok", "air", "air-0"),
                                  contract.encode_telemetry(int(time.time() * 1000), 5, {"pm25": 1.0}), qos=1),
                        g.publish(contract.deadletter_topic(root, "ingest", "write_rejected"), b"{}", qos=1)])
        # sentinels sent after the refused publishes, one per session that must not have seen them: a
        # refused message that got through would have been delivered to that session first
        wait_published([g.publish(contract.normalized_topic(root, "depok", "air", "air-1"), b"{}", qos=1)])
        dev = client(acc("air-1", secure["pws"]["air-1"]))
        own = contract.telemetry_topic(root, "depok", "air", "air-1")
        wait_published([dev.publish(own, b"{}", qos=1)])
        close(dev)
        assert wait_for(lambda: len(ingest.msgs) >= 3 and len(watcher.msgs) >= 1)
        assert sorted(t.split("/_platform/")[1] for t, _ in ingest.msgs) == ["deadletter/gateway/duplicate",
                                                                             "norm/depok/air/air-0",
                                                                             "norm/depok/air/air-1"]
        assert [t for t, _ in watcher.msgs] == [own]
        # may not read alerts (nor everything): an analytics alert never reaches the gateway's session
        seen: list = []
        g.on_message = lambda c, u, m: seen.append(m.topic)
        suback(g, f"{root}/v1/_platform/alerts/#")
        suback(g, "#")
        dash = Collector(acc("kc-dashboards", creds["kc-dashboards"]), f"{root}/v1/_platform/alerts/#")
        a = client(acc("kc-analytics", creds["kc-analytics"]))
        wait_published([a.publish(contract.alert_topic(root, "environment_agency", "warning"), b"{}", qos=1)])
        assert wait_for(lambda: len(dash.msgs) == 1)  # the alert was published and readable by its audience
        # a sentinel the gateway may read (device telemetry, matched by its "#"), sent after the alert
        dev = client(acc("air-1", secure["pws"]["air-1"]))
        wait_published([dev.publish(own, b"{}", qos=1)])
        close(dev)
        assert wait_for(lambda: seen != [])
        assert seen == [own]  # but not by the gateway
        close(a)
        dash.close()
    finally:
        close(g)
        ingest.close()
        watcher.close()


def test_decommission_and_rotation_take_effect_after_reprovision(secure):
    s, acc, pws = secure["settings"], secure["account"], secure["pws"]
    with Registry(s.gateway.registry_path) as reg:
        reg.decommission("water-0")
        _, new_pw = reg.rotate_credentials("air-1")
    provision(s, secure["out"], port=secure["port"], tls_port=secure["tls_port"])
    os.kill(secure["broker"].pid(), signal.SIGHUP)  # mosquitto reloads password and ACL files on SIGHUP

    def refused(m: MqttSettings) -> bool:
        try:
            close(client(m))
            return False
        except ConnectionError:
            return True

    assert wait_for(lambda: refused(acc("water-0", pws["water-0"])), timeout=10)
    assert refused(acc("air-1", pws["air-1"]))
    close(client(acc("air-1", new_pw)))
    # service credentials survived the re-provisioning
    close(client(acc(GATEWAY_USER, secure["creds"][GATEWAY_USER])))


def test_tls_listener_with_local_ca(secure, tmp_path):
    acc, pws = secure["account"], secure["pws"]
    c = client(acc("air-0", pws["air-0"], tls=True))
    try:
        wait_published([c.publish(contract.telemetry_topic(secure["root"], "depok", "air", "air-0"), b"{}", qos=1)])
    finally:
        close(c)
    with pytest.raises(ConnectionError):
        client(acc("air-0", "nope", tls=True))
    # a client that does not trust our CA refuses the server
    from gateway.provision import make_ca_and_server_cert

    other = tmp_path / "other-ca"
    other.mkdir()
    make_ca_and_server_cert(other)
    bad = acc("air-0", pws["air-0"], tls=True).model_copy(update={"tls_ca": other / "ca.crt"})
    with pytest.raises(ssl.SSLError):  # certificate verify failed
        client(bad)
    # plain MQTT on the TLS port gets nowhere
    with pytest.raises((TimeoutError, ConnectionError, OSError)):
        client(MqttSettings(host="127.0.0.1", port=secure["tls_port"], username="air-0",
                            password=SecretStr(pws["air-0"])))


def test_gateway_runs_with_its_least_privilege_account(secure):
    """The ACL is not only strict but sufficient: devices -> gateway -> normalised, all authenticated."""
    s, acc, creds, root = secure["settings"], secure["account"], secure["creds"], secure["root"]
    s.mqtt = acc(GATEWAY_USER, creds[GATEWAY_USER])
    ingest = Collector(acc(INGEST_USER, creds[INGEST_USER]), f"{root}/v1/_platform/norm/#")
    gw = Gateway(s).start()
    d = client(acc("water-1", secure["pws"]["water-1"]))
    try:
        t = contract.telemetry_topic(root, "depok", "water", "water-1")
        now = int(time.time() * 1000)
        wait_published([d.publish(t, contract.encode_telemetry(now - 100 + i, i, good_fields("water")), qos=1)
                        for i in range(20)])
        assert wait_for(lambda: len(normalized(ingest, root)) == 20)
        assert wait_for(lambda: gw.ready() == {"devices_broker": True, "upstream_broker": True})
    finally:
        close(d)
        gw.stop()
        ingest.close()


@pytest.mark.parametrize("batch_bytes,tls", [(None, False), (1_000_000, False), (1_000_000, True)],
                         ids=["default", "over-limit-wire", "over-limit-paho-tls"])
def test_batches_upstream_fit_the_brokers_packet_limit(secure, batch_bytes, tls):
    """2,000 readings of one city and kind at once (a backlog): with forward_batch 500 they would be
    ~165 KB messages, which the provisioned broker (max_packet_size 64 KiB) answers by dropping the
    gateway's connection, forever. default: batches are capped by gateway.forward_batch_bytes.
    over-limit: an operator set forward_batch_bytes to 1 MB, above the broker's limit; the broker's
    MQTT 5 CONNACK says its limit and the forwarder cuts each queued batch to fit (either upstream
    client). Either way every reading arrives once, in order, still in batches."""
    from gateway.provision import MAX_PACKET_BYTES

    s, acc, creds, root = secure["settings"], secure["account"], secure["creds"], secure["root"]
    s.mqtt = acc(GATEWAY_USER, creds[GATEWAY_USER])
    s.gateway.upstream = acc(GATEWAY_USER, creds[GATEWAY_USER], tls=tls)
    assert s.gateway.forward_batch == 500  # the default, under test
    if batch_bytes:
        s.gateway.forward_batch_bytes = batch_bytes
    ingest = Collector(acc(INGEST_USER, creds[INGEST_USER]), f"{root}/v1/_platform/norm/#")
    d = client(acc("water-1", secure["pws"]["water-1"]))
    Gateway(s).start().stop()  # its session: the backlog waits at the broker, then comes at once
    n = 2000
    now = int(time.time() * 1000)
    t = contract.telemetry_topic(root, "depok", "water", "water-1")
    wait_published([d.publish(t, contract.encode_telemetry(now - 100_000 + i * 10, i, good_fields("water")), qos=1)
                    for i in range(n)])
    gw = Gateway(s).start()
    try:
        assert wait_for(lambda: len(normalized(ingest, root)) == n, timeout=30), len(normalized(ingest, root))
        assert [r["seq"] for r in normalized(ingest, root)] == list(range(n))
        sizes = [len(p) for _, p in ingest.msgs]
        assert max(sizes) <= min(s.gateway.forward_batch_bytes, MAX_PACKET_BYTES), max(sizes)
        assert len(sizes) < n / 50  # still batches, not one message per reading
        assert (gw.metrics.registry.get_sample_value("kc_gateway_upstream_refused_total") or 0) == 0
    finally:
        close(d)
        gw.stop()
        ingest.close()


def test_upstream_refusing_the_gateway_is_counted_not_silent(secure):
    """A misconfigured upstream ACL acknowledges with "not authorized": counted and logged, never silent."""
    s, acc, creds, root = secure["settings"], secure["account"], secure["creds"], secure["root"]
    s.mqtt = acc(GATEWAY_USER, creds[GATEWAY_USER])
    s.gateway.upstream = acc(INGEST_USER, creds[INGEST_USER])  # may not write normalised telemetry
    gw = Gateway(s).start()
    d = client(acc("air-1", secure["pws"]["air-1"]))
    try:
        now = int(time.time() * 1000)
        wait_published([d.publish(contract.telemetry_topic(root, "depok", "air", "air-1"),
                                  contract.encode_telemetry(now - i, i, {"pm25": 4.0}), qos=1) for i in range(3)])
        assert wait_for(lambda: (gw.metrics.registry.get_sample_value("kc_gateway_upstream_refused_total") or 0) >= 3)
    finally:
        close(d)
        gw.stop()


def test_registering_through_the_api_provisions_the_broker_at_once(secure):
    """Register -> password/ACL rewritten + broker reloaded -> the new device connects; decommission -> refused."""
    from fastapi.testclient import TestClient

    from gateway.api import make_app
    from gateway.provision import refresh_broker

    s, acc = secure["settings"], secure["account"]
    s.gateway.provision_dir = secure["out"]
    s.gateway.broker_pid_file = secure["broker"].pidfile
    with Registry(s.gateway.registry_path) as reg:
        app = make_app(reg, "tok", None, on_change=lambda: refresh_broker(s))
        with TestClient(app) as http:
            h = {"Authorization": "Bearer tok"}
            r = http.post("/devices", headers=h, json={"device": "air-new", "kind": "air", "city": "depok"})
            assert r.status_code == 201
            pw = r.json()["mqtt_password"]

            def connects(user: str, password: str) -> bool:
                try:
                    close(client(acc(user, password)))
                    return True
                except ConnectionError:
                    return False

            assert wait_for(lambda: connects("air-new", pw), timeout=10)
            acl = (secure["out"] / "acl_file").read_text()
            assert f"topic write {secure['root']}/v1/depok/air/air-new/telemetry" in acl
            assert http.post("/devices/air-new/decommission", headers=h).status_code == 200
            assert wait_for(lambda: not connects("air-new", pw), timeout=10)
    # re-provisioning keeps the CA devices already trust
    ca = (secure["out"] / "ca.crt").read_bytes()
    provision(s, secure["out"], port=secure["port"], tls_port=secure["tls_port"])
    assert (secure["out"] / "ca.crt").read_bytes() == ca


def test_broker_refuses_huge_packets_but_passes_merely_oversized_ones(secure):
    """max_packet_size protects the broker; a payload over the contract limit still reaches the gateway."""
    from gateway.provision import MAX_PACKET_BYTES

    acc, pws, root, creds = secure["account"], secure["pws"], secure["root"], secure["creds"]
    gw = Collector(acc(GATEWAY_USER, creds[GATEWAY_USER]), contract.device_subscription(root, "telemetry"))
    d = client(acc("air-0", pws["air-0"]))
    try:
        t = contract.telemetry_topic(root, "depok", "air", "air-0")
        wait_published([d.publish(t, b"{" + b" " * 8000 + b"}", qos=1)])  # over 4 KiB: for the gateway to refuse
        assert wait_for(lambda: len(gw.msgs) == 1)
        # MQTT 3.1.1 clients are not told the limit, so this one really sends it: the broker drops the client
        m = acc("air-0", pws["air-0"])
        old = make_client(m, v5=False)
        connect(old, m, timeout_s=5)
        old.reconnect_delay_set(30, 60)  # no quick reconnect that would hide the disconnect
        old.publish(t, b"x" * (MAX_PACKET_BYTES * 2), qos=1)
        assert wait_for(lambda: not old.is_connected(), timeout=20)
        close(old)
        # a sentinel after the refused packet: had the broker routed it, it would have arrived first
        wait_published([d.publish(t, b"{}", qos=1)])
        assert wait_for(lambda: len(gw.msgs) >= 2)
        assert len(gw.msgs) == 2 and gw.msgs[1][1] == b"{}"
    finally:
        close(d)
        gw.close()
