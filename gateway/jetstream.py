"""Gateway on the clustered backbone: devices' raw telemetry -> validated, normalised readings.

Any number of these processes share one durable pull consumer (``kc-gateway``) on the replicated
``$MQTT_msgs`` stream, filtered on devices' telemetry topics (kotacerdas/backbone.py). For each
fetched batch: the gateway's pure decisions (gateway/core.py ``normalise_telemetry``: contract,
catalogue, registry) make a normalised reading or a rejection; readings are published with a
JetStream publish to the normalised topic's subject (so MQTT subscribers and the ingest group see
them as if published over MQTT), each with ``Nats-Msg-Id`` = the reading's identity (city, device, ts; gateway/core.py
``dedup_key``): the stream drops a second copy inside its duplicate window, e.g. when this worker
dies after publishing and before acking and another worker redoes the message, and a second reading
at the same time (counted as a duplicate here; the MQTT gateway names it ``timestamp_conflict``). Rejections go to the
dead-letter topic the same way, counted and logged. The raw message is acked only once the stream
acknowledged what it became.

Not here (the MQTT gateway, gateway/service.py, keeps them): device status/lifecycle and acks,
off-the-shelf firmware adapters, the HTTP registry API. The registry is read from the same SQLite
file as the MQTT gateway's (``gateway.registry_path``); several machines need it replicated
(docs/scale.md says how far this goes).

``kotacerdas gateway jetstream`` (or ``python -m gateway.jetstream``) runs one member.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from prometheus_client import CollectorRegistry, Counter

from kotacerdas import backbone, contract
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract import Limits, NormalizedReading, Rejection
from kotacerdas.settings import Settings, load_settings

from gateway.core import dedup_key, normalise_telemetry
from gateway.registry import Registry

log = logging.getLogger("gateway.jetstream")

STAGE = "gateway"
GATEWAY_CONSUMER = "kc-gateway"


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.received = Counter("kc_gateway_js_received_total", "raw messages fetched", registry=registry)
        self.forwarded = Counter("kc_gateway_js_forwarded_total", "normalised readings stored on the backbone",
                                 registry=registry)
        self.duplicates = Counter("kc_gateway_js_duplicates_total", "readings the stream already had (Nats-Msg-Id)",
                                  registry=registry)
        self.rejected = Counter("kc_gateway_js_rejected_total", "messages refused, by reason", ["reason"],
                                registry=registry)
        self.nakked = Counter("kc_gateway_js_nakked_total", "messages handed back (publish failed)", registry=registry)


def msg_id(r: NormalizedReading) -> str:
    device, ts = dedup_key(r)
    return f"{r.city}/{device}/{ts}"


class GatewayWorker:
    def __init__(self, settings: Settings, *, catalogue: Catalogue | None = None,
                 registry: CollectorRegistry | None = None):
        self.settings = settings
        self.cfg = settings.backbone
        self.root = settings.mqtt.topic_root
        self.catalogue = catalogue or load_catalogue()
        self.limits = Limits.from_settings(settings.contract)
        self.devices = Registry(settings.gateway.registry_path, self.catalogue)
        self.prom = registry or CollectorRegistry()
        self.metrics = Metrics(self.prom)
        self.stats = {"received": 0, "forwarded": 0, "duplicates": 0, "rejected": 0, "nakked": 0}
        self.group = backbone.GroupConsumer(
            self.cfg.servers, GATEWAY_CONSUMER, backbone.device_telemetry_filter(self.root),
            ack_wait_s=self.cfg.ack_wait_s, max_ack_pending=self.cfg.max_ack_pending,
            fetch_batch=min(self.cfg.fetch_batch, 500), name="kc-gateway", reconnect_wait_s=self.cfg.reconnect_wait_s,
        )

    def stop(self) -> None:
        self.group.stop()

    def decide(self, subject: str, payload: bytes, now_ms: int) -> tuple[str, bytes, dict[str, str]]:
        """Pure: (subject to publish to, payload, headers) for one raw message."""
        topic = backbone.subject_to_mqtt_topic(subject)
        r = normalise_telemetry(topic, payload, now_ms, root=self.root, limits=self.limits,
                                catalogue=self.catalogue, lookup=self.devices.get)
        if isinstance(r, Rejection):
            body = contract.deadletter_payload(STAGE, r, topic, payload, now_ms)
            return (backbone.subject_for_topic(contract.deadletter_topic(self.root, STAGE, r.reason)), body,
                    {**backbone.MQTT_PUB_HEADER, "Kc-Reason": r.reason.value})
        return (backbone.subject_for_topic(contract.normalized_topic(self.root, r.city, r.kind, r.device)),
                contract.encode_normalized(r), {**backbone.MQTT_PUB_HEADER, "Nats-Msg-Id": msg_id(r)})

    async def _handle(self, msgs: list) -> None:
        js = self.group.js
        now_ms = int(time.time() * 1000)
        out = [self.decide(m.subject, m.data, now_ms) for m in msgs]
        self.stats["received"] += len(msgs)
        self.metrics.received.inc(len(msgs))
        # publishes in flight together; each returns once the stream (R3) stored it
        acks = await asyncio.gather(*(js.publish(s, p, headers=h) for s, p, h in out), return_exceptions=True)
        for m, (_s, _p, h), a in zip(msgs, out, acks):
            if isinstance(a, BaseException):
                self.stats["nakked"] += 1
                self.metrics.nakked.inc()
                try:
                    await m.nak(delay=self.cfg.nak_delay_s)
                except Exception:  # noqa: BLE001 - comes back after ack_wait anyway
                    pass
                continue
            reason = h.get("Kc-Reason")
            if reason:
                self.stats["rejected"] += 1
                self.metrics.rejected.labels(reason).inc()
                log.warning("rejected", extra={"reason": reason, "subject": m.subject[:200]})
            elif getattr(a, "duplicate", False):
                self.stats["duplicates"] += 1
                self.metrics.duplicates.inc()
            else:
                self.stats["forwarded"] += 1
                self.metrics.forwarded.inc()
            try:
                await m.ack()
            except Exception:  # noqa: BLE001 - redelivered later; the Msg-Id makes the republish a no-op
                pass

    async def run(self) -> None:
        try:
            await self.group.run(self._handle)
        finally:
            self.devices.close()


def main(argv: list[str] | None = None) -> int:
    from kotacerdas.observability import setup_logging
    from kotacerdas.runtime import HealthServer

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    worker = GatewayWorker(settings)
    health = HealthServer(settings.gateway.http_host, settings.gateway.http_port, worker.prom,
                          ready=lambda: {"backbone": worker.group.connected}).start()

    return backbone.serve_member(worker.run, worker.stop, health)


if __name__ == "__main__":
    sys.exit(main())
