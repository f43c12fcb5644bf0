"""The gateway's config check and the firmware's agree on every case (the firmware runs on the
device and cannot import kotacerdas, so this test is what keeps the two rule sets one)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from kotacerdas import device_config
from kotacerdas.catalogue import load_catalogue

DEVICE_DIR = Path(__file__).resolve().parents[2] / "firmware" / "device"
CAT = load_catalogue()


@pytest.fixture(scope="module")
def firmware():
    sys.path.insert(0, str(DEVICE_DIR))
    try:
        yield importlib.import_module("kc_config"), importlib.import_module("kc_sensors")
    finally:
        sys.path.remove(str(DEVICE_DIR))
        for m in ("kc_config", "kc_sensors", "kc_schema"):
            sys.modules.pop(m, None)


CASES = [
    {"interval_s": 60}, {"interval_s": 5}, {"interval_s": 86400}, {"interval_s": 4.99}, {"interval_s": 86401},
    {"interval_s": True}, {"interval_s": 0.001}, {"interval_s": float("inf")}, {"interval_s": float("nan")},
    {"interval_s": "60"}, {"interval_s": None}, {"interval_s": 1.8e308},
    {"thresholds": {"ph": [6.5, 8.5]}}, {"thresholds": {"ph": [8.5, 6.5]}}, {"thresholds": {"ph": 7}},
    {"thresholds": {"pm25": [0, 50]}}, {"thresholds": {"fill": [0, 80]}}, {"thresholds": {"nope": [0, 1]}},
    {"thresholds": {"ph": [0, True]}}, {"thresholds": {"ph": [0, 1, 2]}}, {"thresholds": []},
    {"calibration": {"ph_v7": 1.49}}, {"calibration": {"ph_v7": "1.49"}}, {"calibration": {"bogus": 1}},
    {"calibration": {"full_cm": 30}}, {"calibration": {"co_sens": 0.4}}, {"calibration": 3},
    {"fan": 1}, {},
    {"ap_fallback_rounds": 10}, {"ap_fallback_rounds": 0}, {"ap_fallback_rounds": 1000}, {"ap_fallback_rounds": 1001},
    {"ap_fallback_rounds": -1}, {"ap_fallback_rounds": 2.0}, {"ap_fallback_rounds": True}, {"ap_fallback_rounds": "9"},
    {"ap_fallback_s": 300}, {"ap_fallback_s": 60}, {"ap_fallback_s": 900}, {"ap_fallback_s": 59},
    {"ap_fallback_s": 901}, {"ap_fallback_s": 300.0}, {"ap_fallback_s": None},
    {"ap_fallback_rounds": 5, "ap_fallback_s": 120, "interval_s": 60},
    {"interval_s": 120, "thresholds": {"temperature": [-5, 40]}, "calibration": {"depth_cm": 110}},
]


@pytest.mark.parametrize("kind", ["water", "air", "waste_bin"])
@pytest.mark.parametrize("case", CASES, ids=[json.dumps(c) for c in CASES])
def test_gateway_accepts_exactly_what_the_firmware_applies(firmware, kind, case):
    kc_config, kc_sensors = firmware
    try:
        fw = kc_config.validate_remote({"v": 1, **case}, kind, kc_sensors.CAL_DEFAULTS[kind])
    except kc_config.ConfigError:
        fw = "refused"
    try:
        gw = device_config.validate(case, CAT[kind])
    except device_config.ConfigError:
        gw = "refused"
    assert gw == fw


def test_bounds_and_calibration_keys_are_the_firmwares(firmware):
    kc_config, kc_sensors = firmware
    assert (device_config.MIN_INTERVAL_S, device_config.MAX_INTERVAL_S) == (kc_config.MIN_INTERVAL_S,
                                                                            kc_config.MAX_INTERVAL_S)
    assert (device_config.MAX_AP_FALLBACK_ROUNDS, device_config.MIN_AP_FALLBACK_S, device_config.MAX_AP_FALLBACK_S) == (
        kc_config.MAX_AP_FALLBACK_ROUNDS, kc_config.MIN_AP_FALLBACK_S, kc_config.MAX_AP_FALLBACK_S)
    # config.json takes the same settings under the same rules as the config topic
    for case in ({"ap_fallback_rounds": 0}, {"ap_fallback_s": 900}, {"ap_fallback_rounds": 1001}, {"ap_fallback_s": 30}):
        try:
            fw = kc_config.validate_device({"kind": "air", "device": "A-1", **case})
            local = {k: fw[k] for k in case}
        except kc_config.ConfigError:
            local = "refused"
        try:
            remote = kc_config.validate_remote({"v": 1, **case}, "air", kc_sensors.CAL_DEFAULTS["air"])
        except kc_config.ConfigError:
            remote = "refused"
        assert local == remote
    assert {k: set(v) for k, v in device_config.CALIBRATION_KEYS.items()} == {
        k: set(v) for k, v in kc_sensors.CAL_DEFAULTS.items()}


def test_adapter_settings_are_checked_and_never_published():
    air = CAT["air"]
    cfg = device_config.validate({"interval_s": 60, "tasmota_map": {"DS18B20-2.Temperature": "temperature"},
                                  "esphome_map": {"kolam_pm": "pm25"}, "tz_offset_s": 28800}, air)
    assert device_config.device_part(cfg) == {"interval_s": 60}
    for bad in ({"tasmota_map": {"Temperature": "temperature"}}, {"tasmota_map": {"BME280.Temperature": "ph"}},
                {"esphome_map": {"Bad Name": "pm25"}}, {"esphome_map": []}, {"tz_offset_s": 99999},
                {"tz_offset_s": 7.5}, {"tz_offset_s": True}):
        with pytest.raises(device_config.ConfigError):
            device_config.validate(bad, air)


def test_backoff_cap_is_a_checked_local_setting(firmware):
    """config.json's ``backoff_cap_ms`` (the tests' way to bound a reconnect wait) is an integer in range."""
    kc_config, _ = firmware
    base = {"kind": "air", "device": "A-1"}
    assert "backoff_cap_ms" not in kc_config.validate_device(base) and kc_config.BACKOFF_CAP_MS == 60000
    assert kc_config.validate_device({**base, "backoff_cap_ms": 2000})["backoff_cap_ms"] == 2000
    for bad in (kc_config.MIN_BACKOFF_CAP_MS - 1, kc_config.MAX_BACKOFF_CAP_MS + 1, 2000.0, True, "2000", None):
        with pytest.raises(kc_config.ConfigError, match="backoff_cap_ms"):
            kc_config.validate_device({**base, "backoff_cap_ms": bad})


def test_merge_patch_is_rfc_7396():
    # RFC 7396 appendix A's examples, on config-shaped documents
    t = {"interval_s": 60, "thresholds": {"fill": [0, 80], "temperature": [0, 60]}, "tz_offset_s": 25200}
    assert device_config.merge_patch(t, {"interval_s": 120}) == {**t, "interval_s": 120}
    assert device_config.merge_patch(t, {"thresholds": {"fill": None}}) == {
        "interval_s": 60, "thresholds": {"temperature": [0, 60]}, "tz_offset_s": 25200}
    assert device_config.merge_patch(t, {"thresholds": None, "tz_offset_s": None}) == {"interval_s": 60}
    assert device_config.merge_patch(t, {"thresholds": {"fill": [10, 90]}})["thresholds"]["fill"] == [10, 90]  # arrays replace
    assert device_config.merge_patch({"a": [1]}, {"a": {"b": None}}) == {"a": {}}
    assert device_config.merge_patch(t, ["x"]) == ["x"] and device_config.merge_patch(t, {}) == t
    assert t["thresholds"] == {"fill": [0, 80], "temperature": [0, 60]}  # the target is not changed
