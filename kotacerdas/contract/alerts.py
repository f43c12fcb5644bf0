"""Alert payloads: what analytics publishes on ``alert_topic`` and POSTs to webhooks. The alert's
own fields are analytics' (``analytics.alerts.Alert.to_json``); the envelope is the contract's."""

from __future__ import annotations

import json
from typing import Any, Mapping

from kotacerdas.contract.base import VERSION

__all__ = ["encode_alert"]


def encode_alert(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON with the contract version first: ``{"v":1, ...alert fields}``."""
    return json.dumps({"v": VERSION, **doc}, ensure_ascii=False, separators=(",", ":")).encode()
