"""A device's remote configuration: what may be pushed on its retained ``config`` topic, and
the per-device adapter settings the gateway keeps for Tasmota/ESPHome devices.

The device part follows exactly the firmware's own acceptance rules
(``firmware/device/kc_config.py`` ``validate_remote``, which runs on the device and cannot
import this package): a config the gateway accepts is one the firmware applies, and a config
the firmware would refuse is refused here with a 422 instead of being published retained.
``tests/kotacerdas/test_device_config.py`` runs both validators over the same cases and fails
if they disagree, and checks the calibration keys below against the firmware's defaults.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kotacerdas.catalogue import Kind
from kotacerdas.errors import ContractError

# the firmware's bounds on the reporting interval (kc_config.MIN_INTERVAL_S / MAX_INTERVAL_S)
MIN_INTERVAL_S = 5
MAX_INTERVAL_S = 86400
# the set-up AP a node opens by itself after this many failed rounds of its Wi-Fi networks
# (0: never), for this many seconds (kc_config.MAX_AP_FALLBACK_ROUNDS, MIN/MAX_AP_FALLBACK_S)
MAX_AP_FALLBACK_ROUNDS = 1000
MIN_AP_FALLBACK_S, MAX_AP_FALLBACK_S = 60, 900
# calibration constants each kind's firmware knows (kc_sensors.CAL_DEFAULTS keys)
CALIBRATION_KEYS: dict[str, frozenset[str]] = {
    "water": frozenset({"ph_v7", "ph_v4", "ph_cal_temp", "tds_k", "turb_offset_v", "do_cal_v", "do_cal_t",
                        "cl_v0", "cl_per_volt"}),
    "waste_bin": frozenset({"depth_cm", "full_cm"}),
    "air": frozenset({"no2_we0", "no2_ae0", "no2_sens", "o3_we0", "o3_ae0", "o3_sens", "co_we0", "co_ae0",
                      "co_sens", "o3_no2_sens", "pm_kappa", "gas_warmup_s"}),
}
DEVICE_KEYS = ("interval_s", "thresholds", "calibration", "ap_fallback_rounds", "ap_fallback_s")
# kept by the gateway for its Tasmota/ESPHome adapters, never sent to a device
ADAPTER_KEYS = ("tasmota_map", "esphome_map", "tz_offset_s")
# UTC offsets in use: -12:00 .. +14:00
TZ_MIN_S, TZ_MAX_S = -12 * 3600, 14 * 3600
_TASMOTA_KEY = re.compile(r"^[^.\s]{1,64}\.[^.\s]{1,64}$")  # "<Sensor>.<Quantity>", e.g. "DS18B20-2.Temperature"
_OBJECT_ID = re.compile(r"^[a-z0-9_-]{1,128}$")


class ConfigError(ContractError):
    """A config the device (or the gateway's adapters) would refuse; the message names the first problem."""


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_device_part(doc: dict[str, Any], kind: Kind) -> dict[str, Any]:
    """The firmware's rules for ``interval_s``/``thresholds``/``calibration``/``ap_fallback_*``; returns the
    normalised part."""
    out: dict[str, Any] = {}
    if "interval_s" in doc:
        iv = doc["interval_s"]
        if not _is_num(iv) or not MIN_INTERVAL_S <= iv <= MAX_INTERVAL_S:
            raise ConfigError(f"interval_s must be {MIN_INTERVAL_S}..{MAX_INTERVAL_S}")
        out["interval_s"] = iv
    if "thresholds" in doc:
        th = doc["thresholds"]
        if not isinstance(th, dict):
            raise ConfigError("thresholds must be an object")
        clean = {}
        for name, pair in th.items():
            if not kind.has_field(name):
                raise ConfigError(f"threshold for unknown field {str(name)[:32]}")
            if not isinstance(pair, list) or len(pair) != 2 or not (_is_num(pair[0]) and _is_num(pair[1])):
                raise ConfigError(f"threshold {name} must be [lo, hi]")
            if pair[0] > pair[1]:
                raise ConfigError(f"threshold {name}: lo > hi")
            clean[name] = [float(pair[0]), float(pair[1])]
        out["thresholds"] = clean
    if "calibration" in doc:
        cal = doc["calibration"]
        if not isinstance(cal, dict):
            raise ConfigError("calibration must be an object")
        keys = CALIBRATION_KEYS.get(kind.name, frozenset())
        for k, v in cal.items():
            if k not in keys:
                raise ConfigError(f"unknown calibration constant {str(k)[:32]}")
            if not _is_num(v):
                raise ConfigError(f"calibration {k} must be a finite number")
        out["calibration"] = dict(cal)
    for key, lo, hi in (("ap_fallback_rounds", 0, MAX_AP_FALLBACK_ROUNDS),
                        ("ap_fallback_s", MIN_AP_FALLBACK_S, MAX_AP_FALLBACK_S)):
        if key in doc:
            v = doc[key]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{key} must be an integer {lo}..{hi}")
            out[key] = v
    return out


def _field_map(doc: Any, key: str, kind: Kind, key_ok: re.Pattern) -> dict[str, str]:
    if not isinstance(doc, dict):
        raise ConfigError(f"{key} must be an object")
    for k, v in doc.items():
        if not isinstance(k, str) or not key_ok.match(k):
            raise ConfigError(f"{key}: bad source name {str(k)[:64]!r}")
        if not isinstance(v, str) or not kind.has_field(v):
            raise ConfigError(f"{key}: {k} maps to {str(v)[:32]!r}, not a {kind.name} field")
    return dict(doc)


def validate(doc: Any, kind: Kind) -> dict[str, Any]:
    """A whole device config (device part + adapter part) -> normalised dict, or ConfigError.

    Unknown keys are refused, as the firmware refuses them: a typo must not pass silently.
    """
    if not isinstance(doc, dict):
        raise ConfigError("config must be a JSON object")
    for key in doc:
        if key not in DEVICE_KEYS + ADAPTER_KEYS:
            raise ConfigError(f"unknown config key {str(key)[:32]}")
    out = validate_device_part(doc, kind)
    if "tasmota_map" in doc:
        out["tasmota_map"] = _field_map(doc["tasmota_map"], "tasmota_map", kind, _TASMOTA_KEY)
    if "esphome_map" in doc:
        out["esphome_map"] = _field_map(doc["esphome_map"], "esphome_map", kind, _OBJECT_ID)
    if "tz_offset_s" in doc:
        tz = doc["tz_offset_s"]
        if not isinstance(tz, int) or isinstance(tz, bool) or not TZ_MIN_S <= tz <= TZ_MAX_S:
            raise ConfigError(f"tz_offset_s must be an integer {TZ_MIN_S}..{TZ_MAX_S}")
        out["tz_offset_s"] = tz
    return out


def merge_patch(target: dict[str, Any], patch: Any) -> Any:
    """``patch`` applied to ``target`` as a JSON Merge Patch (RFC 7396, section 2): an object merges
    key by key, recursively; ``null`` removes the key; any other value (an array too) replaces it;
    a patch that is not an object replaces the whole target. ``target`` is not changed."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key, {}), value)
    return out


def device_part(config: dict[str, Any]) -> dict[str, Any]:
    """What is published to the device (the adapter settings stay with the gateway)."""
    return {k: config[k] for k in DEVICE_KEYS if k in config}
