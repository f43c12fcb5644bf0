"""The ingest service: MQTT (QoS 1, persistent shared session) -> batches -> InfluxDB.

Threads:
- the MQTT reader thread (ingest's own 3.1.1 consumer, ``ingest/wire.py``, or paho's
  network thread for TLS / MQTT 5) only appends received messages to a bounded buffer
  (``settings.ingest.max_buffered``; beyond it the thread waits, so TCP and the
  broker's queue hold the surplus instead of our memory);
- a converter thread takes batches (by size, by age, when the stream pauses, or before
  the broker's in-flight window fills) and turns them into line protocol;
- a writer thread (overlapping the next conversion) writes them and acknowledges
  each message only once its point is durable: stored in InfluxDB, or fsynced to the
  on-disk spool when InfluxDB is down or answers 5xx. Lines InfluxDB refuses (400)
  are dead-lettered with the reason; the rest of the batch is kept.

A message received on an earlier connection is never acked on a later one (its
packet id may name another message by then); the broker redelivers it instead,
and the rewrite is idempotent (same measurement, tags and timestamp).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kotacerdas import contract
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract import Reason, Rejection
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.lineprotocol import format_line
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings

from ingest import fastsock, schema, wire
from ingest.convert import NS_PER_MS, Converter
from ingest.spool import Spool
from ingest.writer import write_keep_good

log = logging.getLogger("ingest")

STAGE = "ingest"
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.received = Counter("kc_ingest_received_total", "MQTT messages received", registry=registry)
        self.written = Counter("kc_ingest_written_total", "points stored in InfluxDB", registry=registry)
        self.spooled = Counter("kc_ingest_spooled_total", "points put in the on-disk spool", registry=registry)
        self.replayed = Counter("kc_ingest_replayed_total", "spooled points later stored", registry=registry)
        self.deadlettered = Counter(
            "kc_ingest_deadlettered_total", "messages or lines refused, by reason", ["reason"], registry=registry
        )
        self.lag = Histogram(
            "kc_ingest_lag_seconds", "device timestamp to durable write (mean of each batch)",
            buckets=_LAG_BUCKETS, registry=registry,
        )
        self.batch_latency = Histogram(
            "kc_ingest_batch_latency_seconds", "time to make one batch durable", buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.spool_bytes = Gauge("kc_ingest_spool_bytes", "bytes waiting in the spool", registry=registry)
        self.buffered = Gauge("kc_ingest_buffered", "messages received and not yet durable", registry=registry)
        self.spool_full = Gauge(
            "kc_ingest_spool_full", "1 while InfluxDB is down and the spool is full (messages held at the broker)",
            registry=registry,
        )
        self.spool_full_events = Counter(
            "kc_ingest_spool_full_events_total", "times the spool filled up and ingest stopped acknowledging",
            registry=registry,
        )


@dataclass(slots=True)
class _Msg:
    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes


class IngestService:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 catalogue: Catalogue | None = None):
        self.settings = settings
        self.cfg = settings.ingest
        self.root = settings.mqtt.topic_root
        self.catalogue = catalogue or load_catalogue()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.converter = Converter(self.catalogue)
        self.influx = InfluxClient(settings.influx)
        self.spool = Spool(self.cfg.spool_path, self.cfg.spool_max_bytes)
        self.metrics.spool_bytes.set(self.spool.nbytes)

        group = self.cfg.share_group
        self.sub_norm = contract.normalized_subscription(self.root, group)
        dl = contract.deadletter_subscription(self.root)
        self.sub_dead = f"$share/{group}/{dl}" if group else dl
        # devstatus is retained; shared subscriptions never receive retained messages,
        # so every worker subscribes plainly (a duplicate status point is harmless).
        self.sub_status = contract.devstatus_topic(self.root, "+", "+", "+")
        self._norm_prefix = contract.normalized_topic(self.root, "x", "x", "x").rsplit("/", 3)[0] + "/"
        self._dead_prefix = contract.deadletter_subscription(self.root)[:-1]

        self._buf: collections.deque[_Msg] = collections.deque()
        self._cond = threading.Condition()
        self._first_at = 0.0
        self._gen = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        # converted batches waiting for the writer: at most 2, so conversion of the next batch
        # overlaps the HTTP write of the previous one while memory stays bounded
        self._outq: queue.Queue = queue.Queue(maxsize=2)
        self._write_slots = max(1, self.cfg.write_concurrency)
        self._pool = ThreadPoolExecutor(self._write_slots, thread_name_prefix="ingest-write")
        self._influx_down_until = 0.0
        self._backoff = 0.5
        self._schema_ok = False
        self._stats = {"received": 0, "written": 0, "spooled": 0, "deadlettered": 0}
        self._lag_sum = 0.0
        self._lag_n = 0
        self._lat_sum = 0.0
        self._lat_n = 0
        self._next_stats = time.monotonic() + self.cfg.stats_interval_s

        self._last_at = 0.0
        # Ready means subscribed (SUBACK), not merely connected: a message the
        # gateway forwards between CONNACK and SUBACK would otherwise not reach us.
        self._subscribed = threading.Event()
        self.wire = self.cfg.mqtt_client == "wire" and not self.cfg.mqtt_v5 and not settings.mqtt.tls_ca
        self.client: Any
        if self.wire:
            self.client = wire.WireClient(
                settings.mqtt, self.cfg.client_id, clean=False, on_connect=self._subscribe,
                on_disconnect=self._wire_disconnected, on_messages=self._on_messages,
                on_subscribed=self._wire_subscribed,
            )
        else:
            self.client = make_client(settings.mqtt, self.cfg.client_id, v5=self.cfg.mqtt_v5, clean=False,
                                      manual_ack=True)
            self.client.on_connect = self._on_connect
            self.client.on_disconnect = self._on_disconnect
            self.client.on_message = self._on_message
            self.client.on_subscribe = lambda *a: self._subscribed.set()

    # ------------------------------------------------------------ MQTT side (network thread)

    # Messages of an old connection stay buffered and are written: a broker that crashed
    # before persisting them cannot redeliver them, and one that did redeliver makes an
    # identical point (same series and device time), which InfluxDB overwrites. Only their
    # acks are skipped (packet ids of a dead connection): every message carries the
    # generation of the connection it came on.

    def _subscribe(self, session_present: bool) -> None:
        q = self.settings.mqtt.qos
        self.client.subscribe([(self.sub_norm, q), (self.sub_dead, q), (self.sub_status, q)])
        log.info("connected and subscribed", extra={"session_present": session_present})

    def _wire_subscribed(self, codes: list[int]) -> None:
        if 0x80 not in codes:  # a refused topic (the client logs it) would bring no data: stay not ready
            self._subscribed.set()

    def _wire_disconnected(self, why: str) -> None:
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT disconnected; reconnecting", extra={"error": why[:200]})

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        if getattr(rc, "is_failure", False):
            return
        if self.cfg.fast_mqtt:
            fastsock.install(client)
        with self._cond:
            self._gen += 1
            self._cond.notify_all()
        self._subscribe(bool(getattr(flags, "session_present", False)))

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        self._subscribed.clear()
        with self._cond:
            self._gen += 1  # keep the buffer; its acks are now void
        if not self._stopping.is_set():
            log.warning("MQTT disconnected; paho reconnects", extra={"rc": str(rc)})

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:  # noqa: ANN001
        self._append([_Msg(self._gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload))])

    def _on_messages(self, gen: int, msgs: wire.Messages) -> None:
        self._append([_Msg(gen, mid, qos, topic, payload) for topic, payload, mid, qos in msgs])

    def _append(self, ms: list[_Msg]) -> None:
        """Buffer what one read brought, in pieces that never take the buffer past max_buffered
        (the rest waits here, so the reader stops reading: the broker keeps the surplus)."""
        cap = self.cfg.max_buffered
        i = 0
        with self._cond:
            while i < len(ms):
                while len(self._buf) >= cap and not self._stopping.is_set():
                    self._cond.wait(0.5)
                take = ms[i:i + max(1, cap - len(self._buf))]
                i += len(take)
                now = time.monotonic()
                if not self._buf:
                    self._first_at = now
                self._last_at = now
                self._buf.extend(take)
                if len(self._buf) >= self._flush_at:
                    self._cond.notify()

    @property
    def _flush_at(self) -> int:
        return max(1, min(self.cfg.batch_size, self.cfg.max_unacked))

    # ------------------------------------------------------------ lifecycle

    def start(self, *, setup_schema: bool = True) -> "IngestService":
        self._schema_ok = not setup_schema
        self._ensure_schema()
        self._threads = [
            threading.Thread(target=self._convert_loop, name="ingest-convert", daemon=True),
            threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True),
        ]
        for t in self._threads:
            t.start()
        if self.wire:
            self.client.start()
        else:
            connect(self.client, self.settings.mqtt)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Make what was taken durable, then disconnect; anything unacked is redelivered later."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout_s)
        try:
            if self.wire:
                self.client.stop()
            else:
                self.client.disconnect()
                self.client.loop_stop()
        finally:
            self.influx.close()

    def _ensure_schema(self) -> None:
        """Database, RPs and CQs; retried from the writer loop while InfluxDB is unreachable."""
        if self._schema_ok or time.monotonic() < self._influx_down_until:
            return
        try:
            schema.setup(self.influx, self.settings, self.catalogue)
            self._schema_ok = True
        except InfluxError as exc:  # InfluxDB down: ingest spools meanwhile
            log.warning("could not set up database / retention policies / CQs yet", extra={"error": str(exc)})
            self._mark_down(exc)

    def ready(self) -> dict[str, bool]:
        return {"influxdb": self.influx.ping(), "mqtt": self.client.is_connected() and self._subscribed.is_set()}

    # ------------------------------------------------------------ writer thread

    def _take(self) -> list[_Msg]:
        with self._cond:
            while not self._stopping.is_set():
                n = len(self._buf)
                if n >= self._flush_at:
                    break
                if n:
                    now = time.monotonic()
                    left = self._first_at + self.cfg.batch_interval_s - now
                    quiet = self._last_at + self.cfg.idle_flush_s - now
                    if left <= 0 or quiet <= 0:
                        break
                    self._cond.wait(min(left, quiet))
                else:
                    self._cond.wait(self._idle_wait())
                    if not self._buf:
                        return []
            k = min(len(self._buf), self.cfg.batch_size)
            batch = [self._buf.popleft() for _ in range(k)]
            if self._buf:
                self._first_at = time.monotonic()
            self._cond.notify_all()
            return batch

    def _idle_wait(self) -> float:
        waits = [max(0.01, self._next_stats - time.monotonic())]
        if len(self.spool):
            waits.append(max(0.01, self._influx_down_until - time.monotonic()))
        return min(waits + [1.0])

    def _convert_loop(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch:
                    self._outq.put(self._convert(batch))
                if self._stopping.is_set():
                    break  # what arrives from now on stays unacked: the broker redelivers it
        except Exception:  # noqa: BLE001 - a dead converter must be loud; messages stay unacked
            log.exception("converter thread crashed")
        finally:
            self._outq.put(None)

    def _write_loop(self) -> None:
        """Batches are made durable and acknowledged in the order they were taken, but up to
        ``ingest.write_concurrency`` of their first write attempts run at once: one InfluxDB
        write request is parsed and applied on about one core, so a single request in flight
        leaves the database's other cores idle."""
        pending: collections.deque[tuple[Any, Future | None]] = collections.deque()
        try:
            while True:
                if len(pending) < self._write_slots:
                    try:
                        # with writes in flight, only glance at the queue before waiting on the oldest
                        item = self._outq.get(timeout=0.005 if pending else self._idle_wait())
                    except queue.Empty:
                        item = ()
                    if item is None:
                        break
                    if item:
                        self._ensure_schema()
                        pending.append((item, self._submit(item[1])))
                        continue
                if pending:
                    item, fut = pending.popleft()
                    self._finish(*item, first_try=fut)  # type: ignore[misc]  # untyped tuple: a typed Batch replaces it
                self._ensure_schema()
                self._replay_one()
                self._maybe_stats()
        except Exception:  # noqa: BLE001
            log.exception("writer thread crashed")
        finally:
            for item, fut in pending:  # stopping: finish what was taken (spooled if InfluxDB is down)
                try:
                    self._finish(*item, first_try=fut)  # type: ignore[misc]  # untyped tuple: a typed Batch replaces it
                except Exception:  # noqa: BLE001
                    log.exception("could not finish a batch while stopping; the broker redelivers it")
            self._pool.shutdown(wait=False)
            self._stopped.set()

    def _submit(self, lines: list[str]) -> Future | None:
        """Start the first write attempt of a batch on the pool (None: InfluxDB is known to be down)."""
        if not lines or time.monotonic() < self._influx_down_until:
            return None
        return self._pool.submit(write_keep_good, self.influx, lines)

    def _convert(self, batch: list[_Msg]) -> tuple:
        t0 = time.monotonic()
        now_ms = int(time.time() * 1000)
        conv = self.converter
        lines: list[str] = []
        owners: list[_Msg] = []
        ts_sum = 0
        n_tel = 0
        norm, dead = self._norm_prefix, self._dead_prefix
        r: Any
        for m in batch:
            if m.topic.startswith(norm):
                r = conv.telemetry(m.payload)
                if type(r) is tuple:
                    lines.append(r[0])
                    ts_sum += r[1]
                    n_tel += 1
                    owners.append(m)
                    continue
            elif m.topic.startswith(dead):
                r = conv.deadletter(m.payload, m.topic)
                if type(r) is str:
                    lines.append(r)
                    owners.append(m)
                    continue
                # a malformed dead letter is counted but never dead-lettered again (no loops)
                self._count_dead(r.reason.value)
                log.warning("malformed dead letter dropped", extra={"topic": m.topic, "detail": r.detail})
                continue
            else:
                r = conv.device_status(m.payload, now_ms)
                if type(r) is str:
                    lines.append(r)
                    owners.append(m)
                    continue
            self._deadletter(r, m.topic, m.payload, now_ms)
        self.metrics.received.inc(len(batch))
        self._stats["received"] += len(batch)
        return batch, lines, owners, n_tel, ts_sum, t0, now_ms

    def _finish(self, batch: list[_Msg], lines: list[str], owners: list[_Msg], n_tel: int, ts_sum: int,
                t0: float, now_ms: int, first_try: Future | None = None) -> None:
        if not self._make_durable(lines, owners, now_ms, first_try):
            return  # stopping while InfluxDB is down and the spool is full: the broker redelivers them
        self._ack(batch)
        dt = time.monotonic() - t0
        self.metrics.batch_latency.observe(dt)
        self._lat_sum += dt
        self._lat_n += 1
        if n_tel:
            lag = max(0.0, time.time() - ts_sum / n_tel / 1000)
            self.metrics.lag.observe(lag)
            self._lag_sum += lag * n_tel
            self._lag_n += n_tel
        self.metrics.buffered.set(len(self._buf))

    def _make_durable(self, lines: list[str], owners: list[_Msg] | None, now_ms: int,
                      first_try: Future | None = None) -> bool:
        """Write (or spool) the lines; dead-letter refused ones. False only if giving up on stop.

        ``first_try``: a write of these lines already started on the pool; its outcome is the
        first attempt."""
        if not lines:
            return True
        holding = False
        while True:
            if first_try is not None or time.monotonic() >= self._influx_down_until:
                try:
                    if first_try is not None:
                        fut, first_try = first_try, None
                        bad = fut.result()
                    else:
                        bad = write_keep_good(self.influx, lines)
                except InfluxError as exc:
                    self._mark_down(exc)
                else:
                    self._mark_up()
                    for i, err in bad:
                        o = owners[i] if owners else None
                        topic = o.topic if o else "spool"
                        payload = o.payload if o else lines[i].encode()
                        self._deadletter(Rejection(Reason.WRITE_REJECTED, err[:300]), topic, payload, now_ms)
                    ok = len(lines) - len(bad)
                    if holding:
                        self.metrics.spool_full.set(0)
                        log.warning("spool full episode over: InfluxDB accepts writes again")
                    self.metrics.written.inc(ok)
                    self._stats["written"] += ok
                    return True
            # a JSON array, not newline-joined text: string fields may hold raw newlines
            body = orjson.dumps(lines)
            if self.spool.has_room(len(body)):
                self.spool.put(body)
                if holding:
                    self.metrics.spool_full.set(0)
                self.metrics.spooled.inc(len(lines))
                self._stats["spooled"] += len(lines)
                self.metrics.spool_bytes.set(self.spool.nbytes)
                return True
            # spool full: hold the messages unacked (the broker keeps the rest) and retry.
            # Nothing is lost yet, but an operator must know: say it once per episode.
            if not holding:
                holding = True
                self.metrics.spool_full.set(1)
                self.metrics.spool_full_events.inc()
                log.error("spool full: holding messages unacknowledged at the broker until InfluxDB returns",
                          extra={"spool_bytes": self.spool.nbytes, "spool_max_bytes": self.spool.max_bytes,
                                 "held_lines": len(lines)})
            if self._stopping.is_set():
                return False
            time.sleep(min(1.0, max(0.05, self._influx_down_until - time.monotonic())))

    def _mark_down(self, exc: InfluxError) -> None:
        if exc.status == 404:  # "database not found": dropped or never created; set it up again
            self._schema_ok = False
        self._influx_down_until = time.monotonic() + self._backoff
        log.warning("InfluxDB unavailable; spooling", extra={"status": exc.status, "error": exc.message[:200],
                                                             "retry_in_s": self._backoff})
        self._backoff = min(self._backoff * 2, 5.0)

    def _mark_up(self) -> None:
        self._influx_down_until = 0.0
        self._backoff = 0.5

    def _replay_one(self) -> None:
        if time.monotonic() < self._influx_down_until:
            return
        item = self.spool.oldest()
        if item is None:
            return
        path, body = item
        try:
            lines = orjson.loads(body)
        except orjson.JSONDecodeError:  # cannot happen for files we fsynced; keep it aside, never loop on it
            log.error("unreadable spool file set aside", extra={"path": str(path)})
            path.rename(path.with_suffix(".bad"))
            return
        try:
            bad = write_keep_good(self.influx, lines)
        except InfluxError as exc:
            self._mark_down(exc)
            return
        self._mark_up()
        now_ms = int(time.time() * 1000)
        for i, err in bad:
            self._deadletter(Rejection(Reason.WRITE_REJECTED, err[:300]), "spool", lines[i].encode(), now_ms)
        self.spool.remove(path)
        ok = len(lines) - len(bad)
        self.metrics.written.inc(ok)
        self.metrics.replayed.inc(ok)
        self._stats["written"] += ok
        self.metrics.spool_bytes.set(self.spool.nbytes)

    def _ack(self, batch: list[_Msg]) -> None:
        if self.wire:  # QoS is at most 1 there; the client drops acks of an older connection
            gen = self.client.generation
            self.client.ack(gen, [m.mid for m in batch if m.qos and m.gen == gen])
            return
        gen = self._gen
        mids = [m.mid for m in batch if m.qos == 1 and m.gen == gen]
        if self.cfg.fast_mqtt:
            fastsock.ack_many(self.client, mids)
        else:
            for mid in mids:
                self.client.ack(mid, 1)
        for m in batch:
            if m.qos == 2 and m.gen == gen:
                self.client.ack(m.mid, 2)

    def _count_dead(self, reason: str) -> None:
        self.metrics.deadlettered.labels(reason).inc()
        self._stats["deadlettered"] += 1

    def _deadletter(self, rej: Rejection, topic: str, payload: bytes, now_ms: int) -> None:
        self._count_dead(rej.reason.value)
        log.warning("dead-lettered", extra={"reason": rej.reason.value, "detail": rej.detail[:200], "topic": topic})
        body = contract.deadletter_payload(STAGE, rej, topic, payload, now_ms)
        self.client.publish(contract.deadletter_topic(self.root, STAGE, rej.reason), body, qos=1)

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + self.cfg.stats_interval_s
        s = self._stats
        fields = dict(
            received=s["received"], written=s["written"], spooled=s["spooled"], deadlettered=s["deadlettered"],
            lag_ms=(self._lag_sum / self._lag_n * 1000) if self._lag_n else 0.0,
            batch_latency_ms=(self._lat_sum / self._lat_n * 1000) if self._lat_n else 0.0,
            spool_bytes=self.spool.nbytes,
        )
        self._lag_sum = self._lat_sum = 0.0
        self._lag_n = self._lat_n = 0
        tags = {"service": "ingest", "instance": self.cfg.client_id}
        line = format_line("kc_pipeline", tags, fields, int(time.time() * 1000) * NS_PER_MS) or ""
        log.info("ingest stats", extra={k: v for k, v in fields.items()})
        if time.monotonic() >= self._influx_down_until:
            try:
                self.influx.write(line, precision="ns")
            except InfluxError as exc:
                log.warning("could not write kc_pipeline stats", extra={"error": exc.message[:200]})
