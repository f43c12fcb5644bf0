"""The ingest service: a message source -> batches -> durable writes -> acks.

Parts (each its own module):
- ``ingest/source.py``: the :class:`MessageSource` (own MQTT 3.1.1 client, or paho for
  TLS / MQTT 5); its thread only hands each read's messages to the batcher;
- ``ingest/batcher.py``: the bounded buffer (backpressure) cut into batches, and the pure
  conversion of a batch into a typed :class:`Batch` of line protocol;
- ``ingest/durable.py``: the :class:`DurableWriter`: InfluxDB, else the fsynced spool, and
  replay of the spool.

Threads here: a converter thread (take a batch, convert it, dead-letter what the converter
refused) and a writer thread that makes batches durable and acknowledges their messages in
the order they were taken, while up to ``ingest.write_concurrency`` first write attempts run
at once (one InfluxDB write request is parsed and applied on about one core, so a single
request in flight leaves the database's other cores idle). A converted batch waits in a
queue of two, so conversion of the next batch overlaps the write of the previous one while
memory stays bounded.

A message received on an earlier connection is never acked on a later one (the source drops
such acks); the broker redelivers it instead, and the rewrite is idempotent (same measurement,
tags and timestamp).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future

from prometheus_client import CollectorRegistry

from kotacerdas import contract
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract import Rejection
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.measurements import KC_PIPELINE
from kotacerdas.settings import Settings

from ingest import schema
from ingest.batcher import Batch, Batcher, Routes, convert_batch
from ingest.convert import NS_PER_MS, Converter
from ingest.durable import DurableWriter
from ingest.metrics import Metrics
from ingest.source import MessageSource, Msg, open_source
from ingest.spool import Spool

log = logging.getLogger("ingest")

STAGE = "ingest"


def subscriptions(settings: Settings) -> list[tuple[str, int]]:
    """Normalised telemetry and dead letters (shared among workers if a group is set) and device status."""
    root, group, q = settings.mqtt.topic_root, settings.ingest.share_group, settings.mqtt.qos
    dl = contract.deadletter_subscription(root)
    # devstatus is retained; shared subscriptions never receive retained messages,
    # so every worker subscribes plainly (a duplicate status point is harmless).
    return [(contract.normalized_subscription(root, group), q), (f"$share/{group}/{dl}" if group else dl, q),
            (contract.devstatus_topic(root, "+", "+", "+"), q)]


def routes(root: str) -> Routes:
    return Routes(normalized=contract.normalized_topic(root, "x", "x", "x").rsplit("/", 3)[0] + "/",
                  deadletter=contract.deadletter_subscription(root)[:-1])


class IngestService:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 catalogue: Catalogue | None = None, source: MessageSource | None = None):
        self.settings = settings
        self.cfg = cfg = settings.ingest
        self.root = settings.mqtt.topic_root
        self.catalogue = catalogue or load_catalogue()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.converter = Converter(self.catalogue)
        self.routes = routes(self.root)
        self.subscriptions = subscriptions(settings)
        self.sub_norm = self.subscriptions[0][0]
        self.source = source or open_source(settings, self.subscriptions)
        self.batcher = Batcher(max_buffered=cfg.max_buffered, batch_size=cfg.batch_size,
                               max_unacked=cfg.max_unacked, batch_interval_s=cfg.batch_interval_s,
                               idle_flush_s=cfg.idle_flush_s)
        self.influx = InfluxClient(settings.influx)
        self.spool = Spool(cfg.spool_path, cfg.spool_max_bytes)
        self.writer = DurableWriter(
            self.influx, self.spool, self.metrics, on_refused=self._deadletter, concurrency=cfg.write_concurrency,
            ensure_schema=lambda: schema.setup(self.influx, settings, self.catalogue),
        )
        self._outq: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lag_sum = self._lat_sum = 0.0
        self._lag_n = self._lat_n = 0
        self._next_stats = time.monotonic() + cfg.stats_interval_s

    # ------------------------------------------------------------ lifecycle

    def start(self, *, setup_schema: bool = True) -> IngestService:
        self.writer.schema_ok = not setup_schema
        self.writer.ensure_schema()
        self._threads = [
            threading.Thread(target=self._convert_loop, name="ingest-convert", daemon=True),
            threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.source.start(self.batcher.put)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Make what was taken durable, then disconnect; anything unacked is redelivered later."""
        self.writer.stopping.set()
        self.batcher.stop()
        for t in self._threads:
            t.join(timeout_s)
        try:
            self.source.stop()
        finally:
            self.influx.close()

    @property
    def stopped(self) -> bool:
        """The writer thread has ended (after :meth:`stop`, or because it crashed)."""
        return self._stopped.is_set()

    def ready(self) -> dict[str, bool]:
        return {"influxdb": self.influx.ping(), "mqtt": self.source.ready()}

    # ------------------------------------------------------------ converter thread

    def _idle_wait(self) -> float:
        waits = [max(0.01, self._next_stats - time.monotonic()), 1.0]
        if len(self.spool):
            waits.append(max(0.01, self.writer.down_until - time.monotonic()))
        return min(waits)

    def _convert_loop(self) -> None:
        try:
            while True:
                msgs = self.batcher.take(self._idle_wait())
                if msgs:
                    self._outq.put(self._convert(msgs))
                if self.batcher.stopping:
                    break  # what arrives from now on stays unacked: the broker redelivers it
        except Exception:  # noqa: BLE001 - a dead converter must be loud; messages stay unacked
            log.exception("converter thread crashed")
        finally:
            self._outq.put(None)

    def _convert(self, msgs: list[Msg]) -> Batch:
        b = convert_batch(msgs, self.converter, self.routes, now_ms=int(time.time() * 1000),
                          started=time.monotonic())
        for rej, m in b.dropped:
            self.metrics.add_deadlettered(rej.reason.value)
            log.warning("malformed dead letter dropped", extra={"topic": m.topic, "detail": rej.detail})
        for rej, owner in b.rejected:
            self._deadletter(rej, owner.topic, owner.payload, b.now_ms)
        self.metrics.add_received(len(msgs))
        return b

    # ------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        """Batches are made durable and acknowledged in the order they were taken; up to
        ``writer.concurrency`` first write attempts run at once."""
        pending: collections.deque[tuple[Batch, Future | None]] = collections.deque()
        w = self.writer
        try:
            while True:
                if len(pending) < w.concurrency:
                    try:
                        # with writes in flight, only glance at the queue before waiting on the oldest
                        item = self._outq.get(timeout=0.005 if pending else self._idle_wait())
                    except queue.Empty:
                        item = None
                    else:
                        if item is None:
                            break
                    if item is not None:
                        w.ensure_schema()
                        pending.append((item, w.submit(item.lines)))
                        continue
                if pending:
                    self._finish(*pending.popleft())
                w.ensure_schema()
                w.replay_one()
                self._maybe_stats()
        except Exception:  # noqa: BLE001 - a dead writer must be loud; messages stay unacked
            log.exception("writer thread crashed")
        finally:
            for b, fut in pending:  # stopping: finish what was taken (spooled if InfluxDB is down)
                try:
                    self._finish(b, fut)
                except Exception:  # noqa: BLE001
                    log.exception("could not finish a batch while stopping; the broker redelivers it")
            w.close()
            self._stopped.set()

    def _finish(self, b: Batch, first_try: Future | None) -> None:
        if not self.writer.make_durable(b.lines, b.owners, b.now_ms, first_try):
            return  # stopping while InfluxDB is down and the spool is full: the broker redelivers them
        self.source.ack(b.msgs)
        dt = time.monotonic() - b.started
        self.metrics.batch_latency.observe(dt)
        self._lat_sum += dt
        self._lat_n += 1
        if b.n_telemetry:
            lag = max(0.0, time.time() - b.ts_sum_ms / b.n_telemetry / 1000)
            self.metrics.lag.observe(lag)
            self._lag_sum += lag * b.n_telemetry
            self._lag_n += b.n_telemetry
        self.metrics.buffered.set(len(self.batcher))

    # ------------------------------------------------------------ dead letters and stats

    def _deadletter(self, rej: Rejection, topic: str, payload: bytes, now_ms: int) -> None:
        self.metrics.add_deadlettered(rej.reason.value)
        log.warning("dead-lettered", extra={"reason": rej.reason.value, "detail": rej.detail[:200], "topic": topic})
        body = contract.deadletter_payload(STAGE, rej, topic, payload, now_ms)
        self.source.publish(contract.deadletter_topic(self.root, STAGE, rej.reason), body, qos=1)

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + self.cfg.stats_interval_s
        c = self.metrics.counts
        fields = dict(
            received=c.received, written=c.written, spooled=c.spooled, deadlettered=c.deadlettered,
            lag_ms=(self._lag_sum / self._lag_n * 1000) if self._lag_n else 0.0,
            batch_latency_ms=(self._lat_sum / self._lat_n * 1000) if self._lat_n else 0.0,
            spool_bytes=self.spool.nbytes,
        )
        self._lag_sum = self._lat_sum = 0.0
        self._lag_n = self._lat_n = 0
        tags = {"service": "ingest", "instance": self.cfg.client_id}
        line = KC_PIPELINE.line(tags, fields, int(time.time() * 1000) * NS_PER_MS) or ""
        log.info("ingest stats", extra=dict(fields))
        if not self.writer.influx_down():
            try:
                self.influx.write(line, precision="ns")
            except InfluxError as exc:
                log.warning("could not write kc_pipeline stats", extra={"error": exc.message[:200]})
