"""The conformance corpus, decided by the gateway's pure parts: adapters, contract, registry checks, dedup.

Every message has exactly one outcome, and it is the one the corpus states. The same corpus runs
end to end through the real services in ``test_corpus_ledger.py``.
"""

from __future__ import annotations

import json
import time

import pytest

from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Limits, Rejection

from gateway import adapters
from gateway.core import dedup_key, normalise_telemetry, parse_status
from gateway.registry import DECOMMISSIONED, Device
from tests.gateway import corpus

CAT = load_catalogue()
NOW_S = int(time.time())
DEVICES, ENTRIES = corpus.load(NOW_S)


def _devices() -> dict[str, Device]:
    decommissioned = {e.decommission for e in ENTRIES if e.decommission}
    return {d["device"]: Device(d["device"], d["kind"], d["city"],
                                status=DECOMMISSIONED if d["device"] in decommissioned else "active")
            for d in DEVICES}


def outcome(e: corpus.Entry, devs: dict[str, Device], seen: set, now_ms: int) -> tuple[str, object]:
    """("stored", fields | "status") or ("rejected", reason) for one corpus message."""
    if e.vendor == "tasmota":
        res = None
        for f in (adapters.tasmota_lwt, adapters.tasmota_state):
            res = res or f(e.topic, e.payload, root="kc", prefix="", lookup=devs.get, rx_ms=now_ms)
        res = res or adapters.tasmota_sensor(e.topic, e.payload, root="kc", prefix="", catalogue=CAT,
                                             lookup=devs.get, rx_ms=now_ms, tz_offset_s=corpus.WIB)
    else:
        [(origins, res)] = adapters.esphome_batch([(e.topic, e.payload, e.retain)], root="kc", prefix="",
                                                  catalogue=CAT, lookup=devs.get, rx_ms=now_ms)
        assert origins == [(e.topic, e.payload)]
    assert res is not None, f"{e.id}: no adapter took {e.topic}"
    if isinstance(res, Rejection):
        return "rejected", res.reason.value
    assert res.origins == [(e.topic, e.payload)]
    if res.topic.endswith("/status"):
        st = parse_status(res.topic, res.payload, root="kc", limits=Limits(), catalogue=CAT, lookup=devs.get)
        assert st is not None and not isinstance(st, Rejection), st
        return "stored", "status"
    r = normalise_telemetry(res.topic, res.payload, now_ms, root="kc", limits=Limits(), catalogue=CAT,
                            lookup=devs.get)
    if isinstance(r, Rejection):
        return "rejected", r.reason.value
    if dedup_key(r) in seen:
        return "rejected", "duplicate"
    seen.add(dedup_key(r))
    return "stored", r.fields


def test_every_corpus_message_has_the_documented_outcome():
    devs, seen, now_ms = _devices(), set(), NOW_S * 1000 + 500
    # one message per batch, each received a millisecond after the one before
    got = {e.id: outcome(e, devs, seen, now_ms + i) for i, e in enumerate(ENTRIES)}
    want = {e.id: ("stored", e.expect["stored"]) if e.stored else ("rejected", e.reason) for e in ENTRIES}
    for e in ENTRIES:
        kind, value = got[e.id]
        if kind == "stored" and isinstance(value, dict):
            got[e.id] = ("stored", {k: pytest.approx(v, abs=1e-9) for k, v in value.items()})
    assert got == want


def test_corpus_cites_a_source_for_every_entry_and_covers_the_formats():
    assert all(e.source.strip() for e in ENTRIES)
    text = " ".join(e.payload.decode() for e in ENTRIES)
    for needle in ('"ESP32":', '"ANALOG":', '"BME280":', '"SDS0X1":', '"PMS5003":', '"DS18B20', "+08:00", "+09:00"):
        assert needle in text, needle
    topics = " ".join(e.topic for e in ENTRIES)
    assert "/STATE" in topics and "/binary_sensor/" in topics and any(e.retain for e in ENTRIES)
    assert len({e.id for e in ENTRIES}) == len(ENTRIES)


def test_explicit_offset_wins_and_wib_is_only_the_default():
    devs = _devices()
    at = {}
    for off, city in (("+07:00", "wib"), ("+08:00", "wita"), ("+09:00", "wit")):
        a = adapters.tasmota_sensor("tele/tas-bin-wit/SENSOR",
                                    b'{"Time":"2026-11-23T21:00:00%s","SR04":{"Distance":50}}' % off.encode(),
                                    root="kc", prefix="", catalogue=CAT, lookup=devs.get, rx_ms=0,
                                    tz_offset_s=corpus.WIB)
        at[city] = json.loads(a.payload)["ts"] // 1000
    assert at["wib"] - at["wita"] == 3600 and at["wita"] - at["wit"] == 3600
    # a device's own tz_offset_s applies to offset-less times; an explicit offset still wins
    devs["tas-bin-wit"].config["tz_offset_s"] = 9 * 3600
    a = adapters.tasmota_sensor("tele/tas-bin-wit/SENSOR", b'{"Time":"2026-11-23T21:00:00","SR04":{"Distance":50}}',
                                root="kc", prefix="", catalogue=CAT, lookup=devs.get, rx_ms=0, tz_offset_s=corpus.WIB)
    assert json.loads(a.payload)["ts"] // 1000 == at["wit"]


def test_two_tasmota_messages_in_one_second_are_two_readings_and_a_copy_is_one():
    devs = _devices()
    p1 = b'{"Time":"2026-11-23T21:00:00","SDS0X1":{"PM2.5":3.0,"PM10":4.0}}'
    p2 = b'{"Time":"2026-11-23T21:00:00","SDS0X1":{"PM2.5":3.5,"PM10":4.0}}'

    def key(p: bytes) -> tuple[int, int]:
        d = json.loads(adapters.tasmota_sensor("tele/tas-air-8266/SENSOR", p, root="kc", prefix="", catalogue=CAT,
                                               lookup=devs.get, rx_ms=0, tz_offset_s=corpus.WIB).payload)
        return d["seq"], d["ts"]

    assert key(p1) == key(p1)
    assert key(p1)[0] != key(p2)[0] and key(p1)[1] != key(p2)[1]  # distinct dedup key AND distinct InfluxDB point
    assert key(p1)[1] // 1000 == key(p2)[1] // 1000  # both inside the second Tasmota stamped


@pytest.mark.parametrize("object_id,field", [
    ("pm_2_5", "pm25"), ("pm2_5", "pm25"), ("pm25", "pm25"), ("pm10_0", "pm10"), ("pm_10", "pm10"),
    ("particulate_matter__2_5__m_concentration", "pm25"), ("pm__10_0__m_concentration", "pm10"),
    ("particulate_matter_2_5_m_concentration", "pm25"), ("particulate_matter_2_5um_concentration", "pm25"),
    ("particulate_matter_10_0_m_concentration", "pm10"), ("pm_2_5_concentration", "pm25"), ("pm10", "pm10"),
    ("pm_1_0", None), ("pmc_0_3", None), ("bme280_temperature", "temperature"), ("sht31_humidity", "humidity"),
    ("scd30_co2", "co2"), ("carbon_dioxide", "co2"), ("internal_temperature", None), ("esp32_temperature", None),
    ("ph_sensor", "ph"), ("dissolved_oxygen", "dissolved_oxygen"), ("uptime", None), ("ph_temperature", None),
])
def test_esphome_object_ids_are_matched_by_their_words(object_id, field):
    assert adapters.esphome_guess(object_id) == field
