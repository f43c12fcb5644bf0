"""Alert lifecycle (hysteresis, dedup) and delivery over real MQTT, a real HTTP server and a real SMTP server."""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from aiosmtpd.controller import Controller

from analytics import delivery
from analytics.alerts import AlertEngine, AlertStore, Condition, rules
from analytics.api import ApiServer, make_app
from analytics.service import AnalyticsService
from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client
from devtools.stack import free_port
from prometheus_client import CollectorRegistry

from tests.analytics.test_service import NOW, telemetry_lines, typical
from tests.waiting import subscribed

RULES = rules({"air": "environment_agency", "water": "water_utility", "waste_bin": "waste_department"})


def feed(engine: AlertEngine, rule: str, values: list[float], device: str = "d1") -> list[str]:
    out = []
    for i, v in enumerate(values):
        ev = engine.evaluate([Condition(RULES[rule], device, v, 1000 * i, "Tidak Sehat", "Unhealthy")])
        out.append(ev[0].state + ":" + ev[0].severity if ev else "-")
    return out


def test_hysteresis_dedup_and_lifecycle(tmp_path):
    eng = AlertEngine(AlertStore(tmp_path / "a.sqlite"))
    # opens once at > 100; hovering 95..105 does not flap; severity change is an update; resolves below 90
    seq = [50, 120, 130, 95, 105, 99, 250, 240, 91, 89, 95, 120, float("nan")]
    assert feed(eng, "ispu_unhealthy", seq) == [
        "-", "open:warning", "-", "-", "-", "-", "update:critical", "-", "update:warning", "resolved:warning",
        "-", "open:warning", "-"]
    alerts = eng.store.list()
    assert len(alerts) == 2 and {a.state for a in alerts} == {"open", "resolved"}
    assert len({a.alert_id for a in alerts}) == 2
    # state survives a restart: the open alert is not opened again
    eng2 = AlertEngine(AlertStore(tmp_path / "a.sqlite"))
    assert feed(eng2, "ispu_unhealthy", [130]) == ["-"]


def test_bilingual_text_and_routing(tmp_path):
    eng = AlertEngine(AlertStore(tmp_path / "a.sqlite"))
    (a,) = eng.evaluate([Condition(RULES["bin_full"], "bin-7", 95.0, 1)])
    assert a.department == "waste_department" and a.severity == "info"
    assert "Tempat sampah bin-7 (-, -) penuh (95%)" in a.text_id and "Waste bin bin-7 (-, -) is full (95%)" in a.text_en
    (w,) = eng.evaluate([Condition(RULES["water_noncompliant"], "wq-1", 3.0, 1, "kekeruhan 12", "turbidity 12")])
    assert w.department == "water_utility" and w.severity == "critical" and "kekeruhan 12" in w.text_id


class _Hook(BaseHTTPRequestHandler):
    fail_first = 2
    received: list[tuple[dict, bytes]] = []
    calls = 0

    def log_message(self, *a):  # noqa: ANN002
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        if type(self).calls <= type(self).fail_first:
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()


@pytest.mark.io
def test_signed_webhook_retries_until_delivered(tmp_path):
    _Hook.calls, _Hook.received, _Hook.fail_first = 0, [], 2
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        eng = AlertEngine(AlertStore(tmp_path / "a.sqlite"))
        (a,) = eng.evaluate([Condition(RULES["bin_fire"], "bin-1", 70.0, 1)])
        url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
        sleeps: list[float] = []
        assert delivery.post_webhook(url, b"s3cret", a, attempts=4, backoff_s=0.01, sleep=sleeps.append,
                                     rng=random.Random(3))
        # two 503s, then 204: the platform's full-jitter backoff, seeded (kotacerdas.backoff)
        r = random.Random(3)
        assert _Hook.calls == 3 and sleeps == [r.uniform(0, 0.01), r.uniform(0, 0.02)]
        headers, body = _Hook.received[0]
        assert delivery.verify(b"s3cret", body, headers[delivery.SIGNATURE_HEADER])
        assert not delivery.verify(b"wrong", body, headers[delivery.SIGNATURE_HEADER])
        got_doc = contract.decode_alert(body)  # the receiver's view: the contract's alert schema
        assert isinstance(got_doc, dict) and got_doc["alert_id"] == a.alert_id
        # a permanently failing endpoint gives up after `attempts`
        _Hook.calls, _Hook.fail_first = 0, 99
        assert not delivery.post_webhook(url, b"s3cret", a, attempts=3, backoff_s=0.0, sleep=lambda s: None)
        assert _Hook.calls == 3
    finally:
        srv.shutdown()


@pytest.mark.io
def test_email_over_real_smtp(tmp_path):
    got: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
            got.append(envelope)
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        eng = AlertEngine(AlertStore(tmp_path / "a.sqlite"))
        (a,) = eng.evaluate([Condition(RULES["water_noncompliant"], "wq-9", 0.2, 1, "pH 9.1", "pH 9.1")])
        assert delivery.send_email("127.0.0.1", port, "pdam@example.id", a)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0].rcpt_tos == ["pdam@example.id"]
        text = got[0].content.decode()
        assert "Permenkes 2/2023" in text and "breaches" in text and a.alert_id in text
        assert not delivery.send_email("127.0.0.1", free_port(), "x@example.id", a, timeout_s=2)  # nobody listening
    finally:
        ctl.stop()


def test_service_publishes_alerts_on_mqtt_and_serves_them_over_http(settings, influx):
    base = typical("air", 0.0, 1)
    influx.write(telemetry_lines("air", "air-smog", 30, 60, lambda n, i: 300.0 if n == "pm25" else base(n, i)))
    got: list = []
    sub = make_client(settings.mqtt)
    sub.on_message = lambda c, u, m: got.append(m)
    connect(sub, settings.mqtt)
    subscribed(sub, contract.alert_subscription(settings.mqtt.topic_root))
    pub = make_client(settings.mqtt)
    connect(pub, settings.mqtt)
    settings.analytics.admin_token = type(settings.analytics.admin_token)("tok-123")
    svc = AnalyticsService(settings, mqtt_client=pub, registry=CollectorRegistry())
    api = ApiServer(make_app(svc.store, svc.registry, "tok-123", lambda: {"influxdb": svc.influx.ping()}),
                    "127.0.0.1", 0).start()
    try:
        counts = svc.run_pass(now_ms=NOW, window_s=3600)
        assert counts["alerts"] == 1
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.topic for m in got] == [contract.alert_topic(settings.mqtt.topic_root, "environment_agency",
                                                               "critical")]
        doc = contract.decode_alert(got[0].payload)
        assert isinstance(doc, dict), doc
        assert doc["rule"] == "ispu_unhealthy" and doc["state"] == "open" and doc["value"] == 340.0  # PM2.5 300 ug/m3 -> ISPU 340

        base_url = f"http://127.0.0.1:{api.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        lst = httpx.get(f"{base_url}/alerts", params={"state": "active"}).json()
        assert [x["alert_id"] for x in lst] == [doc["alert_id"]]
        assert contract.validate_alert(lst[0]) is None
        ack = f"{base_url}/alerts/{doc['alert_id']}/ack"
        assert httpx.post(ack).status_code == 401
        assert httpx.post(ack, headers={"Authorization": "Bearer nope"}).status_code == 401
        r = httpx.post(ack, headers={"Authorization": "Bearer tok-123"}, params={"by": "dlh-depok"})
        assert r.status_code == 200 and r.json()["acknowledged"] is True and r.json()["ack_by"] == "dlh-depok"
        assert httpx.post(f"{base_url}/alerts/nope/ack", headers={"Authorization": "Bearer tok-123"}).status_code == 404
        assert httpx.get(f"{base_url}/readyz").json()["status"] == "ready"
        m = httpx.get(f"{base_url}/metrics").text
        assert 'kc_analytics_alerts_total{department="environment_agency",state="open"} 1.0' in m
    finally:
        api.stop()
        svc.close()
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def test_service_delivers_by_webhook_and_email_from_settings(settings, influx):
    _Hook.calls, _Hook.received, _Hook.fail_first = 0, [], 1
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    got: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
            got.append(envelope)
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    a = settings.analytics
    a.webhook_url = f"http://127.0.0.1:{srv.server_address[1]}/kc"
    a.webhook_secret = type(a.admin_token)("hook-secret")
    a.webhook_backoff_s = 0.05
    a.smtp_host, a.smtp_port = "127.0.0.1", port
    a.alert_email_to = {"environment_agency": "dlh@depok.example.id"}
    base = typical("air", 0.0, 1)
    influx.write(telemetry_lines("air", "air-smog", 30, 60, lambda n, i: 300.0 if n == "pm25" else base(n, i)))
    svc = AnalyticsService(settings)
    try:
        t = time.monotonic()
        assert svc.run_pass(now_ms=NOW, window_s=3600)["alerts"] == 1
        done = svc.flush_deliveries(timeout_s=30)
        assert done == {"webhook": 1, "email": 1}, done
        assert time.monotonic() - t < 30
    finally:
        svc.close()
        srv.shutdown()
        ctl.stop()
    headers, body = _Hook.received[0]
    assert _Hook.calls == 2  # one 503, then delivered
    assert delivery.verify(b"hook-secret", body, headers[delivery.SIGNATURE_HEADER])
    assert got[0].rcpt_tos == ["dlh@depok.example.id"] and "ISPU 340" in got[0].content.decode()
