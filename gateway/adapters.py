"""Adapters for off-the-shelf firmware cities already own: Tasmota and ESPHome over MQTT.

Each adapter turns the vendor's message into OUR contract (telemetry topic + payload,
or status topic + payload) for a device in the registry; the result then goes through
exactly the same validation, dedup and forwarding as a native device's message. The
registry device id is the Tasmota ``%topic%`` or the ESPHome node name. Every result
keeps the ORIGINAL messages it came from (``Adapted.origins``), so a later rejection
dead-letters what the device really sent and the ledger counts messages, not readings.

Formats (the conformance corpus in ``tests/gateway/corpus/`` holds real payloads, each
citing its source):
- Tasmota: telemetry ``tele/<topic>/SENSOR`` carries JSON ``{"Time": ISO time, "<Sensor>":
  {"<Quantity>": value, ...}, "TempUnit": "C"|"F"}``; availability ``tele/<topic>/LWT`` is
  ``Online``/``Offline`` and ``tele/<topic>/STATE`` is the periodic health report
  (https://tasmota.github.io/docs/MQTT/), taken as "online". ``Time`` is local time
  without an offset unless ``SetOption52 1`` appends one (``+08:00``) - an explicit offset
  always wins over the configured one. Quantity keys (``PM2.5``, ``PM10``,
  ``CarbonDioxide``, ``Temperature``, ``Humidity``, ``Distance``, ``pH``) are those of
  Tasmota's PMS5003/SDS0X1/MH-Z19B/BME280/DS18B20/SR04/EZO drivers; the ANALOG block
  (https://tasmota.github.io/docs/ADC/, ``xsns_02_analog.ino``) suffixes the ADC index
  (``pH1``, ``Temperature1``), so a trailing index is ignored. ``"ESP32":{"Temperature":..}``
  is the chip's own die temperature (``xsns_127_esp32_sensors.ino``), never air or water.
- ESPHome: each component publishes its state as plain text on
  ``<topic_prefix>/<component>/<object_id>/state`` (topic_prefix defaults to the node name;
  esphome ``mqtt_component.cpp`` get_default_topic_for_), retained by default; sensors send
  a number (``nan`` when unavailable), binary sensors ``ON``/``OFF``
  (``mqtt_binary_sensor.cpp``); availability on ``<topic_prefix>/status`` as
  ``online``/``offline``. The object_id is the entity name snake-cased with other characters
  replaced by ``_`` (``Particulate Matter <2.5µm Concentration`` ->
  ``particulate_matter__2_5__m_concentration``, the count of ``_`` varying between versions),
  so names are matched by their words, not literally.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

from kotacerdas import contract
from kotacerdas.catalogue import Catalogue, Kind
from kotacerdas.contract import Reason, Rejection

from gateway.registry import Device

Lookup = Callable[[str], "Device | None"]
Message = tuple[str, bytes]

# Tasmota quantity key -> candidate catalogue field; only fields the device's kind has are used.
TASMOTA_QUANTITIES = {
    "PM2.5": "pm25", "PM10": "pm10", "CarbonDioxide": "co2", "Temperature": "temperature",
    "Humidity": "humidity", "Distance": "distance", "pH": "ph",
}
# Sensor objects that describe the board itself, not the environment (die temperature of the ESP32)
TASMOTA_BOARD_SENSORS = frozenset({"ESP32"})
_OLD_DATE = re.compile(r"^\d{4}\.\d\d\.\d\d[ T]")
_INDEX_SUFFIX = re.compile(r"^(.*?[A-Za-z])\d+$")  # "pH1" -> "pH"; "PM10" is matched exactly first

# ESPHome object_id words -> catalogue field. A name mapping to two fields is ambiguous (refused).
_ESPHOME_WORDS: dict[str, str] = {
    "temperature": "temperature", "temp": "temperature", "humidity": "humidity", "co2": "co2",
    "ph": "ph", "tds": "tds", "turbidity": "turbidity", "distance": "distance", "chlorine": "chlorine",
    "conductivity": "conductivity", "ec": "conductivity", "no2": "no2", "o3": "o3", "ozone": "o3",
    "co": "co", "fill": "fill", "tilt": "tilt",
}
_ESPHOME_PAIRS = {("carbon", "dioxide"): "co2", ("dissolved", "oxygen"): "dissolved_oxygen",
                  ("nitrogen", "dioxide"): "no2", ("carbon", "monoxide"): "co"}
# words marking the microcontroller's own sensor (ESPHome ``internal_temperature``)
_BOARD_WORDS = frozenset({"internal", "esp32", "esp8266", "chip", "cpu", "core", "die"})
# particle size in µm after "pm"/"particulate matter" -> field; 25 is "pm25" written without a point
_PM_SIZES = {2.5: "pm25", 25.0: "pm25", 10.0: "pm10"}


@dataclass
class Adapted:
    """One message in our contract, and the vendor messages it was made of."""

    topic: str
    payload: bytes
    origins: list[Message] = field(default_factory=list)


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


def _tasmota_json(topic: str, payload: bytes, prefix: str, leaf: str, lookup: Lookup
                  ) -> tuple[Device, dict] | Rejection | None:
    """The registered device and JSON object of a ``tele/<topic>/<leaf>`` message (None: not that topic)."""
    dev_id = _tasmota_topic(topic, prefix, leaf)
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
        return Rejection(Reason.NOT_AN_OBJECT, f"Tasmota {leaf} payload is not an object")
    return d, doc


def tasmota_field(sensor: str, quantity: str, kind: Kind, override: dict) -> str | None:
    """The catalogue field a Tasmota ``sensor.quantity`` feeds on this kind, or None."""
    name = override.get(f"{sensor}.{quantity}")
    if name is None:
        if sensor in TASMOTA_BOARD_SENSORS:
            return None
        name = TASMOTA_QUANTITIES.get(quantity)
        if name is None and (m := _INDEX_SUFFIX.match(quantity)):
            name = TASMOTA_QUANTITIES.get(m.group(1))
    return name if name and kind.has_field(name) else None


def tasmota_time_ms(t: str, offset_s: int) -> int:
    """Tasmota ``Time`` -> ms since the epoch. An explicit offset (SetOption52) beats ``offset_s``.

    Raises ValueError for anything that is not an ISO 8601 date-time.
    """
    if _OLD_DATE.match(t):  # Tasmota 5.x: "2018.02.15 01:00:50" (JSON Status Responses page)
        t = t.replace(".", "-", 2)
    local = dt.datetime.fromisoformat(t)
    if local.tzinfo is None:
        local = local.replace(tzinfo=dt.timezone(dt.timedelta(seconds=offset_s)))
    return int(local.timestamp() * 1000)


def tasmota_sensor(
    topic: str, payload: bytes, *, root: str, prefix: str, catalogue: Catalogue, lookup: Lookup, rx_ms: int,
    tz_offset_s: int,
) -> Adapted | Rejection | None:
    """``tele/<topic>/SENSOR`` -> our telemetry. None if the topic is not a Tasmota SENSOR."""
    got = _tasmota_json(topic, payload, prefix, "SENSOR", lookup)
    if got is None or isinstance(got, Rejection):
        return got
    d, doc = got
    kind = catalogue[d.kind]
    fahrenheit = doc.get("TempUnit") == "F"
    override: dict = d.config.get("tasmota_map") or {}  # {"DS18B20.Temperature": "temperature"}
    fields: dict[str, float] = {}
    for sensor, values in doc.items():
        if not isinstance(values, dict):
            continue
        for q, v in values.items():
            name = tasmota_field(sensor, q, kind, override)
            if name is None or name in fields:
                continue  # first environmental sensor reporting a quantity wins unless the config maps it
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return Rejection(Reason.WRONG_TYPE, f"{sensor}.{q} is not a number")
            v = float(v)
            if name == "temperature" and fahrenheit:
                v = (v - 32.0) * 5.0 / 9.0
            fields[name] = v
    if not fields:
        return Rejection(Reason.EMPTY_FIELDS, f"no {kind.name} quantity in Tasmota SENSOR payload")
    # Tasmota has no message counter and stamps whole seconds: the payload's checksum is the
    # sequence number (a redelivered copy is a duplicate, two different messages in one second
    # are not) and picks the millisecond inside that second (two readings, two InfluxDB points)
    crc = zlib.crc32(payload)
    ts = rx_ms
    t = doc.get("Time")
    if isinstance(t, str):
        try:
            ts = tasmota_time_ms(t, int(d.config.get("tz_offset_s", tz_offset_s)))
        except (ValueError, OverflowError):
            return Rejection(Reason.WRONG_TYPE, f"Time {t[:32]!r} is not an ISO timestamp")
        if ts % 1000 == 0:
            ts += crc % 1000
    return Adapted(contract.telemetry_topic(root, d.city, d.kind, d.device),
                   json.dumps({"v": 1, "ts": ts, "seq": crc & contract.SEQ_MAX, "fields": fields}).encode(),
                   [(topic, payload)])


def tasmota_lwt(topic: str, payload: bytes, *, root: str, prefix: str, lookup: Lookup, rx_ms: int
                ) -> Adapted | Rejection | None:
    dev_id = _tasmota_topic(topic, prefix, "LWT")
    if dev_id is None:
        return None
    d = _registered(dev_id, lookup)
    if isinstance(d, Rejection):
        return d
    state = payload.decode("utf-8", "replace").strip().lower()
    if state not in ("online", "offline"):
        return Rejection(Reason.WRONG_TYPE, f"Tasmota LWT {state[:16]!r} is not Online/Offline")
    return Adapted(contract.status_topic(root, d.city, d.kind, d.device), contract.encode_status(state, rx_ms),
                   [(topic, payload)])


def tasmota_state(topic: str, payload: bytes, *, root: str, prefix: str, lookup: Lookup, rx_ms: int
                  ) -> Adapted | Rejection | None:
    """``tele/<topic>/STATE`` (uptime, heap, Wi-Fi; sent every TelePeriod while connected) -> "online"."""
    got = _tasmota_json(topic, payload, prefix, "STATE", lookup)
    if got is None or isinstance(got, Rejection):
        return got
    d = got[0]
    return Adapted(contract.status_topic(root, d.city, d.kind, d.device), contract.encode_status("online", rx_ms),
                   [(topic, payload)])


def _esphome_parts(topic: str, prefix: str) -> list[str] | None:
    if not topic.startswith(prefix):
        return None
    return topic[len(prefix):].split("/")


def esphome_guess(object_id: str) -> str | None:
    """The catalogue field an ESPHome object_id names by its words, or None (unknown/ambiguous/board)."""
    words = re.findall(r"[a-z]+[0-9]*|[0-9]+", object_id.lower())
    if _BOARD_WORDS.intersection(words):
        return None
    for i, w in enumerate(words):
        if (w.startswith("pm") and (w[2:].isdigit() or w == "pm")) or w == "particulate":
            nums = [w[2:]] if w.startswith("pm") and w[2:] else []
            j = i + 1 + (words[i + 1:i + 2] == ["matter"])
            while j < len(words) and words[j].isdigit() and len(nums) < 2:
                nums.append(words[j])
                j += 1
            if nums:
                return _PM_SIZES.get(float(".".join(nums)))
            return None
    found = {_ESPHOME_WORDS[w] for w in words if w in _ESPHOME_WORDS}
    found |= {f for pair, f in _ESPHOME_PAIRS.items() if set(pair) <= set(words)}
    if "co" in found and len(found) > 1:
        found.discard("co")  # "co" inside "carbon monoxide"-style names already counted
    return found.pop() if len(found) == 1 else None


def esphome_field(object_id: str, device: Device, catalogue: Catalogue) -> str | None:
    kind = catalogue[device.kind]
    override: dict = device.config.get("esphome_map") or {}
    name = override.get(object_id)
    if name is None:
        name = object_id if kind.has_field(object_id) else esphome_guess(object_id)
    return name if name and kind.has_field(name) else None


def _esphome_value(component: str, payload: bytes, name: str, catalogue: Catalogue, kind: str
                   ) -> float | Rejection:
    text = payload.decode("utf-8", "replace").strip()
    if component == "binary_sensor":
        f = catalogue[kind].field(name)
        if (f.lo, f.hi) != (0.0, 1.0):
            return Rejection(Reason.WRONG_TYPE, f"binary sensor cannot feed {name} ({f.lo}..{f.hi})")
        if text not in ("ON", "OFF"):
            return Rejection(Reason.WRONG_TYPE, f"ESPHome binary state {text[:16]!r} is not ON/OFF")
        return 1.0 if text == "ON" else 0.0
    try:
        v = float(text)
    except ValueError:
        return Rejection(Reason.WRONG_TYPE, f"ESPHome state {payload[:16]!r} is not a number")
    if not math.isfinite(v):
        return Rejection(Reason.NOT_FINITE, f"{name} is {v}")
    f = catalogue[kind].field(name)
    if not f.in_range(v):  # refused alone, so it does not take the node's other values of this batch with it
        return Rejection(Reason.OUT_OF_RANGE, f"{name}={v} outside {f.lo}..{f.hi} (check the unit)")
    return v


def esphome_batch(
    msgs: list[tuple[str, bytes, bool]], *, root: str, prefix: str, catalogue: Catalogue, lookup: Lookup, rx_ms: int,
) -> list[tuple[list[Message], Adapted | Rejection]]:
    """ESPHome state/status messages (topic, payload, retained) of one batch -> our messages.

    ESPHome sends one value per message and no timestamp or counter, so the values of a
    device received in the same batch (the same receive time) become one reading. A
    retained state delivered at (re)subscription is an old value of unknown age: refused.
    """
    out: list[tuple[list[Message], Adapted | Rejection]] = []
    readings: dict[str, tuple[Device, dict[str, float], list[Message]]] = {}
    for topic, payload, retained in msgs:
        origin = [(topic, payload)]
        parts = _esphome_parts(topic, prefix) or []
        if len(parts) == 2 and parts[1] == "status":
            d = _registered(parts[0], lookup)
            if isinstance(d, Rejection):
                out.append((origin, d))
                continue
            state = payload.decode("utf-8", "replace").strip().lower()
            if state not in ("online", "offline"):
                out.append((origin, Rejection(Reason.WRONG_TYPE, f"ESPHome status {state[:16]!r}")))
                continue
            out.append((origin, Adapted(contract.status_topic(root, d.city, d.kind, d.device),
                                        contract.encode_status(state, rx_ms), origin)))
            continue
        if len(parts) != 4 or parts[1] not in ("sensor", "binary_sensor") or parts[3] != "state":
            out.append((origin, Rejection(Reason.BAD_TOPIC, f"not an ESPHome state topic: {topic[:64]!r}")))
            continue
        d = _registered(parts[0], lookup)
        if isinstance(d, Rejection):
            out.append((origin, d))
            continue
        name = esphome_field(parts[2], d, catalogue)
        if name is None:
            out.append((origin, Rejection(Reason.UNKNOWN_FIELD, f"ESPHome {parts[1]} {parts[2][:48]!r} maps to no "
                                                                f"{d.kind} field (set esphome_map)")))
            continue
        if retained:
            out.append((origin, Rejection(Reason.RETAINED_REPLAY, f"retained {name} replayed at subscription; "
                                                                  "ESPHome sends no time, its age is unknown")))
            continue
        v = _esphome_value(parts[1], payload, name, catalogue, d.kind)
        if isinstance(v, Rejection):
            out.append((origin, v))
            continue
        dev_fields, dev_origins = readings.setdefault(d.device, (d, {}, []))[1:]
        if name in dev_fields:  # a second value of the same field in one batch: its own reading
            out.append(_esphome_reading(root, d, dev_fields, dev_origins, rx_ms))
            dev_fields, dev_origins = {}, []
            readings[d.device] = (d, dev_fields, dev_origins)
            rx_ms += 1
        dev_fields[name] = v
        dev_origins.append((topic, payload))
    for d, fields, origins in readings.values():
        if fields:
            out.append(_esphome_reading(root, d, fields, origins, rx_ms))
    return out


def _esphome_reading(root: str, d: Device, fields: dict[str, float], origins: list[Message], rx_ms: int
                     ) -> tuple[list[Message], Adapted]:
    seq = (rx_ms // 1000) & contract.SEQ_MAX  # monotonic like a real counter; (seq, ts) stays unique
    return origins, Adapted(contract.telemetry_topic(root, d.city, d.kind, d.device),
                            json.dumps({"v": 1, "ts": rx_ms, "seq": seq, "fields": dict(fields)}).encode(),
                            list(origins))
