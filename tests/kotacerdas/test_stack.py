"""The local stack and the private daemons tests use: real Mosquitto and InfluxDB processes."""

import threading

import pytest

from devtools import stack
from kotacerdas.errors import Disposition
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.mqtt import connect, make_client
from tests.conftest import influx_for, mqtt_for


def test_shared_stack_is_up(base_settings):
    rows = {r["service"]: r for r in stack.status(base_settings)}
    assert rows["mosquitto"]["ready"] and rows["influxd"]["ready"]
    stack.up(base_settings)  # idempotent: second call leaves the running daemons alone
    assert {r["service"]: r["pid"] for r in stack.status(base_settings)} == {k: v["pid"] for k, v in rows.items()}


def test_private_broker_round_trip_and_restart(private_broker):
    b = private_broker()
    ms = mqtt_for(b)
    got = threading.Event()
    sub = make_client(ms)
    sub.on_message = lambda c, u, m: got.set()
    connect(sub, ms)
    sub.subscribe("x/#", qos=1)
    pub = make_client(ms)
    connect(pub, ms)
    pub.publish("x/y", b"hi", qos=1).wait_for_publish(5)
    assert got.wait(5)
    pub.loop_stop()
    sub.loop_stop()
    b.stop()
    assert not b.answering()
    b.start()
    assert b.answering()


def test_private_influx_write_query_and_errors(private_influx):
    ix = private_influx()
    with InfluxClient(influx_for(ix, "p")) as c:
        assert c.ping()
        c.create_database()
        c.write(["m,device=a v=1 1000", "m,device=b v=2 2000"])
        assert c.scalar("SELECT count(v) FROM m") == 2
        with pytest.raises(InfluxError) as e:
            c.write("m v=notanumber,")
        assert e.value.status == 400 and e.value.disposition is Disposition.DROP
    ix.stop()
    with InfluxClient(influx_for(ix, "p")) as c:
        assert not c.ping()
        with pytest.raises(InfluxError) as e:
            c.write("m v=1 3000")
        assert e.value.disposition is Disposition.RETRY


def test_refuses_non_loopback(base_settings):
    s = base_settings.model_copy(deep=True)
    s.mqtt.host = "10.0.0.5"
    with pytest.raises(stack.StackError, match="loopback"):
        stack.up(s)


def test_port_taken_by_stranger_is_reported(private_broker, tmp_path):
    b = private_broker()
    imposter = stack.InfluxProcess(tmp_path / "imp", b.port)
    with pytest.raises(stack.StackError, match="taken"):
        imposter.start()


@pytest.mark.io
def test_install_refused_clearly_when_not_root():
    """As an unprivileged user a missing package is refused with the command to run, not attempted."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not available to drop privileges")
    code = (
        "from devtools.stack import ensure_installed, StackError\n"
        "try:\n    ensure_installed({'kc-no-such-binary': 'kc-no-such-package'})\n"
        "except StackError as e:\n    print('refused:', e)\n"
    )
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert "refused:" in r.stdout and "not running as root" in r.stdout and "apt-get install" in r.stdout, r.stderr


def test_install_refused_clearly_without_apt(monkeypatch):
    monkeypatch.setattr(stack.shutil, "which", lambda exe: None)
    monkeypatch.setattr(stack, "_which", lambda exe: None)
    monkeypatch.setattr(stack.os, "geteuid", lambda: 0)
    with pytest.raises(stack.StackError, match="no apt-get"):
        stack.ensure_installed({"kc-no-such-binary": "kc-no-such-package"})


def test_stack_reuses_a_healthy_daemon_on_its_port(private_broker, tmp_path):
    """A clean clone next to a running stack (same ports) uses it instead of failing."""
    b = private_broker()
    other = stack.MosquittoProcess(tmp_path / "other-checkout", b.port)
    other.reuse_running = True
    other.start()
    assert other.pid() is None and other.ready()  # nothing new started
    stranger = stack.MosquittoProcess(tmp_path / "x", b.port)
    stranger.reuse_running = True
    stranger.ready = lambda: False  # something on the port that does not speak MQTT
    with pytest.raises(stack.StackError, match="taken"):
        stranger.start()
