"""Where ingest's messages come from: one interface, two MQTT implementations.

A :class:`MessageSource` subscribes, hands every read's messages to ``deliver`` (which may
block: that is ingest's backpressure, and while it blocks nothing more is read), and later
acknowledges the messages the service made durable. A message carries the generation of the
connection it arrived on; an ack for an older generation is dropped, because a packet id of a
dead connection may name another message on the new one (the broker redelivers instead, and
the rewrite is idempotent: same series, same device time).

- :class:`WireSource`: the own MQTT 3.1.1 client (``kotacerdas/mqttwire.py``), plain TCP, the
  default and the fast one (one parse pass and one callback per read, one write per batch
  of PUBACKs);
- :class:`PahoSource`: paho-mqtt with manual acks, for TLS (``mqtt.tls_ca``) and MQTT 5
  (``ingest.mqtt_v5``), or when ``ingest.mqtt_client = "paho"``.

Other transports (a NATS JetStream consumer, say) implement the same five methods.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import paho.mqtt.client as paho

from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings

from kotacerdas import mqttwire as wire

log = logging.getLogger("ingest")

__all__ = ["Deliver", "MessageSource", "Msg", "PahoSource", "WireSource", "open_source"]


@dataclass(slots=True)
class Msg:
    """One received message: ``gen`` is the source's connection generation at receipt."""

    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes


Deliver = Callable[[list[Msg]], None]


class MessageSource(Protocol):
    def start(self, deliver: Deliver) -> None:
        """Connect and subscribe (raises ConnectionError / TimeoutError / OSError), then keep
        delivering from the source's own thread until :meth:`stop`."""

    def stop(self) -> None: ...

    def ready(self) -> bool:
        """Connected and subscribed (SUBACK seen): a message sent now reaches us."""

    def ack(self, msgs: Sequence[Msg]) -> None:
        """Acknowledge durable messages; those of an older connection are skipped."""

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on the same connection (dead letters)."""


class WireSource:
    """Plain-TCP MQTT 3.1.1 through :class:`kotacerdas.mqttwire.WireClient`."""

    def __init__(self, settings: Settings, subscriptions: list[tuple[str, int]]):
        self.subscriptions = subscriptions
        self._deliver: Deliver | None = None
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self.client = wire.WireClient(
            settings.mqtt, settings.ingest.client_id, clean=False, on_connect=self._on_connect,
            on_disconnect=self._on_disconnect, on_messages=self._on_messages, on_subscribed=self.on_subscribed,
        )

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.client.start()

    def stop(self) -> None:
        self._stopping.set()
        self.client.stop()

    def ready(self) -> bool:
        return self.client.is_connected() and self._subscribed.is_set()

    def ack(self, msgs: Sequence[Msg]) -> None:
        # QoS is at most 1 here; the client also drops acks whose generation is no longer current
        gen = self.client.generation
        self.client.ack(gen, [m.mid for m in msgs if m.qos and m.gen == gen])

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos)

    def _on_connect(self, session_present: bool) -> None:
        self.client.subscribe(self.subscriptions)
        log.info("connected and subscribed", extra={"session_present": session_present})

    def on_subscribed(self, codes: list[int]) -> None:
        if 0x80 not in codes:  # a refused topic (the client logs it) would bring no data: stay not ready
            self._subscribed.set()

    def _on_disconnect(self, why: str) -> None:
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT disconnected; reconnecting", extra={"error": why[:200]})

    def _on_messages(self, gen: int, msgs: wire.Messages) -> None:
        assert self._deliver is not None
        self._deliver([Msg(gen, mid, qos, topic, payload) for topic, payload, mid, qos in msgs])


class PahoSource:
    """paho-mqtt (TLS, MQTT 5) with manual acks: a PUBACK only once the service says so."""

    def __init__(self, settings: Settings, subscriptions: list[tuple[str, int]]):
        self.settings = settings
        self.subscriptions = subscriptions
        self._deliver: Deliver | None = None
        self._gen = 0
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        c = make_client(settings.mqtt, settings.ingest.client_id, v5=settings.ingest.mqtt_v5, clean=False,
                        manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        self.client = c

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        connect(self.client, self.settings.mqtt)

    def stop(self) -> None:
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def ready(self) -> bool:
        return self.client.is_connected() and self._subscribed.is_set()

    def ack(self, msgs: Sequence[Msg]) -> None:
        gen = self._gen
        for m in msgs:
            if m.qos and m.gen == gen:
                self.client.ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            return
        self._gen += 1
        self.client.subscribe(self.subscriptions)
        log.info("connected and subscribed", extra={"session_present": bool(getattr(flags, "session_present", False))})

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self._subscribed.clear()
        self._gen += 1  # messages already buffered are still written; their acks are now void
        if not self._stopping.is_set():
            log.warning("MQTT disconnected; paho reconnects", extra={"rc": str(rc)})

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        assert self._deliver is not None
        self._deliver([Msg(self._gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload))])


def open_source(settings: Settings, subscriptions: list[tuple[str, int]]) -> MessageSource:
    """The wire client unless TLS, MQTT 5 or ``ingest.mqtt_client = "paho"`` asks for paho."""
    cfg = settings.ingest
    if cfg.mqtt_client == "wire" and not cfg.mqtt_v5 and not settings.mqtt.tls_ca:
        return WireSource(settings, subscriptions)
    return PahoSource(settings, subscriptions)
