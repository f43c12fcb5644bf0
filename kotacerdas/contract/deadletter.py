"""Dead letters: what a stage publishes on ``deadletter_topic`` when it refuses a message."""

from __future__ import annotations

import base64
import json

from kotacerdas.contract.base import VERSION, Rejection

__all__ = ["deadletter_payload"]

def deadletter_payload(
    stage: str, rejection: Rejection, topic: str, payload: bytes, now_ms: int, *, keep_bytes: int = 1024
) -> bytes:
    """What goes on a dead-letter topic: reason, detail, origin and the (truncated) raw payload."""
    raw = payload[:keep_bytes]
    return json.dumps(
        {
            "v": VERSION, "stage": stage, "reason": rejection.reason.value, "detail": rejection.detail,
            "topic": topic[:256], "ts": now_ms, "size": len(payload),
            "payload_b64": base64.b64encode(raw).decode(), "truncated": len(payload) > keep_bytes,
        },
        separators=(",", ":"),
    ).encode()
