"""Delivering alert transitions: MQTT alert topic, signed webhooks, e-mail over SMTP.

Each channel reports success/failure per alert; a failing channel never blocks
the others or the analytics pass (failures are counted and logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import time
from email.message import EmailMessage
from typing import Callable

import httpx

from analytics.alerts import Alert, payload
from kotacerdas import contract

log = logging.getLogger("analytics.delivery")

SIGNATURE_HEADER = "X-KC-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>`` HMAC-SHA256 of the exact request body (the GitHub webhook convention)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header or "")


def post_webhook(url: str, secret: bytes | None, alert: Alert, *, attempts: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST the alert JSON; retry 5xx/transport errors with exponential backoff. True when delivered (2xx)."""
    body = payload(alert)
    headers = {"Content-Type": "application/json", "X-KC-Alert-Id": alert.alert_id,
               "X-KC-Delivery": f"{alert.alert_id}:{alert.state}:{alert.updated_ms}"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    delay = backoff_s
    for i in range(attempts):
        try:
            r = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
            if 200 <= r.status_code < 300:
                return True
            if 400 <= r.status_code < 500 and r.status_code != 429:
                log.warning("webhook refused alert", extra={"status": r.status_code, "alert_id": alert.alert_id})
                return False
        except httpx.HTTPError as exc:
            log.warning("webhook attempt failed", extra={"attempt": i + 1, "error": str(exc)})
        if i + 1 < attempts:
            sleep(delay)
            delay *= 2
    return False


def send_email(host: str, port: int, to: str, alert: Alert, *, sender: str = "alerts@kotacerdas.local",
               timeout_s: float = 10.0) -> bool:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"[Kota Cerdas {alert.severity.upper()}] {alert.rule} {alert.device} ({alert.state})"
    msg["X-KC-Alert-Id"] = alert.alert_id
    msg.set_content(f"{alert.text_id}\n\n{alert.text_en}\n\nalert_id: {alert.alert_id}\nvalue: {alert.value}\n")
    try:
        with smtplib.SMTP(host, port, timeout=timeout_s) as s:
            s.send_message(msg)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("email delivery failed", extra={"error": str(exc), "alert_id": alert.alert_id})
        return False


def publish_mqtt(client, root: str, alert: Alert, qos: int = 1):  # noqa: ANN001 - paho client
    """Publish on ``{root}/v1/_platform/alerts/{department}/{severity}``; returns the MQTTMessageInfo."""
    return client.publish(contract.alert_topic(root, alert.department, alert.severity), payload(alert), qos=qos)
