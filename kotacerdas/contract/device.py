"""A device's other channels: birth/last-will ``status`` (device -> platform, retained), ``config``
(platform -> device, retained), ``cmd`` (platform -> device) and ``ack`` (device -> platform, the
answer to a cmd). The firmware (``firmware/device/kc_payload.py``, ``kc_node.py``) speaks the same
payloads; it is MicroPython and cannot import this package, so ``tests/firmware`` checks the two
against each other. Decoders never raise on input: they return a :class:`Rejection`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from kotacerdas.contract.base import SUPPORTED_VERSIONS, VERSION, Reason, Rejection
from kotacerdas.errors import ContractError

__all__ = ["ACK_DETAIL_MAX", "COMMANDS", "SHA256_HEX_LEN", "SIGNATURE_HEX_LEN", "STATUS_STATES", "UPDATE_ARGS",
           "UPDATE_MANIFEST", "UPDATE_SIGNATURE", "UPDATE_URL_MAX", "Ack", "DeviceStatus", "decode_ack",
           "decode_status", "encode_cmd", "encode_config", "encode_status", "validate_update_args"]

STATUS_STATES = ("online", "offline")
# what kc_node.Node handles on its cmd topic (anything else is acked ok=false by the device)
COMMANDS = ("reboot", "calibrate", "ping", "update")
# ``update`` (firmware >= 1.2.0): fetch the signed release at ``args.url`` and switch to it. The
# release directory holds ``{url}manifest.json`` (files with sha256 and size, signed) and the files;
# the command carries the manifest's SHA-256 and its ECDSA P-256 signature (docs/wire-contract.md).
UPDATE_ARGS = ("url", "version", "sha256", "signature")
UPDATE_MANIFEST = "manifest.json"
# next to it in a release directory: the 64-byte signature the rollout puts into the command
UPDATE_SIGNATURE = "manifest.sig"
UPDATE_URL_MAX = 256
SHA256_HEX_LEN = 64  # SHA-256 of the manifest bytes, lower-case hex
SIGNATURE_HEX_LEN = 128  # r||s, 32 bytes each, lower-case hex
_LOWER_HEX = re.compile(r"^[0-9a-f]+$")
FW_MAX = 32
ACK_ID_MAX, ACK_DETAIL_MAX, STATUS_REASON_MAX = 64, 256, 32


def _compact(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_status(state: str, ts_ms: int, *, fw: str | None = None, reason: str | None = None) -> bytes:
    """Device birth/last-will payload on the retained ``status`` topic: state is online|offline."""
    if state not in STATUS_STATES:
        raise ContractError(f"invalid state {state!r}")
    doc: dict[str, Any] = {"v": VERSION, "state": state, "ts": int(ts_ms)}
    if fw is not None:
        doc["fw"] = fw
    if reason is not None:
        doc["reason"] = reason
    return _compact(doc)


@dataclass(frozen=True)
class DeviceStatus:
    state: str
    ts_ms: int
    fw: str | None
    reason: str | None


def _json_object(payload: bytes, what: str) -> dict[str, Any] | Rejection:
    try:
        doc: Any = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Rejection(Reason.NOT_UTF8, f"{what} payload is not UTF-8")
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.MALFORMED_JSON, str(exc)[:120])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"{what} payload is not an object")
    return doc


def decode_status(payload: bytes) -> DeviceStatus | Rejection:
    """A non-empty ``status`` payload (an empty one clears the retained message: the caller's case)."""
    doc = _json_object(payload, "status")
    if isinstance(doc, Rejection):
        return doc
    if doc.get("v") not in SUPPORTED_VERSIONS:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"v={str(doc.get('v'))[:16]!r}")
    state = doc.get("state")
    if state not in STATUS_STATES:
        return Rejection(Reason.WRONG_TYPE, "state must be 'online' or 'offline'")
    ts = doc.get("ts", 0)
    if not isinstance(ts, int) or isinstance(ts, bool):
        return Rejection(Reason.WRONG_TYPE, "ts must be an integer (ms since epoch)")
    fw = doc.get("fw")
    if fw is not None and (not isinstance(fw, str) or len(fw) > FW_MAX):
        return Rejection(Reason.WRONG_TYPE, f"fw must be a string of at most {FW_MAX} characters")
    reason = doc.get("reason")
    return DeviceStatus(state, ts, fw, str(reason)[:STATUS_REASON_MAX] if reason is not None else None)


def encode_config(device_part: Mapping[str, Any]) -> bytes:
    """The retained ``config`` payload: the device part of a validated config
    (``kotacerdas.device_config.device_part``), nothing the gateway keeps for itself."""
    return _compact({"v": VERSION, **device_part})


def validate_update_args(args: Any) -> dict[str, str] | Rejection:
    """The ``args`` of an ``update`` command, checked as the firmware (kc_ota.check_args) checks them."""
    if not isinstance(args, dict):
        return Rejection(Reason.WRONG_TYPE, "update args must be an object")
    for key in UPDATE_ARGS:
        if not isinstance(args.get(key), str):
            return Rejection(Reason.MISSING_KEY, f"update args need string {key!r}")
    extra = set(args) - set(UPDATE_ARGS)
    if extra:
        return Rejection(Reason.UNKNOWN_FIELD, f"unknown update args {sorted(map(str, extra))[:3]}")
    url, version = args["url"], args["version"]
    if not url.startswith("http://") or not url.endswith("/") or len(url) > UPDATE_URL_MAX or not url.isprintable():
        return Rejection(Reason.WRONG_TYPE, f"url must be http://.../ (at most {UPDATE_URL_MAX} characters)")
    if not version or len(version) > FW_MAX or not version.isprintable():
        return Rejection(Reason.WRONG_TYPE, f"version must be a printable string of 1..{FW_MAX} characters (fw)")
    for key, n in (("sha256", SHA256_HEX_LEN), ("signature", SIGNATURE_HEX_LEN)):
        if len(args[key]) != n or not _LOWER_HEX.match(args[key]):
            return Rejection(Reason.WRONG_TYPE, f"{key} must be {n} lower-case hex digits")
    return {k: args[k] for k in UPDATE_ARGS}


def encode_cmd(cmd_id: str, cmd: str, args: Mapping[str, Any], ts_ms: int) -> bytes:
    """A command on the ``cmd`` topic; the device answers on ``ack`` with the same ``id``.
    :class:`ContractError` (a ValueError) for an unknown command or ``update`` args the device would refuse."""
    if cmd not in COMMANDS:
        raise ContractError(f"unknown command {cmd!r}")
    if cmd == "update":
        checked = validate_update_args(dict(args))
        if isinstance(checked, Rejection):
            raise ContractError(checked.detail)
    return _compact({"v": VERSION, "id": cmd_id, "cmd": cmd, "args": dict(args), "ts": int(ts_ms)})


@dataclass(frozen=True)
class Ack:
    id: str
    ok: bool
    detail: str


def decode_ack(payload: bytes) -> Ack | Rejection:
    """A device's answer to a command: ``{"v":1,"id":"<uuid>","ok":true,"detail":"..."}``."""
    doc = _json_object(payload, "ack")
    if isinstance(doc, Rejection):
        return doc
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("ok"), bool):
        return Rejection(Reason.MISSING_KEY, "ack needs a string 'id' and a boolean 'ok'")
    return Ack(doc["id"][:ACK_ID_MAX], doc["ok"], str(doc.get("detail", ""))[:ACK_DETAIL_MAX])
