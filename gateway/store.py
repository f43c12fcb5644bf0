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

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0
);
-- a reading is identified by (device, ts), as InfluxDB identifies a point by its series and
-- time (docs/wire-contract.md, "Reading identity"); seq is kept to tell a redelivery (same
-- seq) from a conflicting second reading at the same time (another seq).
CREATE TABLE IF NOT EXISTS reading_ids (
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (device, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_ids_ts ON reading_ids (ts);
-- retained copies (topic, payload digest) already handled: the broker replays them on every
-- (re)subscription, and they must not be stored or dead-lettered again (docs/gateway.md)
CREATE TABLE IF NOT EXISTS retained_seen (
    topic TEXT PRIMARY KEY,
    digest BLOB NOT NULL
) WITHOUT ROWID;
"""

# before 2026-12: identity (device, seq, ts); kept rows carry over with the new identity
_MIGRATE = """
INSERT OR IGNORE INTO reading_ids (device, ts, seq) SELECT device, ts, seq FROM seen;
DROP TABLE seen;
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
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='seen'").fetchone():
            self._db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE} COMMIT;")
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

    def peek_rows(self, limit: int = 500, max_bytes: int = 0) -> list[tuple[int, str, bytes, int, int]]:
        """The oldest rows as plain (id, topic, payload, qos, retain) tuples: the forwarder's hot path.
        ``max_bytes`` (0: no bound) stops after the row that reaches that many payload bytes, so a
        window of batch messages stays a bounded write; rows are read lazily, the rest not at all."""
        with self._lock:
            cur = self._db.execute("SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT ?", (limit,))
            if not max_bytes:
                return cur.fetchall()
            rows, size = [], 0
            for row in cur:
                rows.append(row)
                size += len(row[2])
                if size >= max_bytes:
                    break
            cur.close()
            return rows

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

    def delete_through(self, first_id: int, last_id: int) -> None:
        """Delete a forwarded window: the rows ``peek`` returned are exactly the ids in
        [first_id, last_id] (AUTOINCREMENT ids only grow, and peek reads from the lowest)."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first_id, last_id))
            self._depth -= max(cur.rowcount, 0)

    def forget_before(self, ts_ms: int) -> int:
        """Drop dedup keys older than the contract's max age: older readings are refused as stale anyway."""
        with self._lock:
            cur = self._db.execute("DELETE FROM reading_ids WHERE ts < ?", (ts_ms,))
            return cur.rowcount

    def seen_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM reading_ids").fetchone()[0])


class _Txn:
    """``with store.transaction() as t: new, old = t.claim(ids); t.queue_many(msgs)``: one commit a batch."""

    def __init__(self, store: Store):
        self.s = store
        self._n = 0

    def __enter__(self) -> "_Txn":
        self.s._lock.acquire()
        self._cur = self.s._db.cursor()
        self._cur.execute("BEGIN IMMEDIATE")
        return self

    def claim(self, ids: list[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
        """Remember readings (device, ts, seq) whose (device, ts) is new; return, for those already
        known, the seq stored with them. ``ids`` holds distinct (device, ts) pairs.

        The common batch is all new: one ``executemany`` whose change count proves it. Only a
        batch with a repeat (a redelivery after a crash, a replayed backlog) is looked up."""
        if not ids:
            return {}
        db = self.s._db
        cur = self._cur
        cur.execute("SAVEPOINT claim")
        before = db.total_changes
        cur.executemany("INSERT OR IGNORE INTO reading_ids (device, ts, seq) VALUES (?,?,?)", ids)
        if db.total_changes - before == len(ids):
            cur.execute("RELEASE claim")
            return {}
        cur.execute("ROLLBACK TO claim")
        cur.execute("RELEASE claim")
        known = {(d, t): q for d, t, q in cur.execute(
            "SELECT r.device, r.ts, r.seq FROM json_each(?) j JOIN reading_ids r"
            " ON r.device = json_extract(j.value, '$[0]') AND r.ts = json_extract(j.value, '$[1]')",
            (orjson.dumps([(d, t) for d, t, _ in ids]),))}
        cur.executemany("INSERT INTO reading_ids (device, ts, seq) VALUES (?,?,?)",
                        [i for i in ids if (i[0], i[1]) not in known])
        return known

    def first_time(self, device: str, seq: int, ts: int) -> bool:
        """One reading: True if its identity (device, ts) was not seen before (and now is)."""
        return not self.claim([(device, ts, seq)])

    def retained_known(self, items: list[tuple[str, bytes]]) -> set[tuple[str, bytes]]:
        """Of these (topic, digest) retained copies, those handled before; remember the others."""
        if not items:
            return set()
        wanted = set(items)
        known = {(t, d) for t, d in self._cur.execute(
            "SELECT r.topic, r.digest FROM json_each(?) j JOIN retained_seen r ON r.topic = j.value",
            (orjson.dumps([t for t, _ in items]),)) if (t, d) in wanted}
        self._cur.executemany("INSERT OR REPLACE INTO retained_seen (topic, digest) VALUES (?,?)",
                              [x for x in items if x not in known])
        return known

    def queue(self, m: Outgoing) -> None:
        self.queue_many([m])

    def queue_many(self, msgs: list[Outgoing]) -> None:
        self.queue_rows([(m.topic, m.payload, m.qos, int(m.retain)) for m in msgs])

    def queue_rows(self, rows: list[tuple[str, bytes, int, int]]) -> None:
        """(topic, payload, qos, retain) rows: the hot path skips building Outgoing objects."""
        if not rows:
            return
        self._cur.executemany("INSERT INTO outbox (topic, payload, qos, retain) VALUES (?,?,?,?)", rows)
        self._n += len(rows)

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            if exc_type is None:
                self._cur.execute("COMMIT")
                self.s._depth += self._n
            else:
                self._cur.execute("ROLLBACK")
        finally:
            self.s._lock.release()
