"""Between the message source and the writer: a bounded buffer cut into batches, and the
pure conversion of a batch into line protocol (a typed :class:`Batch`).

The buffer is ingest's backpressure: :meth:`Batcher.put` waits while ``max_buffered``
messages are held, so the source stops reading and TCP and the broker's queue keep the
surplus instead of our memory. :meth:`Batcher.take` cuts a batch by size, by age, when
the stream pauses, or before the broker's in-flight window (``max_unacked``) fills.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from kotacerdas.contract import NORMALIZED_BATCH, Rejection, normalized_batch_count

from ingest.convert import Converter
from ingest.source import Msg

__all__ = ["Batch", "Batcher", "Part", "Routes", "batch_reading_payload", "convert_batch", "weight"]

BATCH_SUFFIX = "/" + NORMALIZED_BATCH


def weight(m: Msg) -> int:
    """Readings a message carries: a gateway batch declares its count in its head; anything else is one."""
    return normalized_batch_count(m.payload) if m.topic.endswith(BATCH_SUFFIX) else 1


class Batcher:
    """Sizes count readings (:func:`weight`), not messages: a gateway batch of 500 readings fills
    a batch as 500 single messages would, so InfluxDB requests and memory stay the same size."""

    def __init__(self, *, max_buffered: int, batch_size: int, max_unacked: int, batch_interval_s: float,
                 idle_flush_s: float):
        self.max_buffered = max_buffered
        self.batch_size = batch_size
        self.batch_interval_s = batch_interval_s
        self.idle_flush_s = idle_flush_s
        self.flush_at = max(1, min(batch_size, max_unacked))
        self._buf: collections.deque[tuple[Msg, int]] = collections.deque()
        self._weight = 0  # readings in _buf
        self._cond = threading.Condition()
        self._first_at = 0.0
        self._last_at = 0.0
        self._stopping = threading.Event()

    def __len__(self) -> int:
        """Readings held."""
        return self._weight

    def put(self, ms: list[Msg]) -> None:
        """Buffer what one read brought, in pieces that never take the buffer past max_buffered
        readings (the rest waits here, so the reader stops reading: the broker keeps the surplus);
        a single message heavier than that is taken alone once the buffer is empty."""
        cap = self.max_buffered
        items = [(m, weight(m)) for m in ms]
        i = 0
        with self._cond:
            while i < len(items):
                while self._weight >= cap and not self._stopping.is_set():
                    self._cond.wait(0.5)
                room = cap - self._weight
                j, w = i, 0
                while j < len(items) and (w + items[j][1] <= room or (j == i and self._weight == 0)
                                          or self._stopping.is_set()):
                    w += items[j][1]
                    j += 1
                if j == i:  # the next one does not fit yet: wait for a take
                    self._cond.wait(0.5)
                    continue
                now = time.monotonic()
                if not self._buf:
                    self._first_at = now
                self._last_at = now
                self._buf.extend(items[i:j])
                self._weight += w
                i = j
                if self._weight >= self.flush_at:
                    self._cond.notify()

    def take(self, idle_wait_s: float) -> list[Msg]:
        """The next batch (at most ``batch_size`` readings, at least one message); ``[]`` after
        ``idle_wait_s`` with nothing buffered (so the caller can do periodic work). Once stopping,
        returns what is buffered without waiting."""
        with self._cond:
            while not self._stopping.is_set():
                n = self._weight
                if n >= self.flush_at:
                    break
                if self._buf:
                    now = time.monotonic()
                    left = self._first_at + self.batch_interval_s - now
                    quiet = self._last_at + self.idle_flush_s - now
                    if left <= 0 or quiet <= 0:
                        break
                    self._cond.wait(min(left, quiet))
                else:
                    self._cond.wait(idle_wait_s)
                    if not self._buf:
                        return []
            batch: list[Msg] = []
            w = 0
            buf = self._buf
            while buf and (not batch or w + buf[0][1] <= self.batch_size):
                m, mw = buf.popleft()
                batch.append(m)
                w += mw
            self._weight -= w
            if buf:
                self._first_at = time.monotonic()
            self._cond.notify_all()
            return batch

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


@dataclass(frozen=True, slots=True)
class Routes:
    """Topic prefixes that say how a message converts (everything else is a device status)."""

    normalized: str
    deadletter: str


@dataclass(slots=True)
class Batch:
    """One batch on its way from the converter to the writer.

    ``lines[i]`` came from ``owners[i]``; ``msgs`` is everything taken (all acknowledged once
    the lines are durable, the refused ones included: they are dead-lettered instead)."""

    msgs: list[Msg]
    lines: list[str] = field(default_factory=list)
    owners: list[Msg | Part] = field(default_factory=list)
    # refused by the converter: dead-lettered with the reason
    rejected: list[tuple[Rejection, Msg | Part]] = field(default_factory=list)
    # malformed dead letters: counted, never dead-lettered again (no loops)
    dropped: list[tuple[Rejection, Msg]] = field(default_factory=list)
    n_telemetry: int = 0
    ts_sum_ms: int = 0  # sum of the telemetry's device timestamps (mean lag = now - sum / n)
    started: float = 0.0  # time.monotonic() when conversion began (batch latency)
    now_ms: int = 0


class Part:
    """A reading inside a gateway batch message, as an owner of its line: its own topic and
    payload (built only if InfluxDB refuses the line and it is dead-lettered)."""

    __slots__ = ("msg", "index")

    def __init__(self, msg: Msg, index: int):
        self.msg = msg
        self.index = index

    @property
    def topic(self) -> str:
        return self.msg.topic

    @property
    def payload(self) -> bytes:
        return batch_reading_payload(self.msg.payload, self.index)


def batch_reading_payload(batch_payload: bytes, index: int) -> bytes:
    """The ``index``-th reading of a gateway batch message, as a message of its own: what a dead
    letter of that one reading carries (the batch decoded again: only on the rare refusal path)."""
    return orjson.dumps(orjson.loads(batch_payload)["readings"][index])


def _add_batch(b: Batch, m: Msg, results: list) -> None:
    lines, owners = b.lines, b.owners
    for i, r in enumerate(results):
        if type(r) is tuple:
            lines.append(r[0])
            b.ts_sum_ms += r[1]
            b.n_telemetry += 1
            owners.append(Part(m, i))
        else:
            b.rejected.append((r, Part(m, i)))


def convert_batch(msgs: list[Msg], conv: Converter, routes: Routes, *, now_ms: int, started: float) -> Batch:
    """Pure: messages -> line protocol, owners and rejections (no I/O, no clocks read)."""
    b = Batch(msgs, started=started, now_ms=now_ms)
    lines, owners = b.lines, b.owners
    norm, dead = routes.normalized, routes.deadletter
    r: Any
    for m in msgs:
        if m.topic.startswith(norm):
            if m.topic.endswith(BATCH_SUFFIX):
                r = conv.telemetry_batch(m.topic, m.payload)
                if type(r) is list:
                    _add_batch(b, m, r)
                    continue
                b.rejected.append((r, m))
                continue
            r = conv.telemetry(m.payload)
            if type(r) is tuple:
                lines.append(r[0])
                b.ts_sum_ms += r[1]
                b.n_telemetry += 1
                owners.append(m)
                continue
        elif m.topic.startswith(dead):
            r = conv.deadletter(m.payload, m.topic)
            if type(r) is str:
                lines.append(r)
                owners.append(m)
                continue
            b.dropped.append((r, m))
            continue
        else:
            r = conv.device_status(m.payload, now_ms)
            if type(r) is str:
                lines.append(r)
                owners.append(m)
                continue
        b.rejected.append((r, m))
    return b
