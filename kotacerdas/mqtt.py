"""paho-mqtt client construction from settings (one place for auth, TLS, protocol)."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from kotacerdas.errors import TransportError, mqtt_connack_disposition
from kotacerdas.settings import MqttSettings


def make_client(
    settings: MqttSettings,
    client_id: str | None = None,
    *,
    v5: bool = True,
    clean: bool = True,
    manual_ack: bool = False,
) -> paho.Client:
    """A configured, not yet connected client (callback API v2).

    ``clean=False`` asks for a persistent session (v5: clean_start False with a
    session expiry set at connect by :func:`connect`).
    """
    cid = client_id or f"kc-{uuid.uuid4().hex[:12]}"
    proto = paho.MQTTv5 if v5 else paho.MQTTv311
    kwargs: dict[str, Any] = {} if v5 else {"clean_session": clean}
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto, manual_ack=manual_ack, **kwargs)
    c._kc_clean = clean  # type: ignore[attr-defined]  # read by connect()
    if settings.username:
        pw = settings.password.get_secret_value() if settings.password else None
        c.username_pw_set(settings.username, pw)
    if settings.tls_ca:
        c.tls_set(ca_certs=str(settings.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


def connect(c: paho.Client, settings: MqttSettings, *, session_expiry_s: int = 7 * 24 * 3600, timeout_s: float = 10.0) -> None:
    """Connect and start the network loop; block until CONNACK (raises TimeoutError, or
    :class:`~kotacerdas.errors.TransportError` whose disposition says whether retrying can help)."""
    done = threading.Event()
    result: dict[str, object] = {}

    prev: Callable[..., None] | None = c.on_connect

    def on_connect(client, userdata, flags, rc, props=None):  # noqa: ANN001
        result["rc"] = rc
        # v5: the largest packet the broker accepts (3.2.2.3.6), for callers that batch (None: no limit said)
        client._kc_max_packet = getattr(props, "MaximumPacketSize", None)
        done.set()
        if prev is not None:
            prev(client, userdata, flags, rc, props)

    c.on_connect = on_connect
    props = None
    clean = getattr(c, "_kc_clean", True)
    if c.protocol == paho.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else session_expiry_s
        c.connect(settings.host, settings.port, keepalive=settings.keepalive_s, clean_start=clean, properties=props)
    else:
        c.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    c.loop_start()
    if not done.wait(timeout_s):
        c.loop_stop()
        raise TimeoutError(f"no CONNACK from {settings.host}:{settings.port} in {timeout_s} s")
    c.on_connect = prev if prev is not None else on_connect
    rc = result["rc"]
    if getattr(rc, "is_failure", False) or (isinstance(rc, int) and rc != 0):
        c.loop_stop()
        # paho 2 reports a 3.1.1 refusal as the equivalent MQTT 5 reason code; a bare int is 3.1.1's own
        code = rc if isinstance(rc, int) else int(getattr(rc, "value", 0x80))
        raise TransportError(f"MQTT connect refused: {rc}", refusal=mqtt_connack_disposition(
            code, mqtt5=not isinstance(rc, int)))
    if prev is not None:
        c.on_connect = prev


def max_packet_size(c: paho.Client) -> int | None:
    """The maximum packet size the broker announced at the last connect by :func:`connect` (MQTT 5), or None."""
    return getattr(c, "_kc_max_packet", None)


def wait_published(infos: list, timeout_s: float = 30.0) -> None:
    """Wait until every MQTTMessageInfo is published (QoS>0: acknowledged)."""
    deadline = time.monotonic() + timeout_s
    for info in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("publishes not acknowledged in time")
        info.wait_for_publish(left)
