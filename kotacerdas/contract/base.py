"""What every message of the contract shares: the version, the size and range limits, and the
rejection a validator returns instead of raising (spec: ``docs/wire-contract.md``)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "RSSI_MAX", "RSSI_MIN", "SEQ_MAX", "SUPPORTED_VERSIONS", "TS_MAX_MS",
           "VERSION", "Limits", "Reason", "Rejection"]

VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
DEFAULT_MAX_PAYLOAD_BYTES = 4096
SEQ_MAX = 2**32 - 1
# Wi-Fi RSSI in dBm is negative in practice; the bound keeps it far inside InfluxDB's int64.
RSSI_MIN, RSSI_MAX = -200, 100
# InfluxDB stores time as int64 nanoseconds: the latest representable instant in ms.
TS_MAX_MS = (2**63 - 1) // 1_000_000


class Reason(str, enum.Enum):
    """Every reason a message can be refused. Values are stable metric labels."""

    BAD_TOPIC = "bad_topic"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_KEY = "missing_key"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_FIELD = "unknown_field"
    EMPTY_FIELDS = "empty_fields"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    # decided by the gateway with its registry and dedup state:
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_KIND = "wrong_kind"
    DECOMMISSIONED = "decommissioned"
    DUPLICATE = "duplicate"
    # a second reading of a device at the same ts with another seq: InfluxDB would keep only one
    TIMESTAMP_CONFLICT = "timestamp_conflict"
    # a retained vendor message (ESPHome state) replayed at subscription: its age is unknown
    RETAINED_REPLAY = "retained_replay"
    # decided by ingest when the database refuses a point:
    WRITE_REJECTED = "write_rejected"


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str

    def __bool__(self) -> bool:  # a Rejection is falsy so `if result:` reads naturally
        return False


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_future_ms: int = 300_000
    max_age_ms: int = 7 * 24 * 3600 * 1000

    @classmethod
    def from_settings(cls, contract_settings: Any) -> "Limits":
        return cls(
            max_payload_bytes=int(contract_settings.max_payload_bytes),
            max_future_ms=int(contract_settings.max_future_s * 1000),
            max_age_ms=int(contract_settings.max_age_s * 1000),
        )


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def opt_finite(x: Any) -> bool:
    return x is None or (is_number(x) and math.isfinite(x))
