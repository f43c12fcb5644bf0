"""The topic scheme: device channels ``{root}/v1/{city}/{kind}/{device}/{channel}`` and the
platform's own topics under ``{root}/v1/_platform/``. The only place topic strings are built."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kotacerdas.contract.base import VERSION, Reason, Rejection
from kotacerdas.errors import ContractError

__all__ = ["CH_ACK", "CH_ALERTS", "CH_CMD", "CH_CONFIG", "CH_DEADLETTER", "CH_DEVSTATUS", "CH_NORM", "CH_STATUS",
           "CH_TELEMETRY", "CITY_RE", "DEVICE_CHANNELS", "DEVICE_RE", "NORMALIZED_BATCH", "is_normalized_batch_topic",
           "normalized_batch_topic", "PLATFORM", "PLATFORM_CHANNELS", "ROOT_RE", "DeviceTopic", "alert_subscription",
           "alert_topic", "cmd_topic", "config_topic", "deadletter_subscription", "deadletter_topic",
           "device_subscription", "device_topic", "devstatus_topic", "gateway_subscriptions",
           "normalized_subscription", "normalized_topic", "parse_device_topic", "platform_filter", "status_topic", "telemetry_topic"]

# Topic segments: lower-case city slug; device ids are what a label printer and a
# Mosquitto ACL `%u` can both carry safely. Neither may contain MQTT wildcards,
# separators or dots (no `+`, `#`, `/`, `..`).
CITY_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ROOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

# channel names: callers use these constants, never the strings (tests/test_shared_knowledge.py checks)
CH_TELEMETRY, CH_STATUS, CH_CONFIG, CH_CMD, CH_ACK = "telemetry", "status", "config", "cmd", "ack"
DEVICE_CHANNELS = (CH_TELEMETRY, CH_STATUS, CH_CONFIG, CH_CMD, CH_ACK)
PLATFORM = "_platform"  # leading underscore: can never be a valid city slug
# the platform's own channels under {root}/v1/_platform/: gateway -> ingest, refusals, alerts, device lifecycle
CH_NORM, CH_DEADLETTER, CH_ALERTS, CH_DEVSTATUS = "norm", "deadletter", "alerts", "devstatus"
PLATFORM_CHANNELS = (CH_NORM, CH_DEADLETTER, CH_ALERTS, CH_DEVSTATUS)



@dataclass(frozen=True)
class DeviceTopic:
    root: str
    city: str
    kind: str
    device: str
    channel: str


# ---------------------------------------------------------------- topics


def _check_root(root: str) -> str:
    if not ROOT_RE.match(root):
        raise ContractError(f"invalid topic root {root!r}")
    return root


def device_topic(root: str, city: str, kind: str, device: str, channel: str) -> str:
    """``{root}/v1/{city}/{kind}/{device}/{channel}``; raises :class:`ContractError` (a ValueError) on unsafe segments."""
    if not CITY_RE.match(city):
        raise ContractError(f"invalid city {city!r}")
    if not DEVICE_RE.match(device):
        raise ContractError(f"invalid device id {device!r}")
    if not re.match(r"^[a-z_]{1,32}$", kind):
        raise ContractError(f"invalid kind {kind!r}")
    if channel not in DEVICE_CHANNELS:
        raise ContractError(f"invalid channel {channel!r}")
    return f"{_check_root(root)}/v{VERSION}/{city}/{kind}/{device}/{channel}"


def telemetry_topic(root: str, city: str, kind: str, device: str) -> str:
    return device_topic(root, city, kind, device, CH_TELEMETRY)


def status_topic(root: str, city: str, kind: str, device: str) -> str:
    return device_topic(root, city, kind, device, CH_STATUS)


def config_topic(root: str, city: str, kind: str, device: str) -> str:
    return device_topic(root, city, kind, device, CH_CONFIG)


def cmd_topic(root: str, city: str, kind: str, device: str) -> str:
    return device_topic(root, city, kind, device, CH_CMD)


def device_subscription(root: str, channel: str, city: str = "+", kind: str = "+") -> str:
    """Wildcard subscription for one channel of every device (of a city/kind)."""
    return f"{_check_root(root)}/v{VERSION}/{city}/{kind}/+/{channel}"


def gateway_subscriptions(root: str) -> list[str]:
    """What the gateway subscribes to: every device channel, and everything else under the root
    that is not a platform topic of 7 levels (normalised, devstatus; they would echo every
    accepted message back), so a device on a wrong version, level count or channel is seen,
    counted and dead-lettered instead of silently matching nothing.

    6 levels catch ``{root}/v1/{city}/{kind}/{device}/{channel}`` (and v2, misspelt channels;
    the gateway ignores its own ``_platform`` and config/cmd topics there); 2-5 levels and 8 or
    more catch missing and extra levels; of 7 levels only those ending in ``telemetry``."""
    r = _check_root(root)
    return [f"{r}/+", f"{r}/+/+", f"{r}/+/+/+", f"{r}/+/+/+/+", f"{r}/+/+/+/+/+",
            f"{r}/+/+/+/+/+/telemetry", f"{r}/+/+/+/+/+/+/+/#"]


def normalized_topic(root: str, city: str, kind: str, device: str) -> str:
    """Gateway -> ingest: validated, enriched telemetry."""
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_NORM}/{city}/{kind}/{device}"


# the device level of a batch topic: a device id cannot start with "_" (DEVICE_RE)
NORMALIZED_BATCH = "_batch"


def normalized_batch_topic(root: str, city: str, kind: str) -> str:
    """Gateway -> ingest: many normalised readings of one city and kind in one message
    (``encode_normalized_batch``); matches :func:`normalized_subscription` like a device's."""
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_NORM}/{city}/{kind}/{NORMALIZED_BATCH}"


def is_normalized_batch_topic(topic: str) -> bool:
    return topic.endswith("/" + NORMALIZED_BATCH)


def normalized_subscription(root: str, share_group: str | None = None) -> str:
    topic = f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_NORM}/+/+/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


def deadletter_topic(root: str, stage: str, reason: Reason | str) -> str:
    """Rejected messages: ``{root}/v1/_platform/deadletter/{stage}/{reason}``."""
    r = reason.value if isinstance(reason, Reason) else reason
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_DEADLETTER}/{stage}/{r}"


def deadletter_subscription(root: str) -> str:
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_DEADLETTER}/#"


def alert_topic(root: str, department: str, severity: str) -> str:
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_ALERTS}/{department}/{severity}"


def alert_subscription(root: str) -> str:
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_ALERTS}/#"


def platform_filter(root: str, channel: str, *levels: str) -> str:
    """``{root}/v1/_platform/{channel}[/{level}...]/#``: everything one platform channel (or a part of it,
    e.g. the dead letters of one stage) carries; for subscriptions and broker ACLs."""
    if channel not in PLATFORM_CHANNELS:
        raise ContractError(f"invalid platform channel {channel!r}")
    return "/".join((_check_root(root), f"v{VERSION}", PLATFORM, channel, *levels, "#"))


def devstatus_topic(root: str, city: str, kind: str, device: str) -> str:
    """Gateway's retained view of a device's lifecycle (online/offline/stale)."""
    return f"{_check_root(root)}/v{VERSION}/{PLATFORM}/{CH_DEVSTATUS}/{city}/{kind}/{device}"


def parse_device_topic(topic: str, root: str) -> DeviceTopic | Rejection:
    parts = topic.split("/")
    if len(parts) != 6:
        return Rejection(Reason.BAD_TOPIC, f"expected 6 topic levels, got {len(parts)}")
    r, ver, city, kind, device, channel = parts
    if r != root:
        return Rejection(Reason.BAD_TOPIC, f"topic root {r!r} is not {root!r}")
    if ver != f"v{VERSION}":
        return Rejection(Reason.UNSUPPORTED_VERSION, f"topic version {ver!r}")
    if not CITY_RE.match(city):
        return Rejection(Reason.BAD_TOPIC, "invalid city segment")
    if not DEVICE_RE.match(device):
        return Rejection(Reason.BAD_TOPIC, "invalid device segment")
    if channel not in DEVICE_CHANNELS:
        return Rejection(Reason.BAD_TOPIC, f"unknown channel {channel[:32]!r}")
    return DeviceTopic(r, city, kind, device, channel)
