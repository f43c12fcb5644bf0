"""`kotacerdas analytics run` as a process: --once writes results; the service answers HTTP and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from devtools.stack import free_port
from tests.analytics.test_service import telemetry_lines, typical


def _env(settings, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "KC_INFLUX__URL": settings.influx.url, "KC_INFLUX__DATABASE": settings.influx.database,
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root, "KC_STATE_DIR": str(settings.state_dir),
        "KC_ANALYTICS__HTTP_PORT": str(free_port()),
    })
    env.update(extra)
    return env


def _recent_air(influx, n: int = 90) -> None:
    import tests.analytics.test_service as ts

    now = int(time.time() * 1000) // 60_000 * 60_000
    old, ts.NOW = ts.NOW, now
    base = typical("air", 0.01, 3)
    try:
        # one temperature reading past the expected span after the station's first hour (which decides
        # that the catalogue's span fits it, analytics/ranges.py): a gross-range verdict (no index, no alert)
        influx.write(telemetry_lines("air", "air-cli", n, 60,
                                     lambda name, i: 60.0 if (name, i) == ("temperature", n - 15) else base(name, i)))
    finally:
        ts.NOW = old


def test_run_once_writes_qc_and_ispu(settings, influx):
    _recent_air(influx)
    r = subprocess.run([sys.executable, "-m", "kotacerdas", "analytics", "run", "--once", "--window", "7200"],
                       env=_env(settings), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(influx.scalar('SELECT count("flag") FROM "qc"') or 0) > 0
    assert int(influx.scalar('SELECT count("value") FROM "ispu" WHERE "pollutant"=\'max\'') or 0) == 1
    assert "qc=" in r.stdout and "ispu=" in r.stdout


def test_service_serves_health_and_stops_on_sigterm(settings, influx):
    _recent_air(influx)
    env = _env(settings, KC_ANALYTICS__INTERVAL_S="1")
    port = env["KC_ANALYTICS__HTTP_PORT"]
    p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "analytics", "run", "--window", "7200"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        assert "kc_analytics_passes_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert httpx.get(f"http://127.0.0.1:{port}/alerts").json() == []
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert int(influx.scalar('SELECT count("flag") FROM "qc"') or 0) > 0


def test_new_telemetry_on_the_stream_triggers_an_early_pass(settings, influx):
    from kotacerdas import contract
    from kotacerdas.mqtt import connect, make_client, wait_published

    _recent_air(influx)
    env = _env(settings, KC_ANALYTICS__INTERVAL_S="600", KC_ANALYTICS__MIN_PASS_INTERVAL_S="1")
    url = f"http://127.0.0.1:{env['KC_ANALYTICS__HTTP_PORT']}/metrics"
    p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "analytics", "run", "--window", "7200"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def passes() -> float:
        try:
            for ln in httpx.get(url, timeout=2).text.splitlines():
                if ln.startswith('kc_analytics_passes_total{result="ok"}'):
                    return float(ln.split()[-1])
        except httpx.HTTPError:
            pass
        return 0.0

    pub = make_client(settings.mqtt)
    connect(pub, settings.mqtt)
    try:
        deadline = time.monotonic() + 60
        while passes() < 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert passes() == 1  # the first, scheduled pass; the next is 10 minutes away
        topic = contract.normalized_topic(settings.mqtt.topic_root, "depok", "air", "air-cli")
        # the service's SUBACK is not observable from here: publish again until a pass follows (a
        # reading sent before its subscription is in place is simply not seen, as in production)
        deadline = time.monotonic() + 30
        while passes() < 2 and time.monotonic() < deadline:
            wait_published([pub.publish(topic, b"{}", qos=1)])
            time.sleep(0.3)
        assert passes() >= 2
    finally:
        pub.loop_stop()
        pub.disconnect()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_unknown_extra_test_is_refused_with_its_name(settings):
    """A misspelt opt-in (analytics.extra_tests) stops the service before its first pass, naming the choices."""
    r = subprocess.run([sys.executable, "-m", "kotacerdas", "analytics", "run", "--once"],
                       env=_env(settings, KC_ANALYTICS__EXTRA_TESTS='["cusm"]'), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "cusm" in r.stderr and "cusum" in r.stderr and "Traceback" not in r.stderr
