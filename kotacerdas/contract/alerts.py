"""Alert payloads: what analytics publishes on ``alert_topic``, POSTs to webhooks and serves on its
alerts API. The field list below is the schema every consumer checks against (:func:`decode_alert`);
analytics' ``Alert`` record is built from it (``analytics.alerts.Alert.to_json`` goes through
:func:`alert_doc`), so a field added here is a field of every alert, and of nothing else."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from kotacerdas.contract.base import SUPPORTED_VERSIONS, VERSION, Reason, Rejection, is_int, is_number
from kotacerdas.errors import ContractError

__all__ = ["ALERT_FIELDS", "ALERT_SEVERITIES", "ALERT_STATES", "AlertField", "alert_doc", "decode_alert",
           "encode_alert", "validate_alert"]

ALERT_SEVERITIES = ("info", "warning", "critical")  # ascending
ALERT_STATES = ("open", "update", "resolved")  # the last transition the alert went through


@dataclass(frozen=True)
class AlertField:
    name: str
    type: str  # "str" | "int" | "float" | "bool"
    required: bool = False  # required: present and not null; otherwise it may be absent or null


def _f(name: str, type_: str, required: bool = False) -> AlertField:
    return AlertField(name, type_, required)


ALERT_FIELDS: tuple[AlertField, ...] = (
    _f("alert_id", "str", True), _f("rule", "str", True), _f("device", "str", True),
    _f("department", "str", True), _f("severity", "str", True), _f("state", "str", True),
    _f("value", "float", True), _f("opened_ms", "int", True), _f("updated_ms", "int", True),
    _f("resolved_ms", "int"), _f("acknowledged", "bool", True), _f("ack_by", "str"),
    _f("text_id", "str", True), _f("text_en", "str", True),
    # where, what and what to do: empty / null when the rule's condition does not know it
    _f("city", "str"), _f("district", "str"), _f("lat", "float"), _f("lon", "float"),
    _f("observed_ms", "int"), _f("observed_at", "str"), _f("parameter", "str"), _f("unit", "str"),
    _f("pollutant", "str"), _f("concentration", "float"), _f("concentration_unit", "str"),
    _f("threshold", "float"), _f("averaging_s", "float"), _f("advice_id", "str"), _f("advice_en", "str"),
)
_BY_NAME = {f.name: f for f in ALERT_FIELDS}


def _type_ok(type_: str, x: Any) -> bool:
    if type_ == "str":
        return isinstance(x, str)
    if type_ == "int":
        return is_int(x)
    if type_ == "bool":
        return isinstance(x, bool)
    # a float field may carry an integral JSON number (15 for 15.0); NaN / inf are not JSON
    return is_number(x) and math.isfinite(x)


def alert_doc(values: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's fields of ``values``, in the contract's order; anything else is left out."""
    return {f.name: values.get(f.name) for f in ALERT_FIELDS}


def validate_alert(doc: Mapping[str, Any]) -> Rejection | None:
    """None when ``doc`` (without the ``v`` envelope) is an alert by the schema above."""
    for name in doc:
        if name not in _BY_NAME:
            return Rejection(Reason.UNKNOWN_FIELD, f"alert field {name[:64]!r} is not in the contract")
    for f in ALERT_FIELDS:
        x = doc.get(f.name)
        if x is None:
            if f.required:
                return Rejection(Reason.MISSING_KEY, f"alert field {f.name!r} is required")
            continue
        if not _type_ok(f.type, x):
            return Rejection(Reason.WRONG_TYPE, f"alert field {f.name!r} must be {f.type}")
    if doc["severity"] not in ALERT_SEVERITIES:
        return Rejection(Reason.OUT_OF_RANGE, f"severity must be one of {', '.join(ALERT_SEVERITIES)}")
    if doc["state"] not in ALERT_STATES:
        return Rejection(Reason.OUT_OF_RANGE, f"state must be one of {', '.join(ALERT_STATES)}")
    return None


def encode_alert(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON with the contract version first: ``{"v":1, ...alert fields}``.
    Raises :class:`ContractError` on a doc the contract refuses: that is our own bug, not input."""
    bad = validate_alert(doc)
    if bad is not None:
        raise ContractError(f"alert breaks the contract: {bad.reason.value}: {bad.detail}")
    return json.dumps({"v": VERSION, **doc}, ensure_ascii=False, separators=(",", ":")).encode()


def decode_alert(payload: bytes) -> dict[str, Any] | Rejection:
    """An alert as a consumer (webhook receiver, subscriber) gets it: the fields without ``v``."""
    try:
        doc: Any = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Rejection(Reason.NOT_UTF8, "alert payload is not UTF-8")
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "alert payload is not an object")
    if doc.pop("v", None) not in SUPPORTED_VERSIONS:
        return Rejection(Reason.UNSUPPORTED_VERSION, "alert payload has no supported 'v'")
    bad = validate_alert(doc)
    return doc if bad is None else bad
