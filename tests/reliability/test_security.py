"""Security end to end: the gateway's provisioning on a private Mosquitto with TLS, the
services running on their own least-privilege accounts, and secrets kept out of logs.

Everything through the CLI (`kotacerdas gateway registry import --credentials-out`,
`kotacerdas gateway provision`, `kotacerdas gateway run`, `kotacerdas ingest run`).
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time

import httpx
import pytest
from pydantic import SecretStr

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import InfluxSettings, MqttSettings
from devtools.stack import MosquittoProcess, free_port
from tests.reliability.harness import Service, kc, require, service_env, start_all, wait_until
from tests.waiting import subscribed

CITY = "depok"
DEVICES = [("sec-air-1", "air"), ("sec-air-2", "air"), ("sec-water-1", "water")]


@pytest.fixture
def secured(settings, tmp_path):
    """Registry + provisioning through the CLI; a private broker running the generated config (TLS + plain)."""
    require("gateway")
    admin_token = secrets.token_urlsafe(24)
    port, tls_port = free_port(), free_port()
    env = service_env(tmp_path, mqtt_port=tls_port, influx_url=settings.influx.url, database=settings.influx.database,
                      root=settings.mqtt.topic_root, KC_GATEWAY__ADMIN_TOKEN=admin_token)
    devices = [{"device": d, "kind": k, "city": CITY, "district": "beji", "lat": -6.4, "lon": 106.8,
                "department": load_catalogue()[k].department} for d, k in DEVICES]
    (tmp_path / "devices.json").write_text(json.dumps(devices))
    r = kc("gateway", "registry", "import", str(tmp_path / "devices.json"), "--credentials-out",
           str(tmp_path / "creds.json"), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    device_pw = json.loads((tmp_path / "creds.json").read_text())
    assert set(device_pw) == {d for d, _ in DEVICES}
    out = tmp_path / "provision"
    r2 = kc("gateway", "provision", "--out", str(out), "--port", str(port), "--tls-port", str(tls_port), env=env)
    assert r2.returncode == 0, r2.stderr[-2000:]
    broker = MosquittoProcess(tmp_path / "broker", port, extra_config=(out / "mosquitto-auth.conf").read_text())
    broker.start()
    service_pw = json.loads((out / "service-credentials.json").read_text())

    def account(user: str | None, password: str | None, *, tls: bool = True) -> MqttSettings:
        return MqttSettings(port=tls_port if tls else port, username=user,
                            password=SecretStr(password) if password is not None else None,
                            topic_root=settings.mqtt.topic_root, tls_ca=out / "ca.crt" if tls else None)

    yield {"env": env, "port": port, "tls_port": tls_port, "out": out, "device_pw": device_pw,
           "service_pw": service_pw, "admin_token": admin_token, "account": account, "broker": broker,
           "root": settings.mqtt.topic_root, "cli_output": r.stdout + r.stderr + r2.stdout + r2.stderr}
    broker.stop()


def try_connect(m: MqttSettings) -> str:
    """'ok' or why the broker refused."""
    c = make_client(m, f"probe-{secrets.token_hex(4)}")
    try:
        connect(c, m, timeout_s=5)
    except (ConnectionError, TimeoutError, OSError, ssl.SSLError) as exc:
        return f"refused: {exc}"
    c.loop_stop()
    c.disconnect()
    return "ok"


class Listener:
    """A service account subscribed to a filter, collecting topics."""

    def __init__(self, m: MqttSettings, topic: str):
        self.topics: list[str] = []
        self.lock = threading.Lock()
        self.c = make_client(m, f"listen-{secrets.token_hex(4)}")
        self.c.on_message = self._on
        connect(self.c, m)
        subscribed(self.c, topic)

    def _on(self, c, u, msg):  # noqa: ANN001
        with self.lock:
            self.topics.append(msg.topic)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def publish(m: MqttSettings, topic: str, payload: bytes) -> object:
    c = make_client(m, f"pub-{secrets.token_hex(4)}")
    connect(c, m)
    info = c.publish(topic, payload, qos=1)
    info.wait_for_publish(5)  # PUBACK: the broker has routed (or refused) it
    c.loop_stop()
    c.disconnect()
    return info


def reading(seq: int) -> bytes:
    return contract.encode_telemetry(int(time.time() * 1000), seq, {"pm25": 12.0}, battery=3.9, fw="1.0.0")


def test_anonymous_and_wrong_credentials_refused(secured):
    acc = secured["account"]
    assert try_connect(acc(None, None, tls=False)).startswith("refused")
    assert try_connect(acc(None, None)).startswith("refused")
    assert try_connect(acc("sec-air-1", "not-the-password")).startswith("refused")
    assert try_connect(acc("sec-air-1", secured["device_pw"]["sec-air-2"])).startswith("refused")  # another's
    assert try_connect(acc("ghost-device", "whatever")).startswith("refused")
    assert try_connect(acc("sec-air-1", secured["device_pw"]["sec-air-1"])) == "ok"


def test_tls_listener_needs_tls_and_the_ca(secured, tmp_path):
    acc = secured["account"]
    good = acc("sec-air-1", secured["device_pw"]["sec-air-1"])
    plain_to_tls = good.model_copy(update={"tls_ca": None})
    assert try_connect(plain_to_tls).startswith("refused")  # cleartext MQTT to the TLS port
    # a CA that did not sign the broker's certificate: the client refuses the server
    other = tmp_path / "other-ca"
    r = kc("gateway", "provision", "--out", str(other), "--port", "1", "--tls-port", "2", env=secured["env"])
    assert r.returncode == 0, r.stderr
    assert try_connect(good.model_copy(update={"tls_ca": other / "ca.crt"})).startswith("refused")


def test_device_cannot_publish_as_another_device(secured):
    acc, pw, root = secured["account"], secured["device_pw"], secured["root"]
    gw = Listener(acc("kc-gateway", secured["service_pw"]["kc-gateway"]), contract.device_subscription(root, "telemetry"))
    try:
        me = acc("sec-air-1", pw["sec-air-1"])
        own = contract.telemetry_topic(root, CITY, "air", "sec-air-1")
        publish(me, own, reading(1))
        forged = [
            contract.telemetry_topic(root, CITY, "air", "sec-air-2"),  # another device of the same kind
            contract.telemetry_topic(root, CITY, "water", "sec-water-1"),  # another kind
            contract.telemetry_topic(root, "bogor", "air", "sec-air-1"),  # itself under another city
            contract.normalized_topic(root, CITY, "air", "sec-air-2"),  # straight into the platform
            contract.config_topic(root, CITY, "air", "sec-air-2"),  # a downlink
        ]
        for t in forged:
            publish(me, t, reading(2))
        # a sentinel after the forgeries: each was PUBACKed (routed or refused) before it was sent,
        # and one session's deliveries keep routing order, so a forgery would arrive before it
        publish(me, own, reading(3))
        assert wait_until(lambda: len(gw.topics) >= 2, 5), gw.topics
        assert gw.topics == [own, own], gw.topics
    finally:
        gw.close()


def test_device_cannot_read_other_devices_or_the_platform(secured):
    acc, pw, root = secured["account"], secured["device_pw"], secured["root"]
    spy = Listener(acc("sec-air-2", pw["sec-air-2"]), "#")
    try:
        publish(acc("sec-air-1", pw["sec-air-1"]), contract.telemetry_topic(root, CITY, "air", "sec-air-1"), reading(3))
        gw = acc("kc-gateway", secured["service_pw"]["kc-gateway"])
        publish(gw, contract.normalized_topic(root, CITY, "air", "sec-air-1"), b"{}")
        # a sentinel the spy may read (its own config), sent after both: anything it could see of
        # the others would have been delivered to its session before this
        own_config = contract.config_topic(root, CITY, "air", "sec-air-2")
        publish(gw, own_config, b"{}")
        assert wait_until(lambda: own_config in spy.topics, 5), spy.topics
        assert spy.topics == [own_config], spy.topics
    finally:
        spy.close()


def test_services_on_their_accounts_over_tls_and_secrets_never_logged(secured, settings, tmp_path):
    """Device (own credentials, TLS) -> gateway (kc-gateway) -> ingest (kc-ingest) -> InfluxDB; then grep every log."""
    require("gateway", "ingest")
    acc, root, env = secured["account"], secured["root"], secured["env"]
    svc_pw = secured["service_pw"]
    common = {"KC_MQTT__TLS_CA": str(secured["out"] / "ca.crt"), "KC_LOG_LEVEL": "DEBUG"}
    gw_env = {**env, **common, "KC_MQTT__USERNAME": "kc-gateway", "KC_MQTT__PASSWORD": svc_pw["kc-gateway"]}
    in_env = {**env, **common, "KC_MQTT__USERNAME": "kc-ingest", "KC_MQTT__PASSWORD": svc_pw["kc-ingest"]}
    # both at once (imports overlap); nothing is published before both are ready
    ingest, gateway = start_all(Service("ingest", ["ingest", "run"], in_env, tmp_path, "KC_INGEST__HTTP_PORT"),
                                Service("gateway", ["gateway", "run"], gw_env, tmp_path, "KC_GATEWAY__HTTP_PORT"))
    http = f"http://127.0.0.1:{env['KC_GATEWAY__HTTP_PORT']}"
    try:
        n = 5
        for d, k in DEVICES:
            m = acc(d, secured["device_pw"][d])
            fields = {f.name: f.quantise(f.typical) for f in load_catalogue()[k].fields}
            c = make_client(m, d)
            connect(c, m)
            now = int(time.time() * 1000)
            infos = [c.publish(contract.telemetry_topic(root, CITY, k, d),
                               contract.encode_telemetry(now - (n - i) * 1000, i, fields), qos=1) for i in range(n)]
            for info in infos:
                info.wait_for_publish(10)
            c.loop_stop()
            c.disconnect()
        influx = InfluxSettings(url=settings.influx.url, database=settings.influx.database)
        from kotacerdas.influx import InfluxClient

        def stored() -> int:
            with InfluxClient(influx) as ic:
                return sum(int(ic.scalar(f'SELECT count("seq") FROM "{m}"') or 0) for m in ("air", "water"))

        assert wait_until(lambda: stored() == n * len(DEVICES), 60, 0.5), stored()
        # the admin API: a credential rotation returns a new password, which must not reach any log either
        r = httpx.post(f"{http}/devices/sec-air-1/rotate-credentials",
                       headers={"Authorization": f"Bearer {secured['admin_token']}"}, timeout=10)
        assert r.status_code == 200, r.text
        rotated = [v for v in r.json().values() if isinstance(v, str) and len(v) >= 16]
        # and a refused attempt with a wrong token, whose token must not be echoed into the log
        wrong = "wrong-" + secrets.token_urlsafe(16)
        assert httpx.post(f"{http}/devices/sec-air-1/rotate-credentials",
                          headers={"Authorization": f"Bearer {wrong}"}, timeout=10).status_code == 403
    finally:
        gateway.stop()
        ingest.stop()
    logs = gateway.log() + ingest.log() + secured["cli_output"]
    assert len(logs) > 200, "no logs captured"
    secrets_ = [secured["admin_token"], wrong, *secured["device_pw"].values(), *svc_pw.values(), *rotated]
    leaked = [s[:4] + "..." for s in secrets_ if s and s in logs]
    assert not leaked, f"secrets found in logs/CLI output: {leaked}"


ADMIN_ROUTES = [
    ("POST", "/devices", {"device": "x-1", "kind": "air", "city": CITY}),
    ("POST", "/devices/import", [{"device": "x-2", "kind": "air", "city": CITY}]),
    ("POST", "/devices/sec-air-1/decommission", None),
    ("DELETE", "/devices/sec-air-1", None),
    ("POST", "/devices/sec-air-1/rotate-credentials", None),
    ("PUT", "/devices/sec-air-1/config", {"interval_s": 60}),
    ("POST", "/devices/sec-air-1/cmd", {"cmd": "reboot"}),
]


def test_admin_routes_refuse_requests_without_the_token(settings, tmp_path):
    require("gateway")
    token = secrets.token_urlsafe(24)
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=settings.mqtt.topic_root, KC_GATEWAY__ADMIN_TOKEN=token)
    devices = [{"device": "sec-air-1", "kind": "air", "city": CITY, "district": "beji"}]
    (tmp_path / "devices.json").write_text(json.dumps(devices))
    assert kc("gateway", "registry", "import", str(tmp_path / "devices.json"), env=env).returncode == 0
    gw = Service("gateway", ["gateway", "run"], env, tmp_path, "KC_GATEWAY__HTTP_PORT").start()
    base = f"http://127.0.0.1:{env['KC_GATEWAY__HTTP_PORT']}"
    try:
        for method, path, body in ADMIN_ROUTES:
            for headers, expected in (({}, 401), ({"Authorization": "Bearer nope"}, 403),
                                      ({"Authorization": f"Basic {token}"}, 401), ({"Authorization": token}, 401)):
                r = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
                assert r.status_code == expected, (method, path, headers, r.status_code, r.text[:200])
        # nothing changed: the device is still there and active
        d = httpx.get(f"{base}/devices/sec-air-1", timeout=10).json()
        assert d.get("status", "active") == "active", d
        ok = httpx.post(f"{base}/devices", json={"device": "x-3", "kind": "air", "city": CITY},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert ok.status_code == 201, ok.text  # the same request with the token works
    finally:
        gw.stop()
    assert token not in gw.log()
