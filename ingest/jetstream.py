"""Ingest worker on the clustered backbone: JetStream consumer group -> per-city InfluxDB.

Any number of these processes share one durable pull consumer (``kc-ingest``) on the
replicated ``$MQTT_msgs`` stream (kotacerdas/backbone.py explains why that stream), filtered on
the platform's own topics: normalised readings, dead letters and devstatus (alerts are skipped).
Each fetch of up to ``backbone.fetch_batch`` messages is converted (ingest/convert.py, the same
conversion as the MQTT path), grouped by the InfluxDB that holds each city
(kotacerdas/routing.py) and written with ``write_keep_good``; only then are the messages
acked. Normalised telemetry comes in either form, as for ``ingest run``: one reading per message, or
the MQTT gateway's batch (``.../norm/{city}/{kind}/_batch``, one decode through the contract's
``batch_readings``), whose bad readings are dead-lettered alone. So:
- a worker killed mid-batch acked nothing of it: JetStream hands those messages to another
  worker after ``ack_wait_s``; rewriting a point InfluxDB already stored is idempotent (same
  measurement, tags and device timestamp), so a redelivery never makes a duplicate point;
- an InfluxDB that is down (transport error, 5xx, 401/404) costs no data: that city's messages
  are NAKed with ``nak_delay_s`` and come back; other cities' writes go on;
- a message that is not a valid normalised reading, or a line InfluxDB refuses (400), is
  written as a ``deadletter`` point with its reason, counted, and acked.

The MQTT ingest path (ingest/service.py, Mosquitto) is untouched: this module is the
clustered alternative.

``kotacerdas ingest jetstream`` runs one worker (SIGTERM to stop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from kotacerdas import backbone, contract
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract import Reason, Rejection
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.routing import CityRouter
from kotacerdas.settings import Settings

from ingest import schema
from ingest.batcher import batch_reading_payload
from ingest.convert import Converter
from ingest.writer import write_keep_good

log = logging.getLogger("ingest.jetstream")

STAGE = "ingest"


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.received = Counter("kc_ingest_js_received_total", "messages fetched from JetStream", registry=registry)
        self.redelivered = Counter(
            "kc_ingest_js_redelivered_total", "fetched messages JetStream had delivered before", registry=registry)
        self.written = Counter("kc_ingest_js_written_total", "points stored in InfluxDB", ["target"], registry=registry)
        self.deadlettered = Counter(
            "kc_ingest_js_deadlettered_total", "messages or lines refused, by reason", ["reason"], registry=registry)
        self.nakked = Counter(
            "kc_ingest_js_nakked_total", "messages handed back because their InfluxDB failed", registry=registry)
        self.connected = Gauge("kc_ingest_js_connected", "1 while connected to the backbone", registry=registry)


@dataclass
class Outcome:
    """What to do with one fetched batch: indices to ack and to NAK, and what happened.

    ``dead`` holds (message index, reading index or None for the whole message, why): a gateway
    batch message (``.../norm/{city}/{kind}/_batch``) carries many readings, and a bad one is
    dead-lettered alone while the others are written."""

    ack: list[int] = field(default_factory=list)
    nak: list[int] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)
    dead: list[tuple[int, int | None, Rejection]] = field(default_factory=list)


def city_of(subject: str) -> str:
    """``$MQTT.msgs.<root...>.v1.<platform>.norm.<city>.<kind>.<device or _batch>`` -> city."""
    return subject.rsplit(".", 3)[-3]


BATCH_SUBJECT_SUFFIX = "." + contract.NORMALIZED_BATCH

# what one platform message became: (city for routing, one answer per reading: line or refusal)
Lines = tuple[str, list[str | Rejection]]


class BatchWriter:
    """Pure-ish core: convert a batch, write it per city target, say what to ack. No NATS here."""

    def __init__(self, settings: Settings, router: CityRouter, catalogue: Catalogue):
        self.settings = settings
        self.router = router
        self.converter = Converter(catalogue)
        self._catalogue_obj = catalogue
        self._platform = backbone.platform_filter(settings.mqtt.topic_root)[:-1]  # "$MQTT.msgs.<root>.v1._platform."
        self._schema_done: set[str] = set()

    def ensure_schema(self, city: str) -> None:
        """Database, retention policies and CQs on the city's InfluxDB, once per target."""
        target = self.router.settings_for(city)
        key = f"{target.url}|{target.database}"
        if key in self._schema_done:
            return
        schema.setup(self.router.client_for(city), self.settings.model_copy(update={"influx": target}),
                     self._catalogue_obj)
        self._schema_done.add(key)

    def _lines(self, subject: str, payload: bytes, now_ms: int) -> Lines | Rejection | None:
        """What a message becomes, a Rejection of the whole message, or None for a platform topic
        ingest does not store. Either form of normalised telemetry is decoded as ``ingest run``
        does (ingest/convert.py, the contract's batch decoder): a batch gives one answer per reading."""
        channel, _, rest = subject[len(self._platform):].partition(".")
        if channel == contract.CH_NORM:
            if subject.endswith(BATCH_SUBJECT_SUFFIX):
                many = self.converter.telemetry_batch(backbone.subject_to_mqtt_topic(subject), payload)
                if isinstance(many, Rejection):
                    return many
                return city_of(subject), [r if isinstance(r, Rejection) else r[0] for r in many]
            tel = self.converter.telemetry(payload)
            return tel if isinstance(tel, Rejection) else (city_of(subject), [tel[0]])
        if channel == contract.CH_DEADLETTER:
            dl = self.converter.deadletter(payload, backbone.subject_to_mqtt_topic(subject))
            return dl if isinstance(dl, Rejection) else ("", [dl])
        if channel == contract.CH_DEVSTATUS:
            st = self.converter.device_status(payload, now_ms)
            return st if isinstance(st, Rejection) else (rest.split(".")[0], [st])
        return None  # alerts and other platform traffic: not ingest's

    def process(self, batch: list[tuple[str, bytes]], now_ms: int) -> Outcome:
        """A message is acked once all its lines are stored and its refused readings dead-lettered;
        NAKed (all of it: redelivery rewrites the stored lines idempotently) if any of that failed."""
        out = Outcome()
        # target key -> (client, lines, owners (message, reading or None), city)
        by_target: dict[str, tuple[InfluxClient, list[str], list[tuple[int, int | None]], str]] = {}
        for i, (subject, payload) in enumerate(batch):
            got = self._lines(subject, payload, now_ms)
            if got is None:
                continue
            if isinstance(got, Rejection):
                out.dead.append((i, None, got))
                continue
            city, answers = got
            t = self.router.settings_for(city)
            key = f"{t.url}|{t.database}"
            slot = by_target.get(key)
            if slot is None:
                slot = by_target[key] = (self.router.client_for(city), [], [], city)
            whole = len(answers) == 1 and not subject.endswith(BATCH_SUBJECT_SUFFIX)
            for j, a in enumerate(answers):
                if isinstance(a, Rejection):
                    out.dead.append((i, None if whole else j, a))
                else:
                    slot[1].append(a)
                    slot[2].append((i, None if whole else j))
        nak: set[int] = set()
        for key, (client, lines, owners, city) in by_target.items():
            try:
                self.ensure_schema(city)
                bad = write_keep_good(client, lines, precision="ns")
            except InfluxError as exc:
                log.warning("InfluxDB write failed; batch handed back",
                            extra={"target": key, "error": exc.message[:200], "lines": len(lines)})
                nak.update(i for i, _ in owners)
                continue
            for j, err in bad:
                out.dead.append((*owners[j], Rejection(Reason.WRITE_REJECTED, err[:200])))
            out.written[key] = out.written.get(key, 0) + len(lines) - len(bad)
        # a message handed back is redone whole: its refusals are dead-lettered then, not twice
        out.dead = [d for d in out.dead if d[0] not in nak]
        nak |= self._write_deadletters(batch, out.dead, now_ms)
        out.nak = sorted(nak)
        out.ack = [i for i in range(len(batch)) if i not in nak]
        return out

    def _write_deadletters(self, batch: list[tuple[str, bytes]], dead: list[tuple[int, int | None, Rejection]],
                           now_ms: int) -> set[int]:
        """Refused messages and readings become ``deadletter`` points on the default InfluxDB; the
        messages whose record could not be stored (to be NAKed: come back later rather than lose it)."""
        if not dead:
            return set()
        root = self.settings.mqtt.topic_root
        lines = []
        for i, j, rej in dead:
            subject, payload = batch[i]
            topic = backbone.subject_to_mqtt_topic(subject)
            if j is not None:
                payload = batch_reading_payload(payload, j)
            log.warning("dead-lettered", extra={"reason": rej.reason.value, "detail": rej.detail[:200], "topic": topic})
            body = contract.deadletter_payload(STAGE, rej, topic, payload, now_ms)
            line = self.converter.deadletter(body, contract.deadletter_topic(root, STAGE, rej.reason))
            if isinstance(line, str):
                lines.append(line)
        try:
            write_keep_good(self.router.client_for(""), lines, precision="ns")
        except InfluxError:
            return {i for i, _, _ in dead}
        return set()


class JetStreamIngest:
    """One worker of the ingest consumer group."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 catalogue: Catalogue | None = None):
        self.settings = settings
        self.cfg = settings.backbone
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.router = CityRouter(settings)
        self.core = BatchWriter(settings, self.router, catalogue or load_catalogue())
        self.stats = {"received": 0, "written": 0, "deadlettered": 0, "nakked": 0, "redelivered": 0}
        self.group = backbone.GroupConsumer(
            self.cfg.servers, backbone.INGEST_CONSUMER, backbone.platform_filter(settings.mqtt.topic_root),
            ack_wait_s=self.cfg.ack_wait_s, max_ack_pending=self.cfg.max_ack_pending,
            fetch_batch=self.cfg.fetch_batch, name="kc-ingest", reconnect_wait_s=self.cfg.reconnect_wait_s,
        )

    def stop(self) -> None:
        self.group.stop()

    def ready(self) -> dict[str, bool]:
        return {"backbone": self.group.connected,
                "influxdb": all(self.router.client_for(c).ping() for c in [""] + list(self.router.table))}

    async def run(self) -> None:
        self.metrics.connected.set(1)
        try:
            await self.group.run(self._handle)
        finally:
            self.metrics.connected.set(0)
            self.router.close()

    async def _handle(self, msgs: list) -> None:
        n = len(msgs)
        redelivered = sum(1 for m in msgs if m.metadata.num_delivered > 1)
        self.metrics.received.inc(n)
        self.metrics.redelivered.inc(redelivered)
        self.stats["received"] += n
        self.stats["redelivered"] += redelivered
        batch = [(m.subject, m.data) for m in msgs]
        out = await asyncio.to_thread(self.core.process, batch, int(time.time() * 1000))
        # acks after the write; a lost ack (node down) means a redelivery and an idempotent rewrite
        await settle(msgs, out.ack, out.nak, self.cfg.nak_delay_s)
        for key, k in out.written.items():
            self.metrics.written.labels(key).inc(k)
            self.stats["written"] += k
        for _, _, rej in out.dead:
            self.metrics.deadlettered.labels(rej.reason.value).inc()
        self.stats["deadlettered"] += len(out.dead)
        self.metrics.nakked.inc(len(out.nak))
        self.stats["nakked"] += len(out.nak)


async def settle(msgs: list, ack: list[int], nak: list[int], nak_delay_s: float) -> None:
    """Ack and NAK by index. A failed ack is harmless: the message comes back after ack_wait."""
    for i in ack:
        try:
            await msgs[i].ack()
        except Exception as exc:  # noqa: BLE001
            log.debug("ack failed", extra={"error": str(exc)[:120]})
    for i in nak:
        try:
            await msgs[i].nak(delay=nak_delay_s)
        except Exception:  # noqa: BLE001
            pass


def main(settings: Settings) -> int:
    from kotacerdas.observability import setup_logging
    from kotacerdas.runtime import HealthServer

    setup_logging(settings.log_level, settings.log_json)
    worker = JetStreamIngest(settings)
    health = HealthServer(settings.ingest.http_host, settings.ingest.http_port, worker.registry,
                          ready=worker.ready).start()

    return backbone.serve_member(worker.run, worker.stop, health)
