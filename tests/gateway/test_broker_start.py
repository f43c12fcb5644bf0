"""The provisioned Mosquitto starts the way an operator starts it: as root, from the generated files.

``kotacerdas gateway provision --out DIR`` then ``mosquitto -c DIR/mosquitto.conf`` (docs/gateway.md
"Starting the secured broker"). Mosquitto 2.0 started as root drops to the ``mosquitto`` account before
it reads the password file, ACL and TLS key; this test runs exactly that on a free loopback port and
connects a device with the credentials its registration printed. It then checks what the gateway's
backpressure and restarts rely on: the gateway's persistent session keeps more than Mosquitto's
default 1000 queued messages, across a broker restart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings
from devtools.stack import free_port, port_open
from tests.gateway.helpers import Collector, good_fields, wait_for
from tests.services import kc

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mosquitto") is None,
                                reason="starts mosquitto as root, like an operator")


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective uid
    raise AssertionError("no Uid line")


@pytest.fixture
def opdir():
    # an operator's config directory: traversable by the broker's own account (pytest's tmp is 0700)
    d = Path(tempfile.mkdtemp(prefix="kc-broker-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_provisioned_broker_starts_as_root_and_a_device_connects(settings, opdir, tmp_path):
    root = settings.mqtt.topic_root
    port, tls_port = free_port(), free_port()
    out = opdir / "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
    env.update({"KC_GATEWAY__REGISTRY_PATH": str(tmp_path / "registry.sqlite"), "KC_MQTT__TOPIC_ROOT": root})
    r = kc("gateway", "registry", "register", "air-op-1", "--kind", "air", "--city", "depok", env=env)
    assert r.returncode == 0, r.stderr
    pw = json.loads(r.stdout)["mqtt_password"]
    r = kc("gateway", "provision", "--out", str(out), "--port", str(port), "--tls-port", str(tls_port), env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "password_file").stat().st_mode & 0o077 == 0  # secrets stay private ...
    assert (out / "ca.key").stat().st_uid == 0  # ... and the CA key is root's alone

    def start_broker() -> subprocess.Popen:
        log = open(tmp_path / "mosquitto.log", "ab")
        b = subprocess.Popen(["mosquitto", "-c", str(out / "mosquitto.conf")], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        ok = wait_for(lambda: port_open("127.0.0.1", port) and port_open("127.0.0.1", tls_port) or
                      b.poll() is not None, timeout=10)
        assert ok and b.poll() is None, (tmp_path / "mosquitto.log").read_text()
        return b

    broker = start_broker()
    try:
        assert _uid_of(broker.pid) != 0  # it dropped privileges, and could still read its files

        def account(user: str, password: str, tls: bool = False) -> MqttSettings:
            return MqttSettings(host="127.0.0.1", port=tls_port if tls else port, username=user,
                                password=SecretStr(password), topic_root=root,
                                tls_ca=out / "ca.crt" if tls else None)

        creds = json.loads((out / "service-credentials.json").read_text())
        gw = Collector(account("kc-gateway", creds["kc-gateway"]), contract.device_subscription(root, "telemetry"))
        try:
            for tls in (False, True):
                dev = make_client(account("air-op-1", pw, tls), v5=True)
                connect(dev, account("air-op-1", pw, tls), timeout_s=5)
                topic = contract.telemetry_topic(root, "depok", "air", "air-op-1")
                wait_published([dev.publish(topic, contract.encode_telemetry(int(time.time() * 1000), int(tls),
                                                                             good_fields("air")), qos=1)])
                dev.disconnect()
                dev.loop_stop()
            assert wait_for(lambda: len(gw.msgs) == 2), gw.msgs
            bad = make_client(account("air-op-1", "wrong"), v5=True)
            with pytest.raises((ConnectionError, TimeoutError)):
                connect(bad, account("air-op-1", "wrong"), timeout_s=5)
            bad.loop_stop()

            # a registration while it runs: the files are rewritten for the broker's account and reloaded
            (opdir / "mosquitto.pid").write_text(str(broker.pid))
            env2 = {**env, "KC_GATEWAY__PROVISION_DIR": str(out), "KC_GATEWAY__BROKER_PID_FILE": str(opdir / "mosquitto.pid")}
            r = kc("gateway", "registry", "register", "air-op-2", "--kind", "air", "--city", "depok", env=env2)
            assert r.returncode == 0 and "reloaded" in r.stdout, r.stderr
            pw2 = json.loads(r.stdout.split("\nbroker auth files")[0])["mqtt_password"]

            def new_device_connects() -> bool:
                c = make_client(account("air-op-2", pw2), v5=True)
                try:
                    connect(c, account("air-op-2", pw2), timeout_s=2)
                except (ConnectionError, TimeoutError):
                    c.loop_stop()
                    return False
                c.disconnect()
                c.loop_stop()
                return True

            assert wait_for(new_device_connects, timeout=10)
            assert broker.poll() is None, (tmp_path / "mosquitto.log").read_text()

            # the gateway away (a restart, or its full inbox): the device's readings wait in its
            # persistent session, more than Mosquitto's default queue of 1000, and a broker restart
            # in between keeps them (persistence in DIR/data, written by the unprivileged broker)
            gw_account = account("kc-gateway", creds["kc-gateway"])
            sub = contract.device_subscription(root, "telemetry")
            Collector(gw_account, sub, client_id=f"kc-gateway-{root}").close()
            dev = make_client(account("air-op-1", pw), v5=True)
            connect(dev, account("air-op-1", pw), timeout_s=5)
            topic = contract.telemetry_topic(root, "depok", "air", "air-op-1")
            t0, n = int(time.time() * 1000) - 600_000, 1500
            wait_published([dev.publish(topic, contract.encode_telemetry(t0 + i, 10 + i, good_fields("air")), qos=1)
                            for i in range(n)])
            dev.disconnect()
            dev.loop_stop()
            broker.terminate()
            broker.wait(10)
            broker = start_broker()
            back = Collector(gw_account, sub, client_id=f"kc-gateway-{root}")
            try:
                assert wait_for(lambda: len(back.msgs) >= n, timeout=20), len(back.msgs)
                assert len(back.msgs) == n
            finally:
                back.close()
        finally:
            gw.close()
    finally:
        broker.terminate()
        broker.wait(10)

