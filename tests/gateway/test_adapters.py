"""Tasmota and ESPHome adapters: pure mapping, then through the broker and the running gateway."""

from __future__ import annotations

import calendar
import json
import time

import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Reason, Rejection
from kotacerdas.mqtt import connect, make_client, wait_published

from gateway import adapters
from gateway.registry import Device, Registry
from gateway.service import Gateway
from tests.gateway.helpers import Collector, normalized, reasons, wait_for

CAT = load_catalogue()
DEVS = {
    "tasmota-air": Device("tasmota-air", "air", "depok", district="beji", department="environment_agency"),
    "tasmota-bin": Device("tasmota-bin", "waste_bin", "depok", config={"tz_offset_s": 0}),
    "esp-water": Device("esp-water", "water", "bogor", config={"esphome_map": {"kolam_ph": "ph"}}),
    "old": Device("old", "air", "depok", status="decommissioned"),
}
lookup = DEVS.get

# a PMS5003 + BME280 + MH-Z19B node as Tasmota 13 reports it (local time, WIB)
TASMOTA_AIR = (b'{"Time":"2026-11-23T21:00:00","PMS5003":{"CF1":3,"CF2.5":5,"CF10":6,"PM1":3,"PM2.5":12,"PM10":20,'
               b'"PB0.3":600},"BME280":{"Temperature":29.5,"Humidity":78.1,"DewPoint":25.3,"Pressure":1008.2},'
               b'"MHZ19B":{"Model":"B","CarbonDioxide":612,"Temperature":31.0},"PressureUnit":"hPa","TempUnit":"C"}')


def tas(topic: str, payload: bytes, rx: int = 0):
    return adapters.tasmota_sensor(topic, payload, root="kc", prefix="", catalogue=CAT, lookup=lookup, rx_ms=rx,
                                   tz_offset_s=7 * 3600)


def test_tasmota_sensor_maps_quantities_time_and_units():
    a = tas("tele/tasmota-air/SENSOR", TASMOTA_AIR)
    topic, payload = a.topic, a.payload
    assert a.origins == [("tele/tasmota-air/SENSOR", TASMOTA_AIR)]
    assert topic == "kc/v1/depok/air/tasmota-air/telemetry"
    doc = json.loads(payload)
    # first sensor reporting a quantity wins (BME280 temperature, not the MH-Z19B's internal one)
    assert doc["fields"] == {"pm25": 12.0, "pm10": 20.0, "temperature": 29.5, "humidity": 78.1, "co2": 612.0}
    utc14 = calendar.timegm((2026, 11, 23, 14, 0, 0)) * 1000
    assert utc14 <= doc["ts"] < utc14 + 1000  # 21:00 WIB = 14:00 UTC (ms inside the second from the payload)
    r = contract.validate_telemetry(topic, payload, doc["ts"], root="kc")
    assert not isinstance(r, Rejection) and r.device == "tasmota-air"
    # Fahrenheit is converted, the waste bin takes only its own quantities, its config sets UTC
    a2 = tas("tele/tasmota-bin/SENSOR", b'{"Time":"2026-11-23T14:00:00","SR04":{"Distance":42.5},'
                                       b'"DS18B20":{"Temperature":98.6},"TempUnit":"F"}')
    d2 = json.loads(a2.payload)
    assert d2["fields"] == {"distance": 42.5, "temperature": pytest.approx(37.0)}
    assert utc14 <= d2["ts"] < utc14 + 1000


@pytest.mark.parametrize("topic,payload,reason", [
    ("tele/ghost/SENSOR", TASMOTA_AIR, Reason.UNKNOWN_DEVICE),
    ("tele/old/SENSOR", TASMOTA_AIR, Reason.DECOMMISSIONED),
    ("tele/tasmota-air/SENSOR", b"{nope", Reason.MALFORMED_JSON),
    ("tele/tasmota-air/SENSOR", b'{"Time":"2026-11-23T21:00:00","ANALOG":{"A0":512}}', Reason.EMPTY_FIELDS),
    ("tele/tasmota-air/SENSOR", b'{"SDS0X1":{"PM2.5":"lots"}}', Reason.WRONG_TYPE),
    ("tele/tasmota-air/SENSOR", b'{"Time":"yesterday","SDS0X1":{"PM2.5":3}}', Reason.WRONG_TYPE),
])
def test_tasmota_rejections(topic, payload, reason):
    r = tas(topic, payload)
    assert isinstance(r, Rejection) and r.reason == reason


def test_tasmota_lwt_and_foreign_topics():
    assert tas("stat/tasmota-air/RESULT", b"{}") is None
    a = adapters.tasmota_lwt("tele/tasmota-air/LWT", b"Offline", root="kc", prefix="", lookup=lookup, rx_ms=5)
    t, p = a.topic, a.payload
    assert t == "kc/v1/depok/air/tasmota-air/status" and json.loads(p)["state"] == "offline"


def test_esphome_values_of_one_batch_become_one_reading():
    out = adapters.esphome_batch([
        ("esp-water/sensor/kolam_ph/state", b"7.25", False),
        ("esp-water/sensor/temperature/state", b"28.4", False),
        ("esp-water/sensor/wifi_signal/state", b"-60", False),
        ("esp-water/sensor/tds/state", b"nan", False),
        ("esp-water/status", b"online", False),
        ("esp-water/switch/pump/state", b"ON", False),
        ("ghost/sensor/temperature/state", b"20", False),
    ], root="kc", prefix="", catalogue=CAT, lookup=lookup, rx_ms=1_795_924_800_123)
    rej = {o[0][0]: r.reason for o, r in out if isinstance(r, Rejection)}
    assert rej == {"esp-water/sensor/wifi_signal/state": Reason.UNKNOWN_FIELD,
                   "esp-water/sensor/tds/state": Reason.NOT_FINITE,
                   "esp-water/switch/pump/state": Reason.BAD_TOPIC,
                   "ghost/sensor/temperature/state": Reason.UNKNOWN_DEVICE}
    ok = [r for _, r in out if not isinstance(r, Rejection)]
    status = [r for r in ok if r.topic.endswith("/status")]
    tele = [r for r in ok if r.topic.endswith("/telemetry")]
    assert status[0].topic == "kc/v1/bogor/water/esp-water/status"
    assert len(tele) == 1 and json.loads(tele[0].payload)["fields"] == {"ph": 7.25, "temperature": 28.4}
    assert json.loads(tele[0].payload)["ts"] == 1_795_924_800_123
    # the reading remembers both messages it was made of (dead letters and the ledger count those)
    assert [t for t, _ in tele[0].origins] == ["esp-water/sensor/kolam_ph/state", "esp-water/sensor/temperature/state"]
    # every message handed in has exactly one outcome
    assert sum(len(o) for o, _ in out) == 7


def test_adapters_through_the_broker_and_gateway(settings, uid):
    s = settings
    root = s.mqtt.topic_root
    s.gateway.adapters = ["tasmota", "esphome"]
    s.gateway.tasmota_prefix = f"x{uid}/"  # a per-test prefix keeps the shared broker's other tests apart
    s.gateway.esphome_prefix = f"y{uid}/"
    with Registry(s.gateway.registry_path) as reg:
        reg.register("tasmota-air", "air", "depok", district="beji")
        reg.register("esp-water", "water", "bogor", district="tanah-sareal")
    col = Collector(s.mqtt, f"{root}/v1/_platform/#")
    gw = Gateway(s).start()
    c = make_client(s.mqtt)
    connect(c, s.mqtt)
    try:
        now_local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 7 * 3600))
        tas_payload = TASMOTA_AIR.replace(b"2026-11-23T21:00:00", now_local.encode())
        infos = [c.publish(f"x{uid}/tele/tasmota-air/SENSOR", tas_payload, qos=1),
                 c.publish(f"x{uid}/tele/tasmota-air/SENSOR", tas_payload, qos=1),  # redelivery: a duplicate
                 c.publish(f"x{uid}/tele/tasmota-air/LWT", b"Online", qos=1, retain=False),
                 c.publish(f"y{uid}/esp-water/sensor/ph/state", b"7.1", qos=1),
                 c.publish(f"x{uid}/tele/ghost/SENSOR", tas_payload, qos=1)]
        wait_published(infos)
        assert wait_for(lambda: len(normalized(col, root)) == 2 and len(reasons(col, root)) == 2)
        norm = {n["device"]: n for n in normalized(col, root)}
        assert norm["tasmota-air"]["fields"]["pm25"] == 12.0 and norm["tasmota-air"]["district"] == "beji"
        assert abs(norm["tasmota-air"]["ts"] - time.time() * 1000) < 5000  # WIB local time mapped to UTC
        assert norm["esp-water"]["fields"] == {"ph": 7.1} and norm["esp-water"]["city"] == "bogor"
        assert sorted(reasons(col, root)) == ["duplicate", "unknown_device"]
        ghost = [json.loads(p) for t, p in col.msgs if t.endswith("/unknown_device")][0]
        assert ghost["topic"] == f"x{uid}/tele/ghost/SENSOR"  # the dead letter names the original topic
        assert wait_for(lambda: (gw.device_state("tasmota-air") or {}).get("state") == "online")
        assert gw.metrics.registry.get_sample_value("kc_gateway_received_total", {"channel": "tasmota"}) == 4
    finally:
        c.disconnect()
        c.loop_stop()
        gw.stop()
        col.close()
