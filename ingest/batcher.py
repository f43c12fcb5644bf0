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

from kotacerdas.contract import Rejection

from ingest.convert import Converter
from ingest.source import Msg

__all__ = ["Batch", "Batcher", "Routes", "convert_batch"]


class Batcher:
    def __init__(self, *, max_buffered: int, batch_size: int, max_unacked: int, batch_interval_s: float,
                 idle_flush_s: float):
        self.max_buffered = max_buffered
        self.batch_size = batch_size
        self.batch_interval_s = batch_interval_s
        self.idle_flush_s = idle_flush_s
        self.flush_at = max(1, min(batch_size, max_unacked))
        self._buf: collections.deque[Msg] = collections.deque()
        self._cond = threading.Condition()
        self._first_at = 0.0
        self._last_at = 0.0
        self._stopping = threading.Event()

    def __len__(self) -> int:
        return len(self._buf)

    def put(self, ms: list[Msg]) -> None:
        """Buffer what one read brought, in pieces that never take the buffer past max_buffered
        (the rest waits here, so the reader stops reading: the broker keeps the surplus)."""
        cap = self.max_buffered
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
                if len(self._buf) >= self.flush_at:
                    self._cond.notify()

    def take(self, idle_wait_s: float) -> list[Msg]:
        """The next batch; ``[]`` after ``idle_wait_s`` with nothing buffered (so the caller can do
        periodic work). Once stopping, returns what is buffered without waiting."""
        with self._cond:
            while not self._stopping.is_set():
                n = len(self._buf)
                if n >= self.flush_at:
                    break
                if n:
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
            k = min(len(self._buf), self.batch_size)
            batch = [self._buf.popleft() for _ in range(k)]
            if self._buf:
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
    owners: list[Msg] = field(default_factory=list)
    # refused by the converter: dead-lettered with the reason
    rejected: list[tuple[Rejection, Msg]] = field(default_factory=list)
    # malformed dead letters: counted, never dead-lettered again (no loops)
    dropped: list[tuple[Rejection, Msg]] = field(default_factory=list)
    n_telemetry: int = 0
    ts_sum_ms: int = 0  # sum of the telemetry's device timestamps (mean lag = now - sum / n)
    started: float = 0.0  # time.monotonic() when conversion began (batch latency)
    now_ms: int = 0


def convert_batch(msgs: list[Msg], conv: Converter, routes: Routes, *, now_ms: int, started: float) -> Batch:
    """Pure: messages -> line protocol, owners and rejections (no I/O, no clocks read)."""
    b = Batch(msgs, started=started, now_ms=now_ms)
    lines, owners = b.lines, b.owners
    norm, dead = routes.normalized, routes.deadletter
    r: Any
    for m in msgs:
        if m.topic.startswith(norm):
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
