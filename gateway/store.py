"""The gateway's durable state: the outbound queue and the dedup memory, in one SQLite file.

Both live in the same database so that "this reading was seen" and "its normalised
message is queued" commit in ONE transaction: after a crash (kill -9 included) a
reading is either queued and remembered, or neither, so the device's redelivery is
processed exactly once.

Durability: WAL with ``synchronous=NORMAL`` survives a process crash (the WAL is in
the OS page cache); ``durable_fsync=True`` (``synchronous=FULL``) also survives power loss.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0
);
-- a reading is identified by (device, seq, ts): a device that reboots and restarts seq
-- at 0 sends new timestamps, so its new readings are not mistaken for old ones.
CREATE TABLE IF NOT EXISTS seen (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (device, seq, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ts ON seen (ts);
"""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Queued:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Store:
    def __init__(self, path: Path | str, *, durable_fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable_fsync else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._depth = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def depth(self) -> int:
        """Messages waiting for the upstream broker's PUBACK."""
        return self._depth

    def transaction(self) -> "_Txn":
        """Decide per reading inside one transaction (seen? then queue this or that)."""
        return _Txn(self)

    def enqueue(self, messages: Iterable[Outgoing]) -> None:
        with self.transaction() as t:
            for m in messages:
                t.queue(m)

    def peek(self, after_id: int = 0, limit: int = 500) -> list[Queued]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()
        return [Queued(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
            # no count(*) here: on a backlog of millions that scan per window would make draining quadratic
            self._depth -= max(cur.rowcount, 0)

    def forget_before(self, ts_ms: int) -> int:
        """Drop dedup keys older than the contract's max age: older readings are refused as stale anyway."""
        with self._lock:
            cur = self._db.execute("DELETE FROM seen WHERE ts < ?", (ts_ms,))
            return cur.rowcount

    def seen_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])


class _Txn:
    """``with store.transaction() as t: if t.first_time(key): t.queue(msg)``: one commit for a batch."""

    def __init__(self, store: Store):
        self.s = store
        self._n = 0

    def __enter__(self) -> "_Txn":
        self.s._lock.acquire()
        self._cur = self.s._db.cursor()
        self._cur.execute("BEGIN IMMEDIATE")
        return self

    def first_time(self, device: str, seq: int, ts: int) -> bool:
        self._cur.execute("INSERT OR IGNORE INTO seen (device, seq, ts) VALUES (?,?,?)", (device, seq, ts))
        return self._cur.rowcount == 1

    def queue(self, m: Outgoing) -> None:
        self._cur.execute(
            "INSERT INTO outbox (topic, payload, qos, retain) VALUES (?,?,?,?)", (m.topic, m.payload, m.qos, int(m.retain))
        )
        self._n += 1

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            if exc_type is None:
                self._cur.execute("COMMIT")
                self.s._depth += self._n
            else:
                self._cur.execute("ROLLBACK")
        finally:
            self.s._lock.release()
