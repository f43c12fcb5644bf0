"""Ingest's Prometheus metrics and the plain counters behind its ``kc_pipeline`` stats points."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


@dataclass
class Counts:
    """Totals since start (the ``kc_pipeline`` point carries them; Prometheus has its own)."""

    received: int = 0
    written: int = 0
    spooled: int = 0
    deadlettered: int = 0


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.counts = Counts()
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

    def add_written(self, n: int) -> None:
        self.written.inc(n)
        self.counts.written += n

    def add_spooled(self, n: int) -> None:
        self.spooled.inc(n)
        self.counts.spooled += n

    def add_received(self, n: int) -> None:
        self.received.inc(n)
        self.counts.received += n

    def add_deadlettered(self, reason: str) -> None:
        self.deadlettered.labels(reason).inc()
        self.counts.deadlettered += 1
