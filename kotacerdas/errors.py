"""The platform's error tree, and the one place that decides what a failure means.

Callers catch these, not built-ins (``except StorageError``), and act on the
:class:`Disposition` instead of re-reading status codes:

- ``DROP``: the data is bad; retrying cannot help. Count it and dead-letter it with the reason.
- ``RETRY``: the other side is down, busy or restarting; keep the data (spool, stay unacked) and retry
  with backoff.
- ``FATAL``: our configuration is wrong (credentials, permissions); retrying the same request will
  not help until an operator acts. Services keep the data as for RETRY and say so at error level.

Tree: :class:`KcError` -> :class:`ContractError` (bad input; DROP), :class:`StorageError` (a
database answered or was unreachable; disposition by status), :class:`TransportError` (broker or
HTTP peer unreachable (RETRY) or refusing (disposition by status or protocol code)).
"""

from __future__ import annotations

import enum

__all__ = ["ContractError", "Disposition", "KcError", "StorageError", "TransportError", "http_disposition",
           "mqtt_connack_disposition"]


class Disposition(enum.Enum):
    DROP = "drop"
    RETRY = "retry"
    FATAL = "fatal"


class KcError(RuntimeError):
    """Base of the platform's errors."""

    @property
    def disposition(self) -> Disposition:
        return Disposition.FATAL


class ContractError(KcError, ValueError):
    """A payload or point that breaks the wire contract or a schema."""

    @property
    def disposition(self) -> Disposition:
        return Disposition.DROP


class TransportError(KcError, ConnectionError):
    """A broker or HTTP peer could not be reached, or refused what we sent.

    ``status``: the HTTP status of a refusal (0: no answer; disposition by :func:`http_disposition`).
    ``refusal``: a disposition decided by the protocol itself (an MQTT CONNACK code, see
    :func:`mqtt_connack_disposition`), which then wins over ``status``."""

    def __init__(self, message: str, *, status: int = 0, refusal: Disposition | None = None):
        super().__init__(message)  # one argument: OSError would read a second one as errno/strerror
        self.status = status
        self.refusal = refusal

    @property
    def disposition(self) -> Disposition:
        return self.refusal if self.refusal is not None else http_disposition(self.status)


def http_disposition(status: int) -> Disposition:
    """What an HTTP status (0 = no answer) means for the request that got it.

    RFC 9110: 408 and 429 are explicitly worth retrying, 5xx are the server's own problem;
    401/403 are about who we are (FATAL); other 4xx are about what we sent (DROP)."""
    if status == 0 or status >= 500 or status in (408, 429):
        return Disposition.RETRY
    if status in (401, 403):
        return Disposition.FATAL
    return Disposition.DROP


# MQTT 5.0 CONNACK reason codes (OASIS MQTT 5.0, 3.2.2.2) that say "later", not "never with this
# configuration": unspecified error, server unavailable, server busy, quota exceeded, connection rate
_MQTT5_TRANSIENT = frozenset({0x80, 0x88, 0x89, 0x97, 0x9F})


def mqtt_connack_disposition(code: int, *, mqtt5: bool) -> Disposition:
    """What a refused MQTT CONNECT means. MQTT 3.1.1 (3.2.2.3): 3 "server unavailable" is worth
    retrying; 1/2/4/5 (protocol version, client id, credentials, authorisation) are our configuration
    (FATAL). MQTT 5.0 codes as ``_MQTT5_TRANSIENT`` says; every other refusal is FATAL."""
    if mqtt5:
        return Disposition.RETRY if code in _MQTT5_TRANSIENT else Disposition.FATAL
    return Disposition.RETRY if code == 3 else Disposition.FATAL


class StorageError(KcError):
    """A database refused a request or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{self.backend} answered {status}: {message}")
        self.status = status
        self.message = message

    backend = "storage"

    @property
    def disposition(self) -> Disposition:
        return http_disposition(self.status)
