"""Making lines durable: InfluxDB when it answers, the fsynced on-disk spool when it does not,
and replay of the spool once it answers again.

"Durable" is what allows an ack: a line is durable once InfluxDB stored it or refused it
(refused lines are dead-lettered with InfluxDB's reason; the rest of the batch is kept),
or once it is fsynced in the spool. When InfluxDB is down and the spool is full, nothing
is durable: :meth:`DurableWriter.make_durable` holds the batch (its messages stay unacked
at the broker) and retries, saying so once per episode.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

import orjson

from kotacerdas.contract import Reason, Rejection
from kotacerdas.errors import Disposition
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.runtime import Backoff

from ingest.metrics import Metrics
from ingest.spool import Spool
from ingest.writer import write_keep_good

log = logging.getLogger("ingest")

__all__ = ["DurableWriter", "OnRefused"]

# (rejection, topic, payload, now_ms): a line InfluxDB refused, to be dead-lettered
OnRefused = Callable[[Rejection, str, bytes, int], None]


class Owner(Protocol):
    """Where a line came from (a message, or a reading inside a batch message): what its dead letter carries."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class DurableWriter:
    def __init__(self, influx: InfluxClient, spool: Spool, metrics: Metrics, *, on_refused: OnRefused,
                 ensure_schema: Callable[[], object], concurrency: int = 1, backoff: Backoff | None = None):
        self.influx = influx
        self.spool = spool
        self.metrics = metrics
        self.on_refused = on_refused
        self._setup_schema = ensure_schema
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ingest-write")
        self.stopping = threading.Event()
        self.down_until = 0.0  # time.monotonic() before which InfluxDB is not tried again
        self.backoff = backoff or Backoff(0.5, 5.0)
        self.schema_ok = False
        self.metrics.spool_bytes.set(self.spool.nbytes)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def influx_down(self) -> bool:
        return time.monotonic() < self.down_until

    def ensure_schema(self) -> None:
        """Database, RPs and CQs; retried (from the writer loop) while InfluxDB is unreachable."""
        if self.schema_ok or self.influx_down():
            return
        try:
            self._setup_schema()
            self.schema_ok = True
        except InfluxError as exc:  # InfluxDB down: ingest spools meanwhile
            log.warning("could not set up database / retention policies / CQs yet", extra={"error": str(exc)})
            self._mark_down(exc)

    def submit(self, lines: list[str]) -> Future | None:
        """Start a first write attempt on the pool (None: nothing to write, or InfluxDB is known down)."""
        if not lines or self.influx_down():
            return None
        return self._pool.submit(write_keep_good, self.influx, lines)

    def make_durable(self, lines: list[str], owners: Sequence[Owner] | None, now_ms: int,
                     first_try: Future | None = None) -> bool:
        """Write (or spool) the lines; dead-letter refused ones. False only if giving up on stop.

        ``first_try``: a write of these lines already started by :meth:`submit`; its outcome is
        the first attempt."""
        if not lines:
            return True
        holding = False
        while True:
            if first_try is not None or not self.influx_down():
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
                        self.on_refused(Rejection(Reason.WRITE_REJECTED, err[:300]), o.topic if o else "spool",
                                        o.payload if o else lines[i].encode(), now_ms)
                    if holding:
                        self.metrics.spool_full.set(0)
                        log.warning("spool full episode over: InfluxDB accepts writes again")
                    self.metrics.add_written(len(lines) - len(bad))
                    return True
            # a JSON array, not newline-joined text: string fields may hold raw newlines
            body = orjson.dumps(lines)
            if self.spool.has_room(len(body)):
                self.spool.put(body)
                if holding:
                    self.metrics.spool_full.set(0)
                self.metrics.add_spooled(len(lines))
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
            if self.stopping.is_set():
                return False
            time.sleep(min(1.0, max(0.05, self.down_until - time.monotonic())))

    def replay_one(self) -> None:
        """Write the spool's oldest batch if InfluxDB is believed up (deleted only once stored)."""
        if self.influx_down():
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
            self.on_refused(Rejection(Reason.WRITE_REJECTED, err[:300]), "spool", lines[i].encode(), now_ms)
        self.spool.remove(path)
        ok = len(lines) - len(bad)
        self.metrics.add_written(ok)
        self.metrics.replayed.inc(ok)
        self.metrics.spool_bytes.set(self.spool.nbytes)

    def _mark_down(self, exc: InfluxError) -> None:
        if exc.status == 404:  # "database not found": dropped or never created; set it up again
            self.schema_ok = False
        wait = self.backoff.delay()
        self.down_until = time.monotonic() + wait
        extra = {"status": exc.status, "error": exc.message[:200], "retry_in_s": round(wait, 3)}
        if exc.disposition is Disposition.FATAL:  # credentials or permissions: only an operator can fix it
            log.error("InfluxDB refuses ingest's credentials; spooling until it accepts them", extra=extra)
        else:
            log.warning("InfluxDB unavailable; spooling", extra=extra)

    def _mark_up(self) -> None:
        self.down_until = 0.0
        self.backoff.reset()
