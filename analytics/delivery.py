"""Delivering alert transitions: MQTT alert topic, signed webhooks, e-mail over SMTP.

Each channel reports success/failure per alert; a failing channel never blocks
the others or the analytics pass (failures are counted and logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import smtplib
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Callable

import httpx

from analytics.alerts import Alert, payload
from kotacerdas import contract
from kotacerdas.backoff import Backoff
from kotacerdas.errors import Disposition, TransportError

log = logging.getLogger("analytics.delivery")

SIGNATURE_HEADER = "X-KC-Signature"
# a webhook call blocks the delivery pass: never wait longer than this between two tries
WEBHOOK_MAX_BACKOFF_S = 60.0


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>`` HMAC-SHA256 of the exact request body (the GitHub webhook convention)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header or "")


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
    """One POST; raises :class:`TransportError` (no answer, or the status of a refusal)."""
    try:
        r = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= r.status_code < 300:
        raise TransportError(f"HTTP {r.status_code}", status=r.status_code)


def webhook_attempt(url: str, secret: bytes | None, alert: Alert, *, timeout_s: float = 5.0) -> tuple[bool, bool, str]:
    """One POST of the alert JSON: (delivered, refused for good, error). Refused for good is what
    :func:`kotacerdas.errors.http_disposition` calls DROP (a 4xx about what we sent); 408/429/5xx and
    no answer are retried, and so are 401/403 (our secret or the receiver's configuration: FATAL,
    kept and logged at error level until an operator fixes it)."""
    body = payload(alert)
    headers = {"Content-Type": "application/json", "X-KC-Alert-Id": alert.alert_id,
               "X-KC-Delivery": f"{alert.alert_id}:{alert.state}:{alert.updated_ms}"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    try:
        _post(url, body, headers, timeout_s)
    except TransportError as exc:
        if exc.disposition is Disposition.FATAL:
            log.error("webhook refuses our requests (credentials?); keeping the alert",
                      extra={"error": str(exc), "alert_id": alert.alert_id})
        return False, exc.disposition is Disposition.DROP, str(exc)
    return True, False, ""


def post_webhook(url: str, secret: bytes | None, alert: Alert, *, attempts: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> bool:
    """POST the alert JSON; retry 5xx/transport errors with the platform's full-jitter backoff (ceiling
    ``backoff_s`` doubling, capped at 60 s). True when delivered (2xx)."""
    backoff = Backoff(backoff_s, WEBHOOK_MAX_BACKOFF_S, rng=rng)
    for i in range(attempts):
        ok, permanent, err = webhook_attempt(url, secret, alert, timeout_s=timeout_s)
        if ok:
            return True
        if permanent:
            log.warning("webhook refused alert", extra={"error": err, "alert_id": alert.alert_id})
            return False
        log.warning("webhook attempt failed", extra={"attempt": i + 1, "error": err})
        if i + 1 < attempts:
            sleep(backoff.delay())
    return False


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def email_body(a: Alert) -> str:
    """Both languages, then the facts as labelled lines (an analyst can read or parse them)."""
    where = ", ".join(x for x in (a.district, a.city) if x) or "-"
    coords = f"{a.lat:.5f}, {a.lon:.5f}" if a.lat is not None and a.lon is not None else "-"
    facts = [("alert_id", a.alert_id), ("state", a.state), ("severity", a.severity), ("rule", a.rule),
             ("device", a.device), ("location", where), ("coordinates (lat, lon)", coords),
             ("observed", _when(a.observed_ms)), (a.parameter or "value", f"{a.value:g} {a.unit}".strip()),
             ("threshold", "-" if a.threshold is None else f"{a.threshold:g} {a.unit}".strip())]
    if a.concentration is not None:
        facts.append((f"concentration ({a.pollutant})" if a.pollutant else "concentration",
                      f"{a.concentration:g} {a.concentration_unit}".strip()))
    if a.averaging_s:
        facts.append(("averaging period", f"{a.averaging_s / 3600:g} h" if a.averaging_s >= 3600
                      else f"{a.averaging_s / 60:g} min"))
    advice = "\n".join(x for x in (a.advice_id, a.advice_en) if x)
    lines = [a.text_id, "", a.text_en, ""]
    if advice and a.state != "resolved":
        lines += ["Saran / Advice:", advice, ""]
    lines += [f"{k}: {v}" for k, v in facts]
    return "\n".join(lines) + "\n"


def send_email(host: str, port: int, to: str, alert: Alert, *, sender: str = "alerts@kotacerdas.local",
               timeout_s: float = 10.0) -> bool:
    return email_attempt(host, port, to, alert, sender=sender, timeout_s=timeout_s)[0]


def email_attempt(host: str, port: int, to: str, alert: Alert, *, sender: str = "alerts@kotacerdas.local",
                  timeout_s: float = 10.0) -> tuple[bool, bool, str]:
    """(delivered, refused for good, error); a refused recipient is for good, a dead server is not."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    where = f" {alert.district}" if alert.district else ""
    msg["Subject"] = (f"[Kota Cerdas {alert.severity.upper()}] {alert.rule}{where} {alert.device} ({alert.state}, "
                      f"{_when(alert.observed_ms)})")
    msg["X-KC-Alert-Id"] = alert.alert_id
    msg.set_content(email_body(alert))
    try:
        with smtplib.SMTP(host, port, timeout=timeout_s) as s:
            s.send_message(msg)
        return True, False, ""
    except smtplib.SMTPRecipientsRefused as exc:
        log.warning("email recipient refused", extra={"error": str(exc), "alert_id": alert.alert_id})
        return False, True, f"recipient refused: {exc}"
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("email delivery failed", extra={"error": str(exc), "alert_id": alert.alert_id})
        return False, False, f"{type(exc).__name__}: {exc}"


def publish_mqtt(client, root: str, alert: Alert, qos: int = 1):  # noqa: ANN001 - paho client
    """Publish on ``{root}/v1/_platform/alerts/{department}/{severity}``; returns the MQTTMessageInfo."""
    return client.publish(contract.alert_topic(root, alert.department, alert.severity), payload(alert), qos=qos)
