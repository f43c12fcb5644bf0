"""The wire contract: topic scheme, payload schemas, versioning and validation.

Spec: ``docs/wire-contract.md``. This package is the only place that knows topic layouts and
payload keys; firmware (via its generated ``kc_schema``), simulators, gateway, ingest, analytics and
dashboards all go through it. One module per part of the contract:

- :mod:`~kotacerdas.contract.base`: version, limits, :class:`Reason` and :class:`Rejection`;
- :mod:`~kotacerdas.contract.topics`: every topic and subscription string;
- :mod:`~kotacerdas.contract.telemetry`: device telemetry and the gateway's normalised form;
- :mod:`~kotacerdas.contract.device`: status, config, cmd and ack payloads;
- :mod:`~kotacerdas.contract.deadletter` and :mod:`~kotacerdas.contract.alerts`: platform outputs.

Callers keep writing ``from kotacerdas import contract`` and ``contract.X``: everything in the
modules' ``__all__`` is re-exported here. Validation never raises on bad input: it returns a
:class:`Rejection` with a machine-readable :class:`Reason` and a human-readable detail.
"""

from __future__ import annotations

from kotacerdas.contract.alerts import (
    ALERT_FIELDS, ALERT_SEVERITIES, ALERT_STATES, AlertField, alert_doc, decode_alert, encode_alert, validate_alert
)
from kotacerdas.contract.base import (
    DEFAULT_MAX_PAYLOAD_BYTES, RSSI_MAX, RSSI_MIN, SEQ_MAX, SUPPORTED_VERSIONS, TS_MAX_MS, VERSION, Limits, Reason,
    Rejection
)
from kotacerdas.contract.deadletter import deadletter_payload
from kotacerdas.contract.device import (
    ACK_DETAIL_MAX, COMMANDS, SHA256_HEX_LEN, SIGNATURE_HEX_LEN, STATUS_STATES, UPDATE_ARGS, UPDATE_MANIFEST,
    UPDATE_SIGNATURE, UPDATE_URL_MAX, Ack, DeviceStatus, decode_ack, decode_status, encode_cmd, encode_config,
    encode_status, validate_update_args
)
from kotacerdas.contract.telemetry import (
    BATCH_HEAD, NormalizedReading, Reading, TelemetryValidator, batch_readings, decode_normalized,
    decode_normalized_batch, encode_normalized, encode_normalized_batch, encode_telemetry, normalized_batch_count,
    normalized_doc, split_normalized_batch, validate_telemetry
)
from kotacerdas.contract.topics import (
    CH_ACK, CH_ALERTS, CH_CMD, CH_CONFIG, CH_DEADLETTER, CH_DEVSTATUS, CH_NORM, CH_STATUS, CH_TELEMETRY,
    CITY_RE, DEVICE_CHANNELS, DEVICE_RE, NORMALIZED_BATCH, PLATFORM, PLATFORM_CHANNELS, ROOT_RE, DeviceTopic, alert_subscription, alert_topic, cmd_topic,
    config_topic, deadletter_subscription, deadletter_topic, device_subscription, device_topic, devstatus_topic,
    gateway_subscriptions, is_normalized_batch_topic, normalized_batch_topic, normalized_subscription, normalized_topic, parse_device_topic, platform_filter, status_topic,
    telemetry_topic
)

__all__ = [
    "CH_ACK", "CH_ALERTS", "CH_CMD", "CH_CONFIG", "CH_DEADLETTER", "CH_DEVSTATUS", "CH_NORM", "CH_STATUS",
    "CH_TELEMETRY",
    "ALERT_FIELDS", "ALERT_SEVERITIES", "ALERT_STATES", "AlertField", "alert_doc", "decode_alert", "validate_alert",
    "BATCH_HEAD", "NORMALIZED_BATCH", "batch_readings", "decode_normalized_batch", "encode_normalized_batch",
    "split_normalized_batch",
    "is_normalized_batch_topic", "normalized_batch_count", "normalized_batch_topic", "normalized_doc",
    "ACK_DETAIL_MAX", "SHA256_HEX_LEN", "SIGNATURE_HEX_LEN", "UPDATE_ARGS", "UPDATE_MANIFEST", "UPDATE_SIGNATURE",
    "UPDATE_URL_MAX", "validate_update_args",
    "Ack", "CITY_RE", "COMMANDS", "DEFAULT_MAX_PAYLOAD_BYTES", "DEVICE_CHANNELS", "DEVICE_RE", "DeviceStatus",
    "DeviceTopic", "Limits", "NormalizedReading", "PLATFORM", "PLATFORM_CHANNELS", "ROOT_RE", "RSSI_MAX", "RSSI_MIN", "Reading",
    "Reason", "Rejection", "SEQ_MAX", "STATUS_STATES", "SUPPORTED_VERSIONS", "TS_MAX_MS", "TelemetryValidator",
    "VERSION", "alert_subscription", "alert_topic", "cmd_topic", "config_topic", "deadletter_payload",
    "deadletter_subscription", "deadletter_topic", "decode_ack", "decode_normalized", "decode_status",
    "device_subscription", "device_topic", "devstatus_topic", "encode_alert", "encode_cmd", "encode_config",
    "encode_normalized", "encode_status", "encode_telemetry", "gateway_subscriptions", "normalized_subscription",
    "normalized_topic", "parse_device_topic", "platform_filter", "status_topic", "telemetry_topic", "validate_telemetry"
]
