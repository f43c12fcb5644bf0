"""Durable delivery queue for alert e-mails and webhooks: retried with backoff, across restarts.

Every (alert transition, subscriber) pair becomes one row in SQLite before anything is
sent; a row leaves the queue only when delivered, or when a webhook refuses it for good
(4xx but 429), or after ``max_attempts``. A service that restarts finds the rows its
predecessor could not deliver and carries on with them.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from analytics.alerts import Alert, _CTX
from kotacerdas.backoff import full_jitter


@dataclass(frozen=True)
class Item:
    id: int
    alert: Alert
    channel: str
    target: str
    attempts: int
    next_ms: int


class Outbox:
    def __init__(self, path: Path, *, backoff_s: float = 30.0, max_backoff_s: float = 3600.0, max_attempts: int = 12,
                 rng: random.Random | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self.backoff_s, self.max_backoff_s, self.max_attempts = backoff_s, max_backoff_s, max_attempts
        self._rng = rng or random.Random()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, transition TEXT, alert TEXT,"
            " channel TEXT, target TEXT, attempts INTEGER, next_ms INTEGER, status TEXT, last_error TEXT,"
            " UNIQUE(transition, channel, target))")

    def close(self) -> None:
        self._db.close()

    def add(self, alert: Alert, channel: str, target: str, now_ms: int) -> None:
        """Queue one delivery (idempotent: the same transition to the same target is queued once)."""
        doc = json.dumps(alert.to_json(), sort_keys=True)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO outbox (transition, alert, channel, target, attempts, next_ms,"
                             " status) VALUES (?,?,?,?,0,?,'pending')",
                             (f"{alert.alert_id}:{alert.state}:{alert.updated_ms}", doc, channel, target, int(now_ms)))

    def due(self, now_ms: int, limit: int = 100) -> list[Item]:
        with self._lock:
            rows = self._db.execute("SELECT id, alert, channel, target, attempts, next_ms FROM outbox"
                                    " WHERE status='pending' AND next_ms <= ? ORDER BY id LIMIT ?",
                                    (int(now_ms), limit)).fetchall()
        return [Item(r[0], _alert(json.loads(r[1])), r[2], r[3], r[4], r[5]) for r in rows]

    def next_due_ms(self) -> int | None:
        with self._lock:
            r = self._db.execute("SELECT min(next_ms) FROM outbox WHERE status='pending'").fetchone()
        return r[0] if r and r[0] is not None else None

    def done(self, item: Item) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET status='sent', attempts=attempts+1 WHERE id=?", (item.id,))

    def failed(self, item: Item, now_ms: int, error: str, *, permanent: bool = False) -> bool:
        """Reschedule with the platform's full-jitter backoff (the attempt count is the row's, so it
        survives a restart); returns True if the item was given up."""
        attempts = item.attempts + 1
        give_up = permanent or attempts >= self.max_attempts
        delay = full_jitter(attempts - 1, self.backoff_s, self.max_backoff_s, self._rng)
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts=?, next_ms=?, status=?, last_error=? WHERE id=?",
                             (attempts, int(now_ms + delay * 1000), "dead" if give_up else "pending", error[:300],
                              item.id))
        return give_up

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())


def _alert(d: dict) -> Alert:
    d = dict(d)
    d.pop("observed_at", None)
    base = {k: d[k] for k in ("alert_id", "rule", "device", "department", "severity", "state", "value", "opened_ms",
                              "updated_ms", "resolved_ms", "acknowledged", "ack_by", "text_id", "text_en")}
    return Alert(**base, **{k: d[k] for k in _CTX if k in d})
