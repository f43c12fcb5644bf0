"""The gateway's pure decisions: is this message acceptable, and what does it become.

No I/O here: the service feeds topics, payloads, the clock and a registry lookup,
and gets back a :class:`NormalizedReading` or a :class:`Rejection` with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kotacerdas import contract
from kotacerdas.catalogue import Catalogue
from kotacerdas.contract import Limits, NormalizedReading, Reason, Rejection

from gateway.registry import Device

Lookup = Callable[[str], "Device | None"]


def check_registry(device: Device | None, device_id: str, kind: str, city: str) -> Rejection | None:
    if device is None:
        return Rejection(Reason.UNKNOWN_DEVICE, f"device {device_id[:64]!r} is not registered")
    if not device.active:
        return Rejection(Reason.DECOMMISSIONED, f"device {device_id!r} was decommissioned")
    if device.kind != kind:
        return Rejection(Reason.WRONG_KIND, f"device {device_id!r} is registered as {device.kind!r}, sent {kind[:32]!r}")
    if device.city != city:
        # a device claiming another city's topic is as wrong as a wrong kind: its data would be mis-filed
        return Rejection(Reason.BAD_TOPIC, f"device {device_id!r} is registered in {device.city!r}, sent {city!r}")
    return None


def normalise_telemetry(
    topic: str,
    payload: bytes,
    now_ms: int,
    *,
    root: str,
    limits: Limits,
    catalogue: Catalogue,
    lookup: Lookup,
) -> NormalizedReading | Rejection:
    """Contract validation, then registry checks, then enrichment with registry metadata and receive time.

    Dedup is not decided here (it needs durable state); see :func:`dedup_key`.
    """
    r = contract.validate_telemetry(topic, payload, now_ms, root=root, limits=limits, catalogue=catalogue)
    if isinstance(r, Rejection):
        return r
    dev = lookup(r.device)
    rej = check_registry(dev, r.device, r.kind, r.city)
    if rej is not None:
        return rej
    assert dev is not None
    return NormalizedReading(
        city=r.city, kind=r.kind, device=r.device, ts_ms=r.ts_ms, seq=r.seq, fields=r.fields,
        battery=r.battery, fw=r.fw, rssi=r.rssi, district=dev.district, department=dev.department,
        lat=dev.lat, lon=dev.lon, rx_ms=now_ms,
    )


def dedup_key(r: NormalizedReading) -> tuple[str, int]:
    """A reading's identity (device, ts), as InfluxDB identifies a point by series and time
    (docs/wire-contract.md, "Reading identity"): a second reading at the same time is not stored
    twice. A rebooted device restarting seq at 0 carries new timestamps, so it is not a duplicate."""
    return (r.device, r.ts_ms)


@dataclass(frozen=True)
class StatusMessage:
    device: str
    kind: str
    city: str
    state: str
    ts_ms: int
    fw: str | None
    reason: str | None


def parse_status(
    topic: str, payload: bytes, *, root: str, limits: Limits, catalogue: Catalogue, lookup: Lookup
) -> StatusMessage | Rejection | None:
    """A device birth / last-will message. ``None`` for an empty payload (a cleared retained message)."""
    if len(payload) > limits.max_payload_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(payload)} bytes > {limits.max_payload_bytes}")
    t = contract.parse_device_topic(topic, root)
    if isinstance(t, Rejection):
        return t
    if t.kind not in catalogue:
        return Rejection(Reason.UNKNOWN_KIND, f"kind {t.kind[:32]!r} not in catalogue")
    if not payload:
        return None
    st = contract.decode_status(payload)
    if isinstance(st, Rejection):
        return st
    rej = check_registry(lookup(t.device), t.device, t.kind, t.city)
    if rej is not None:
        return rej
    return StatusMessage(t.device, t.kind, t.city, st.state, st.ts_ms, st.fw, st.reason)


def parse_ack(topic: str, payload: bytes, *, root: str, limits: Limits, lookup: Lookup) -> dict | Rejection:
    """A device's answer to a command: ``{"v":1,"id":"<uuid>","ok":true,"detail":"..."}``."""
    if len(payload) > limits.max_payload_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(payload)} bytes > {limits.max_payload_bytes}")
    t = contract.parse_device_topic(topic, root)
    if isinstance(t, Rejection):
        return t
    rej = check_registry(lookup(t.device), t.device, t.kind, t.city)
    if rej is not None:
        return rej
    ack = contract.decode_ack(payload)
    if isinstance(ack, Rejection):
        return ack
    return {"device": t.device, "id": ack.id, "ok": ack.ok, "detail": ack.detail}
