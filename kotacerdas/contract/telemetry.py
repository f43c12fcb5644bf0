"""Telemetry: the device payload (encode, validate one or a batch) and the gateway's normalised
form that ingest decodes. Validation never raises on input: it returns a :class:`Rejection`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract.base import (RSSI_MAX, RSSI_MIN, SEQ_MAX, SUPPORTED_VERSIONS, TS_MAX_MS, VERSION, Limits,
                                      Reason, Rejection, is_int, is_number, opt_finite)
from kotacerdas.contract.topics import CH_TELEMETRY, NORMALIZED_BATCH, DeviceTopic, parse_device_topic

__all__ = ["BATCH_HEAD", "NormalizedReading", "Reading", "TelemetryValidator", "batch_readings", "decode_normalized",
           "decode_normalized_batch", "encode_normalized", "encode_normalized_batch", "encode_telemetry",
           "normalized_batch_count", "normalized_doc", "split_normalized_batch", "validate_telemetry"]

@dataclass
class Reading:
    """One validated telemetry message. Times are integer milliseconds since the Unix epoch (UTC)."""

    city: str
    kind: str
    device: str
    ts_ms: int
    seq: int
    fields: dict[str, float]
    battery: float | None = None
    fw: str | None = None
    rssi: int | None = None


@dataclass
class NormalizedReading(Reading):
    """A reading after the gateway: enriched with registry metadata and receive time."""

    district: str = "unknown"
    department: str = ""
    lat: float | None = None
    lon: float | None = None
    rx_ms: int = 0
    extra_tags: dict[str, str] = field(default_factory=dict)


def encode_telemetry(
    ts_ms: int,
    seq: int,
    fields: Mapping[str, float],
    *,
    battery: float | None = None,
    fw: str | None = None,
    rssi: int | None = None,
) -> bytes:
    """Telemetry payload, compact JSON: ``{"v":1,"ts":..,"seq":..,"fields":{..},"bat":..,"fw":..}``."""
    doc: dict[str, Any] = {"v": VERSION, "ts": int(ts_ms), "seq": int(seq), "fields": dict(fields)}
    if battery is not None:
        doc["bat"] = battery
    if fw is not None:
        doc["fw"] = fw
    if rssi is not None:
        doc["rssi"] = rssi
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()


def validate_telemetry(
    topic: str,
    payload: bytes,
    now_ms: int,
    *,
    root: str = "kc",
    limits: Limits = Limits(),
    catalogue: Catalogue | None = None,
) -> Reading | Rejection:
    """Validate one device telemetry message against topic scheme, schema and catalogue.

    Returns a :class:`Reading` or a :class:`Rejection` (never raises on input).
    Registry checks (unknown device, wrong kind) and dedup are the gateway's.
    """
    if len(payload) > limits.max_payload_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(payload)} bytes > {limits.max_payload_bytes}")
    t = parse_device_topic(topic, root)
    if isinstance(t, Rejection):
        return t
    if t.channel != CH_TELEMETRY:
        return Rejection(Reason.BAD_TOPIC, f"channel {t.channel!r} is not telemetry")
    cat = catalogue or load_catalogue()
    if t.kind not in cat:
        return Rejection(Reason.UNKNOWN_KIND, f"kind {t.kind[:32]!r} not in catalogue")
    kind = cat[t.kind]
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.NOT_UTF8, f"byte {exc.start} is not UTF-8")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(doc).__name__}")
    for key in ("v", "ts", "seq", "fields"):
        if key not in doc:
            return Rejection(Reason.MISSING_KEY, f"missing {key!r}")
    v = doc["v"]
    if not isinstance(v, int) or isinstance(v, bool) or v not in SUPPORTED_VERSIONS:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"v={str(v)[:16]!r}")
    ts, seq, fields = doc["ts"], doc["seq"], doc["fields"]
    if not isinstance(ts, int) or isinstance(ts, bool):
        return Rejection(Reason.WRONG_TYPE, "ts must be an integer (ms since epoch)")
    if not isinstance(seq, int) or isinstance(seq, bool) or not (0 <= seq <= SEQ_MAX):
        return Rejection(Reason.WRONG_TYPE, "seq must be an integer in 0..2^32-1")
    if ts > now_ms + limits.max_future_ms:
        return Rejection(Reason.FUTURE_TIMESTAMP, f"ts is {(ts - now_ms) / 1000:.0f} s ahead")
    if ts < now_ms - limits.max_age_ms:
        return Rejection(Reason.STALE_TIMESTAMP, f"ts is {(now_ms - ts) / 1000:.0f} s old")
    if not isinstance(fields, dict):
        return Rejection(Reason.WRONG_TYPE, "fields must be an object")
    if not fields:
        return Rejection(Reason.EMPTY_FIELDS, "no fields")
    clean: dict[str, float] = {}
    for name, value in fields.items():
        if not kind.has_field(name):
            return Rejection(Reason.UNKNOWN_FIELD, f"{str(name)[:32]!r} is not a {kind.name} field")
        if not is_number(value):
            return Rejection(Reason.WRONG_TYPE, f"{name} must be a number")
        value = float(value)
        if not math.isfinite(value):
            return Rejection(Reason.NOT_FINITE, f"{name} is {value}")
        f = kind.field(name)
        if not (f.lo <= value <= f.hi):
            return Rejection(Reason.OUT_OF_RANGE, f"{name}={value} outside [{f.lo}, {f.hi}] {f.unit}")
        clean[name] = value
    battery = doc.get("bat")
    if battery is not None:
        if not is_number(battery):
            return Rejection(Reason.WRONG_TYPE, "bat must be a number (volts)")
        battery = float(battery)
        if not math.isfinite(battery):
            return Rejection(Reason.NOT_FINITE, f"bat is {battery}")
        b = cat.battery
        if not (b.lo <= battery <= b.hi):
            return Rejection(Reason.OUT_OF_RANGE, f"bat={battery} outside [{b.lo}, {b.hi}] V")
    fw = doc.get("fw")
    # isprintable() also refuses lone surrogates ("\ud800" is valid JSON) that cannot be stored as UTF-8
    if fw is not None and (not isinstance(fw, str) or len(fw) > 32 or not fw.isprintable()):
        return Rejection(Reason.WRONG_TYPE, "fw must be a printable string of at most 32 characters")
    rssi = doc.get("rssi")
    if rssi is not None and (not isinstance(rssi, int) or isinstance(rssi, bool)):
        return Rejection(Reason.WRONG_TYPE, "rssi must be an integer (dBm)")
    if rssi is not None and not (RSSI_MIN <= rssi <= RSSI_MAX):
        return Rejection(Reason.OUT_OF_RANGE, f"rssi={str(rssi)[:24]} outside [{RSSI_MIN}, {RSSI_MAX}] dBm")
    return Reading(
        city=t.city, kind=t.kind, device=t.device, ts_ms=ts, seq=seq,
        fields=clean, battery=battery, fw=fw, rssi=rssi,
    )


class TelemetryValidator:
    """:func:`validate_telemetry` for a batch, with the same answers, cheaper per message.

    The topic of a device is parsed once (cached); the payload is decoded once with orjson
    and the happy path is checked inline. Anything that is not plainly valid goes through
    :func:`validate_telemetry` itself, so every rejection keeps its exact reason and detail
    (tests/kotacerdas/test_contract.py compares both on valid and invalid messages).
    """

    _CACHE_MAX = 200_000

    def __init__(self, *, root: str, limits: Limits = Limits(), catalogue: Catalogue | None = None):
        self.root = root
        self.limits = limits
        self.catalogue = catalogue or load_catalogue()
        self._topics: dict[str, tuple[DeviceTopic, dict[str, tuple[float, float]]] | None] = {}
        b = self.catalogue.battery
        self._bat = (b.lo, b.hi)

    def _topic(self, topic: str) -> tuple[DeviceTopic, dict[str, tuple[float, float]]] | None:
        if len(self._topics) >= self._CACHE_MAX:
            self._topics.clear()
        t = parse_device_topic(topic, self.root)
        hit = None
        if not isinstance(t, Rejection) and t.channel == CH_TELEMETRY and t.kind in self.catalogue:
            hit = (t, {f.name: (f.lo, f.hi) for f in self.catalogue[t.kind].fields})
        self._topics[topic] = hit
        return hit

    def validate_many(self, items: list[tuple[str, bytes]], now_ms: int) -> list[Reading | Rejection]:
        out: list[Reading | Rejection] = []
        lim = self.limits
        ts_lo, ts_hi = now_ms - lim.max_age_ms, now_ms + lim.max_future_ms
        max_bytes = lim.max_payload_bytes
        bat_lo, bat_hi = self._bat
        topics = self._topics
        loads = orjson.loads
        for topic, payload in items:
            r: Reading | Rejection | None = None
            hit = topics[topic] if topic in topics else self._topic(topic)
            if hit is not None and len(payload) <= max_bytes:
                try:
                    doc = loads(payload)
                except orjson.JSONDecodeError:
                    doc = None
                r = self._happy(hit, doc, ts_lo, ts_hi, bat_lo, bat_hi) if type(doc) is dict else None
            out.append(r if r is not None else  # not plainly valid: the reference validator says why
                       validate_telemetry(topic, payload, now_ms, root=self.root, limits=lim, catalogue=self.catalogue))
        return out

    @staticmethod
    def _happy(hit: tuple[DeviceTopic, dict[str, tuple[float, float]]], doc: dict, ts_lo: int, ts_hi: int,
               bat_lo: float, bat_hi: float) -> Reading | None:
        t, spec = hit
        v, ts, seq, fields = doc.get("v"), doc.get("ts"), doc.get("seq"), doc.get("fields")
        if (type(v) is not int or v not in SUPPORTED_VERSIONS or type(ts) is not int or not ts_lo <= ts <= ts_hi
                or type(seq) is not int or not 0 <= seq <= SEQ_MAX or type(fields) is not dict or not fields):
            return None
        clean: dict[str, float] = {}
        for name, value in fields.items():
            tv = type(value)
            if tv is int:
                value = float(value)
            elif tv is not float:
                return None
            lim = spec.get(name)
            if lim is None or not lim[0] <= value <= lim[1]:  # NaN and infinities fail here too
                return None
            clean[name] = value
        bat = doc.get("bat")
        if bat is not None:
            if type(bat) is not float and type(bat) is not int:
                return None
            bat = float(bat)
            if not bat_lo <= bat <= bat_hi:
                return None
        fw = doc.get("fw")
        if fw is not None and (type(fw) is not str or len(fw) > 32 or not fw.isprintable()):
            return None
        rssi = doc.get("rssi")
        if rssi is not None and (type(rssi) is not int or not RSSI_MIN <= rssi <= RSSI_MAX):
            return None
        return Reading(city=t.city, kind=t.kind, device=t.device, ts_ms=ts, seq=seq, fields=clean,
                       battery=bat, fw=fw, rssi=rssi)


def normalized_doc(r: Reading, *, district: str, department: str, lat: float | None, lon: float | None,
                   rx_ms: int, extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The normalised payload's object: a validated reading plus registry metadata and receive time.
    The gateway builds it straight from a :class:`Reading` (no :class:`NormalizedReading` between)."""
    return {
        "v": VERSION, "city": r.city, "kind": r.kind, "device": r.device, "ts": r.ts_ms,
        "seq": r.seq, "fields": r.fields, "bat": r.battery, "fw": r.fw, "rssi": r.rssi,
        "district": district, "department": department, "lat": lat, "lon": lon,
        "rx": rx_ms, "tags": extra_tags if extra_tags is not None else {},
    }


def encode_normalized(r: NormalizedReading) -> bytes:
    doc = normalized_doc(r, district=r.district, department=r.department, lat=r.lat, lon=r.lon, rx_ms=r.rx_ms,
                         extra_tags=r.extra_tags)
    return orjson.dumps(doc)  # compact, UTF-8 (json.dumps would escape non-ASCII; both are valid JSON)


# A batch: {"v": 1, "n": <count>, "readings": [<normalised object>, ...]}, every reading of the
# topic's city and kind. "n" comes first so a consumer can weigh a message before decoding it
# (normalized_batch_count) and is checked against the list on decode.
BATCH_HEAD = b'{"v":%d,"n":' % VERSION


def encode_normalized_batch(docs: list[dict[str, Any]]) -> bytes:
    """One message for many :func:`normalized_doc` objects (one city and kind): the broker and
    ingest then pay per batch, not per reading."""
    return orjson.dumps({"v": VERSION, "n": len(docs), "readings": docs})


def split_normalized_batch(payload: bytes, max_bytes: int) -> list[bytes]:
    """A batch cut into batches of at most ``max_bytes`` each (readings in order; one reading per
    piece at the least), for a broker whose packet limit is below the batch the outbox holds.
    A payload that fits, is no batch or holds one reading comes back as it is: ``[payload]``."""
    if len(payload) <= max_bytes:
        return [payload]
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return [payload]
    readings = batch_readings(doc)
    if isinstance(readings, Rejection) or len(readings) < 2:
        return [payload]
    half = len(readings) // 2
    return [p for part in (readings[:half], readings[half:])
            for p in split_normalized_batch(encode_normalized_batch(part), max_bytes)]


def normalized_batch_count(payload: bytes) -> int:
    """The count a batch declares, read from its head without decoding (1 if unreadable):
    for sizing buffers only, never trusted for the data."""
    if payload.startswith(BATCH_HEAD):
        end = payload.find(b",", len(BATCH_HEAD), len(BATCH_HEAD) + 12)
        if end > 0 and payload[len(BATCH_HEAD):end].isdigit():
            return max(1, int(payload[len(BATCH_HEAD):end]))
    return 1


def batch_readings(doc: Any) -> list | Rejection:
    """The readings list of a decoded batch object, or why it is not a batch."""
    if type(doc) is not dict:
        return Rejection(Reason.NOT_AN_OBJECT, "normalized batch is not an object")
    v = doc.get("v")
    if type(v) is not int or v not in SUPPORTED_VERSIONS:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"v={str(v)[:16]!r}")
    readings, n = doc.get("readings"), doc.get("n")
    if type(readings) is not list or type(n) is not int:
        return Rejection(Reason.MISSING_KEY, "normalized batch needs 'n' and a 'readings' list")
    if n != len(readings):
        return Rejection(Reason.WRONG_TYPE, f"normalized batch says n={n} but holds {len(readings)} readings")
    return readings


def decode_normalized_batch(topic: str, payload: bytes) -> list[NormalizedReading | Rejection] | Rejection:
    """Decode a batch (reference decoder): a Rejection for the whole message if it is not a batch,
    else one answer per reading, as :func:`decode_normalized` gives; a reading of another city or
    kind than the topic's is refused (``bad_topic``)."""
    parts = topic.split("/")
    if len(parts) != 7 or parts[6] != NORMALIZED_BATCH:
        return Rejection(Reason.BAD_TOPIC, "not a normalized batch topic")
    city, kind = parts[4], parts[5]
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    readings = batch_readings(doc)
    if isinstance(readings, Rejection):
        return readings
    out: list[NormalizedReading | Rejection] = []
    for d in readings:
        r = _decode_normalized_doc(d)
        if isinstance(r, NormalizedReading) and (r.city, r.kind) != (city, kind):
            r = Rejection(Reason.BAD_TOPIC, f"reading of {r.city}/{r.kind} in a batch of {city}/{kind}")
        out.append(r)
    return out


def decode_normalized(payload: bytes) -> NormalizedReading | Rejection:
    """Decode the gateway's output. Ingest still refuses anything malformed.

    What passes can always be written to InfluxDB: strings are strings, numbers are
    finite, integers fit int64 (found by tests/reliability/test_contract_fuzz.py).
    """
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    return _decode_normalized_doc(d)


def _decode_normalized_doc(d: Any) -> NormalizedReading | Rejection:
    if not isinstance(d, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "normalized payload is not an object")
    v = d.get("v")
    if not is_int(v) or v not in SUPPORTED_VERSIONS:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"v={str(v)[:16]!r}")
    try:
        fields = d["fields"]
        if not isinstance(fields, dict) or not fields:
            return Rejection(Reason.EMPTY_FIELDS, "no fields")
        for k, x in fields.items():
            if not is_number(x) or not math.isfinite(x):
                return Rejection(Reason.WRONG_TYPE, f"field {str(k)[:32]!r} is not a finite number")
        ts, seq = d["ts"], d["seq"]
        if not is_int(ts) or not is_int(seq):
            return Rejection(Reason.WRONG_TYPE, "ts and seq must be integers")
        if not (0 <= ts <= TS_MAX_MS) or not (0 <= seq <= SEQ_MAX):
            return Rejection(Reason.OUT_OF_RANGE, "ts or seq outside what can be stored")
        for key in ("city", "kind", "device"):
            if not isinstance(d[key], str) or not d[key]:
                return Rejection(Reason.WRONG_TYPE, f"{key} must be a non-empty string")
        for key in ("district", "department", "fw"):
            if d.get(key) is not None and not isinstance(d[key], str):
                return Rejection(Reason.WRONG_TYPE, f"{key} must be a string")
        for key in ("bat", "lat", "lon"):
            if not opt_finite(d.get(key)):
                return Rejection(Reason.WRONG_TYPE, f"{key} must be a finite number or null")
        rssi, rx = d.get("rssi"), d.get("rx")
        if rssi is not None and not (is_int(rssi) and RSSI_MIN <= rssi <= RSSI_MAX):
            return Rejection(Reason.WRONG_TYPE, f"rssi must be an integer in [{RSSI_MIN}, {RSSI_MAX}]")
        if rx is not None and not (is_int(rx) and 0 <= rx <= TS_MAX_MS):
            return Rejection(Reason.WRONG_TYPE, "rx must be an integer (ms)")
        tags = d.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(x, str) for x in tags.values()):
            return Rejection(Reason.WRONG_TYPE, "tags must be an object of strings")
        return NormalizedReading(
            city=d["city"], kind=d["kind"], device=d["device"], ts_ms=ts,
            seq=seq, fields=fields, battery=d.get("bat"), fw=d.get("fw"), rssi=rssi,
            district=d.get("district") or "unknown", department=d.get("department") or "",
            lat=d.get("lat"), lon=d.get("lon"), rx_ms=rx or 0,
            extra_tags=dict(tags),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return Rejection(Reason.MISSING_KEY, f"normalized payload: {exc}"[:120])
