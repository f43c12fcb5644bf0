"""A :class:`ingest.source.MessageSource` on the clustered backbone (docs/scale.md).

With it, the standard ingest service (batcher, durable writer, spool, metrics: ingest/service.py)
consumes the ingest group's JetStream consumer instead of a Mosquitto subscription:
``kotacerdas ingest run --source jetstream``. Messages arrive with their MQTT topic (the subject
mapped back), so the service's conversion and routes are unchanged; ``ack`` acks each message on
the backbone once the service made it durable (InfluxDB or the fsynced spool).

JetStream acks are not tied to a connection (they name the stream and consumer sequence), so every
message has generation 1 and an ack after a reconnect is still valid; an ack that arrives after
``ack_wait`` has handed the message to another worker only makes an idempotent rewrite.

The difference from ``kotacerdas ingest jetstream`` (ingest/jetstream.py): this one writes to the
one InfluxDB of ``[influx]`` and spools when it is down; that one routes each city to its own
InfluxDB (kotacerdas/routing.py) and NAKs when a city's InfluxDB is down.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any, Sequence

from kotacerdas import backbone, contract
from kotacerdas.settings import Settings

from ingest.source import Deliver, Msg

log = logging.getLogger("ingest.jetstream")

__all__ = ["JetStreamSource"]


class JetStreamSource:
    def __init__(self, settings: Settings):
        cfg = settings.backbone
        self.group = backbone.GroupConsumer(
            cfg.servers, backbone.INGEST_CONSUMER, backbone.platform_filter(settings.mqtt.topic_root),
            ack_wait_s=cfg.ack_wait_s, max_ack_pending=cfg.max_ack_pending, fetch_batch=cfg.fetch_batch,
            name="kc-ingest", reconnect_wait_s=cfg.reconnect_wait_s,
        )
        root = settings.mqtt.topic_root
        # the group's filter covers every platform topic; the service converts only these three
        # (anything else would be taken for a device status and dead-lettered): alerts are acked unread
        self._wanted = tuple(t.rsplit("/", 3)[0] + "/" for t in (
            contract.normalized_topic(root, "x", "x", "x"), contract.devstatus_topic(root, "x", "x", "x")
        )) + (contract.deadletter_subscription(root)[:-1],)
        self._pending: dict[int, Any] = {}  # mid -> nats Msg, until acked
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._deliver: Deliver | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._thread = threading.Thread(target=self._run, name="ingest-jetstream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.group.run(self._handle))
        except BaseException as exc:  # noqa: BLE001 - reported through ready() and the log
            self._error = exc
            log.error("JetStream source stopped", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            loop.close()

    async def _handle(self, msgs: list) -> None:
        out, skip = [], []
        with self._lock:
            for m in msgs:
                topic = backbone.subject_to_mqtt_topic(m.subject)
                if not topic.startswith(self._wanted):
                    skip.append(m)
                    continue
                mid = next(self._ids)
                self._pending[mid] = m
                out.append(Msg(1, mid, 1, topic, m.data))
        await _ack_all(skip)
        if not out:
            return
        assert self._deliver is not None
        # the batcher may block (backpressure): wait in a thread so acks and heartbeats go on
        await asyncio.to_thread(self._deliver, out)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.group.stop)
        if self._thread is not None:
            self._thread.join(15)

    def ready(self) -> bool:
        return self._error is None and self.group.connected

    def ack(self, msgs: Sequence[Msg]) -> None:
        with self._lock:
            todo = [self._pending.pop(m.mid) for m in msgs if m.mid in self._pending]
        loop = self._loop
        if todo and loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(_ack_all(todo), loop)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Dead letters go back onto the backbone (where the ingest group itself stores them)."""
        loop, js = self._loop, self.group.js
        if loop is None or js is None or loop.is_closed():
            log.warning("dead letter not published: backbone not connected", extra={"topic": topic})
            return
        fut = asyncio.run_coroutine_threadsafe(
            js.publish(backbone.subject_for_topic(topic), payload, headers=dict(backbone.MQTT_PUB_HEADER)), loop)
        try:
            fut.result(10)
        except Exception as exc:  # noqa: BLE001 - counted by the service already; the log says why it is missing
            log.warning("dead letter not published", extra={"topic": topic, "error": str(exc)[:200]})


async def _ack_all(msgs: list) -> None:
    for m in msgs:
        try:
            await m.ack()
        except Exception as exc:  # noqa: BLE001 - the message comes back after ack_wait; the rewrite is idempotent
            log.debug("ack failed", extra={"error": str(exc)[:120]})
