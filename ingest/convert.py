"""Pure conversion of platform MQTT payloads into InfluxDB line protocol.

Three inputs, each to its measurement in docs/team-interfaces.md:
- gateway's normalised telemetry -> one line in ``kind.measurement``;
- dead letters (``deadletter_payload``) -> ``deadletter``;
- the gateway's device lifecycle (devstatus) -> ``device_status``.

Every line carries a nanosecond timestamp: telemetry is the device's millisecond
timestamp (scaled), so a replay of the same message overwrites the same point
(same measurement, tag set and time) instead of adding one. Dead letters get the
dead-letter time plus a sub-millisecond offset derived from the payload's CRC, so
two dead letters in the same millisecond stay distinct while a replayed one still
lands on itself.

Tag prefixes are escaped once per device and cached: after warm-up a telemetry
message costs one ``orjson.loads`` and one string join. Escaping is exactly
:mod:`kotacerdas.lineprotocol`'s (``tests/ingest/test_convert.py`` compares them).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import orjson

from kotacerdas.catalogue import Catalogue
from kotacerdas.contract import SUPPORTED_VERSIONS, Reason, Rejection, batch_readings
from kotacerdas import lineprotocol
from kotacerdas.lineprotocol import escape_key, escape_measurement, escape_string_field
from kotacerdas.measurements import DEADLETTER, DEVICE_STATUS

# field keys have their own escaping where the shared module defines it
escape_field_key = getattr(lineprotocol, "escape_field_key", escape_key)

NS_PER_MS = 1_000_000
_TAG_CACHE_MAX = 200_000


def tag_prefix(measurement: str, tags: dict[str, str]) -> str:
    """``measurement,k=v,...`` with tags sorted and empty values dropped, as ``format_line`` does."""
    return escape_measurement(measurement) + "".join(
        f",{escape_key(k)}={escape_key(str(v))}" for k, v in sorted(tags.items()) if v not in (None, "")
    )


def _num(x: Any) -> bool:
    return (type(x) is float and math.isfinite(x)) or (type(x) is int)


class Converter:
    """Stateless apart from caches: safe to share by one writer thread."""

    def __init__(self, catalogue: Catalogue):
        # kind name -> (measurement, {field name: escaped "key="})
        self._kinds: dict[str, tuple[str, dict[str, str]]] = {
            k.name: (k.measurement, {f: escape_field_key(f) + "=" for f in k.field_names}) for k in catalogue
        }
        self._prefix: dict[tuple, str] = {}

    # ------------------------------------------------------------ telemetry

    def telemetry(self, payload: bytes) -> tuple[str, int] | Rejection:
        """(line, device ts ms) or a Rejection: the same checks as ``contract.decode_normalized``
        plus the catalogue (known kind, known fields)."""
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
        return self.telemetry_doc(d)

    def telemetry_batch(self, topic: str, payload: bytes) -> list[tuple[str, int] | Rejection] | Rejection:
        """A gateway batch (``contract.encode_normalized_batch``) -> one answer per reading, as
        :meth:`telemetry` gives, in order; a reading of another city or kind than the topic's is
        refused (``bad_topic``); a Rejection alone if the message is not a batch at all."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
        readings = batch_readings(doc)
        if type(readings) is not list:
            return readings
        city, kind = topic.rsplit("/", 3)[1:3]
        one = self.telemetry_doc
        out: list[tuple[str, int] | Rejection] = []
        for d in readings:
            if type(d) is dict and (d.get("city") != city or d.get("kind") != kind):
                out.append(Rejection(Reason.BAD_TOPIC, f"reading of {str(d.get('city'))[:32]}/"
                                     f"{str(d.get('kind'))[:32]} in a batch of {city}/{kind}"))
            else:
                out.append(one(d))
        return out

    def telemetry_doc(self, d: Any) -> tuple[str, int] | Rejection:
        """:meth:`telemetry` of an already decoded object."""
        if type(d) is not dict:
            return Rejection(Reason.NOT_AN_OBJECT, "normalized payload is not an object")
        v = d.get("v")
        if type(v) is not int or v not in SUPPORTED_VERSIONS:
            return Rejection(Reason.UNSUPPORTED_VERSION, f"v={str(v)[:16]!r}")
        try:
            kind, city, device, ts, seq, fields = d["kind"], d["city"], d["device"], d["ts"], d["seq"], d["fields"]
        except KeyError as exc:
            return Rejection(Reason.MISSING_KEY, f"normalized payload: missing {exc}"[:120])
        spec = self._kinds.get(kind) if type(kind) is str else None
        if spec is None:
            return Rejection(Reason.UNKNOWN_KIND, f"kind {str(kind)[:32]!r} not in catalogue")
        if type(fields) is not dict or not fields:
            return Rejection(Reason.EMPTY_FIELDS, "no fields")
        if type(ts) is not int or type(seq) is not int:
            return Rejection(Reason.WRONG_TYPE, "ts and seq must be integers")
        if type(city) is not str or type(device) is not str or not city or not device:
            return Rejection(Reason.WRONG_TYPE, "city and device must be non-empty strings")
        district = d.get("district") or "unknown"
        if type(district) is not str:
            return Rejection(Reason.WRONG_TYPE, "district must be a string")
        measurement, fkeys = spec
        parts = []
        for name, x in fields.items():
            key = fkeys.get(name)
            if key is None:
                return Rejection(Reason.UNKNOWN_FIELD, f"{str(name)[:32]!r} is not a {kind} field")
            if not _num(x):
                return Rejection(Reason.WRONG_TYPE, f"field {str(name)[:32]!r} is not a finite number")
            parts.append(key + repr(float(x)))
        bat = d.get("bat")
        if bat is not None:
            if not _num(bat):
                return Rejection(Reason.WRONG_TYPE, "bat must be a finite number")
            parts.append("battery=" + repr(float(bat)))
        parts.append(f"seq={seq}i")
        fw = d.get("fw")
        if fw is not None:
            if type(fw) is not str:
                return Rejection(Reason.WRONG_TYPE, "fw must be a string")
            parts.append("fw=" + escape_string_field(fw))
        rssi = d.get("rssi")
        if rssi is not None:
            if type(rssi) is not int:
                return Rejection(Reason.WRONG_TYPE, "rssi must be an integer")
            parts.append(f"rssi={rssi}i")
        rx = d.get("rx")
        if type(rx) is int and rx > 0:
            parts.append(f"gw_lag_ms={rx - ts}i")
        tkey = (kind, city, device, district)
        prefix = self._prefix.get(tkey)
        if prefix is None:
            if len(self._prefix) >= _TAG_CACHE_MAX:
                self._prefix.clear()
            prefix = self._prefix[tkey] = tag_prefix(
                measurement, {"city": city, "device": device, "district": district, "kind": kind}
            )
        return f"{prefix} {','.join(parts)} {ts * NS_PER_MS}", ts

    # ------------------------------------------------------------ platform topics

    def deadletter(self, payload: bytes, topic: str) -> str | Rejection:
        """A ``deadletter_payload`` message -> ``deadletter`` line (stage/reason fall back to the topic)."""
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
        if type(d) is not dict:
            return Rejection(Reason.NOT_AN_OBJECT, "dead-letter payload is not an object")
        levels = topic.split("/")
        stage = d.get("stage") or (levels[-2] if len(levels) >= 2 else "")
        reason = d.get("reason") or levels[-1]
        ts = d.get("ts")
        if type(ts) is not int:
            return Rejection(Reason.WRONG_TYPE, "dead-letter ts must be an integer")
        size = d.get("size")
        fields = [
            "count=1i",
            "detail=" + escape_string_field(str(d.get("detail") or "")),
            f"size={size if type(size) is int else len(payload)}i",
            "topic=" + escape_string_field(str(d.get("topic") or "")),
        ]
        prefix = tag_prefix(DEADLETTER.name, {"reason": str(reason), "stage": str(stage)})
        t = ts * NS_PER_MS + zlib.crc32(payload) % NS_PER_MS
        return f"{prefix} {','.join(fields)} {t}"

    def device_status(self, payload: bytes, now_ms: int) -> str | Rejection:
        """The gateway's devstatus JSON -> ``device_status`` line at receive time."""
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
        if type(d) is not dict:
            return Rejection(Reason.NOT_AN_OBJECT, "devstatus payload is not an object")
        state = d.get("state")
        if state not in ("online", "offline") or not d.get("device"):
            return Rejection(Reason.MISSING_KEY, "devstatus needs device and state online|offline")
        fields = [
            "state=" + escape_string_field(state),
            f"online={int(state == 'online')}i",
            f"stale={int(bool(d.get('stale')))}i",
        ]
        last_seen = d.get("last_seen")
        if type(last_seen) is int:
            fields.append(f"last_seen_ms={last_seen}i")
        bat = d.get("battery")
        if bat is not None and _num(bat):
            fields.append("battery=" + repr(float(bat)))
        fw = d.get("fw")
        if type(fw) is str:
            fields.append("fw=" + escape_string_field(fw))
        tags = {k: str(d.get(k) or "") for k in ("device", "city", "district", "kind")}
        return f"{tag_prefix(DEVICE_STATUS.name, tags)} {','.join(fields)} {now_ms * NS_PER_MS}"
