"""Adapters for off-the-shelf firmware cities already own: Tasmota and ESPHome over MQTT.

Each adapter turns the vendor's message into OUR contract (telemetry topic + payload,
or status topic + payload) for a device in the registry; the result then goes through
exactly the same validation, dedup and forwarding as a native device's message. The
registry device id is the Tasmota ``%topic%`` or the ESPHome node name.

Formats:
- Tasmota: telemetry ``tele/<topic>/SENSOR`` carries JSON ``{"Time": local ISO time,
  "<Sensor>": {"<Quantity>": value, ...}, "TempUnit": "C"|"F"}``; availability
  ``tele/<topic>/LWT`` is ``Online``/``Offline`` (Tasmota docs, "MQTT" and sensor pages,
  https://tasmota.github.io/docs/MQTT/ ; quantity keys such as ``PM2.5``, ``PM10``,
  ``CarbonDioxide``, ``Temperature``, ``Humidity``, ``Distance`` are the ones Tasmota's
  PMS5003/SDS011/MH-Z19B/SCD30/BME280/SR04 drivers emit).
- ESPHome: each sensor publishes its value as plain text on
  ``<topic_prefix>/sensor/<object_id>/state`` (topic_prefix defaults to the node name;
  esphome ``mqtt_component.cpp`` get_default_topic_for_), availability on
  ``<topic_prefix>/status`` as ``online``/``offline``; an unavailable value is ``nan``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Callable

from kotacerdas import contract
from kotacerdas.catalogue import Catalogue
from kotacerdas.contract import Reason, Rejection

from gateway.registry import Device

Lookup = Callable[[str], "Device | None"]

# Tasmota quantity key -> candidate catalogue field; only fields the device's kind has are used.
TASMOTA_QUANTITIES = {
    "PM2.5": "pm25", "PM10": "pm10", "CarbonDioxide": "co2", "Temperature": "temperature",
    "Humidity": "humidity", "Distance": "distance", "pH": "ph",
}
# ESPHome object_id (the sensor name, snake_cased by ESPHome) -> catalogue field, besides exact names.
ESPHOME_ALIASES = {
    "pm_2_5": "pm25", "pm2_5": "pm25", "pm_10": "pm10", "pm_10_0": "pm10", "carbon_dioxide": "co2",
    "ph_value": "ph", "water_temperature": "temperature", "dissolved_oxygen": "dissolved_oxygen",
}


def _tasmota_topic(topic: str, prefix: str, leaf: str) -> str | None:
    """The Tasmota device topic in ``{prefix}tele/<topic>/<leaf>``; None if it is not that shape."""
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix):].split("/")
    if len(parts) != 3 or parts[0] != "tele" or parts[2] != leaf:
        return None
    return parts[1]


def _registered(device_id: str, lookup: Lookup) -> Device | Rejection:
    d = lookup(device_id)
    if d is None:
        return Rejection(Reason.UNKNOWN_DEVICE, f"device {device_id[:64]!r} is not registered")
    if not d.active:
        return Rejection(Reason.DECOMMISSIONED, f"device {device_id!r} was decommissioned")
    return d


def tasmota_sensor(
    topic: str, payload: bytes, *, root: str, prefix: str, catalogue: Catalogue, lookup: Lookup, rx_ms: int,
    tz_offset_s: int,
) -> tuple[str, bytes] | Rejection | None:
    """``tele/<topic>/SENSOR`` -> our telemetry (topic, payload). None if the topic is not a Tasmota SENSOR."""
    dev_id = _tasmota_topic(topic, prefix, "SENSOR")
    if dev_id is None:
        return None
    d = _registered(dev_id, lookup)
    if isinstance(d, Rejection):
        return d
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "Tasmota SENSOR payload is not an object")
    kind = catalogue[d.kind]
    fahrenheit = doc.get("TempUnit") == "F"
    override: dict = d.config.get("tasmota_map") or {}  # {"BME280.Temperature": "temperature"}
    fields: dict[str, float] = {}
    for sensor, values in doc.items():
        if not isinstance(values, dict):
            continue
        for q, v in values.items():
            name = override.get(f"{sensor}.{q}") or TASMOTA_QUANTITIES.get(q)
            if name is None or not kind.has_field(name) or name in fields:
                continue  # first sensor reporting a quantity wins unless the device config maps it
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return Rejection(Reason.WRONG_TYPE, f"{sensor}.{q} is not a number")
            v = float(v)
            if name == "temperature" and fahrenheit:
                v = (v - 32.0) * 5.0 / 9.0
            fields[name] = v
    if not fields:
        return Rejection(Reason.EMPTY_FIELDS, f"no {kind.name} quantity in Tasmota SENSOR payload")
    ts = rx_ms
    t = doc.get("Time")
    if isinstance(t, str):
        # Tasmota stamps local time without an offset; the device's (or the city's) UTC offset applies
        try:
            local = dt.datetime.fromisoformat(t.replace(".", "-", 2) if t.count(".") == 2 else t)
            offset = int(d.config.get("tz_offset_s", tz_offset_s))
            ts = int((local.replace(tzinfo=dt.timezone.utc).timestamp() - offset) * 1000)
        except ValueError:
            return Rejection(Reason.WRONG_TYPE, f"Time {t[:32]!r} is not an ISO timestamp")
    # no sequence number in Tasmota: its telemetry period is >= 10 s, so the second is unique per reading
    seq = (ts // 1000) & contract.SEQ_MAX
    return (contract.telemetry_topic(root, d.city, d.kind, d.device),
            json.dumps({"v": 1, "ts": ts, "seq": seq, "fields": fields}, allow_nan=True).encode())


def tasmota_lwt(topic: str, payload: bytes, *, root: str, prefix: str, lookup: Lookup, rx_ms: int
                ) -> tuple[str, bytes] | Rejection | None:
    dev_id = _tasmota_topic(topic, prefix, "LWT")
    if dev_id is None:
        return None
    d = _registered(dev_id, lookup)
    if isinstance(d, Rejection):
        return d
    state = payload.decode("utf-8", "replace").strip().lower()
    if state not in ("online", "offline"):
        return Rejection(Reason.WRONG_TYPE, f"Tasmota LWT {state[:16]!r} is not Online/Offline")
    return contract.status_topic(root, d.city, d.kind, d.device), contract.encode_status(state, rx_ms)


def _esphome_parts(topic: str, prefix: str) -> list[str] | None:
    if not topic.startswith(prefix):
        return None
    return topic[len(prefix):].split("/")


def esphome_field(object_id: str, device: Device, catalogue: Catalogue) -> str | None:
    kind = catalogue[device.kind]
    override: dict = device.config.get("esphome_map") or {}
    name = override.get(object_id) or (object_id if kind.has_field(object_id) else ESPHOME_ALIASES.get(object_id))
    return name if name and kind.has_field(name) else None


def esphome_batch(
    msgs: list[tuple[str, bytes]], *, root: str, prefix: str, catalogue: Catalogue, lookup: Lookup, rx_ms: int,
) -> list[tuple[str, tuple[str, bytes] | Rejection]]:
    """ESPHome state/status messages of one batch -> our messages, keyed by the original topic.

    ESPHome sends one value per message and no timestamp or counter, so the values of a
    device received in the same batch (the same receive time) become one reading.
    """
    out: list[tuple[str, tuple[str, bytes] | Rejection]] = []
    readings: dict[str, tuple[Device, dict[str, float], str]] = {}
    for topic, payload in msgs:
        parts = _esphome_parts(topic, prefix)
        if parts is None:
            continue
        if len(parts) == 2 and parts[1] == "status":
            d = _registered(parts[0], lookup)
            if isinstance(d, Rejection):
                out.append((topic, d))
                continue
            state = payload.decode("utf-8", "replace").strip().lower()
            if state not in ("online", "offline"):
                out.append((topic, Rejection(Reason.WRONG_TYPE, f"ESPHome status {state[:16]!r}")))
                continue
            out.append((topic, (contract.status_topic(root, d.city, d.kind, d.device),
                                contract.encode_status(state, rx_ms))))
            continue
        if len(parts) != 4 or parts[1] != "sensor" or parts[3] != "state":
            continue
        d = _registered(parts[0], lookup)
        if isinstance(d, Rejection):
            out.append((topic, d))
            continue
        name = esphome_field(parts[2], d, catalogue)
        if name is None:
            out.append((topic, Rejection(Reason.UNKNOWN_FIELD, f"ESPHome sensor {parts[2][:32]!r} maps to no "
                                                               f"{d.kind} field")))
            continue
        try:
            v = float(payload.decode("utf-8").strip())
        except (UnicodeDecodeError, ValueError):
            out.append((topic, Rejection(Reason.WRONG_TYPE, f"ESPHome state {payload[:16]!r} is not a number")))
            continue
        if not math.isfinite(v):
            out.append((topic, Rejection(Reason.NOT_FINITE, f"{name} is {v}")))
            continue
        readings.setdefault(d.device, (d, {}, topic))[1][name] = v
    for _dev, (d, fields, topic) in readings.items():
        seq = (rx_ms // 1000) & contract.SEQ_MAX  # monotonic like a real counter; (seq, ts) stays unique
        out.append((topic, (contract.telemetry_topic(root, d.city, d.kind, d.device),
                            json.dumps({"v": 1, "ts": rx_ms, "seq": seq, "fields": fields}).encode())))
    return out
