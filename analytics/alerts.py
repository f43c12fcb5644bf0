"""Alerts: hysteresis, deduplication, lifecycle (open -> update -> resolved), bilingual text.

The engine is fed one :class:`Condition` per (rule, device) each pass. An alert
opens when the value crosses the rule's ``open_at`` threshold, is updated only
when its severity changes (no repeats of the same news), and resolves only once
the value is back past ``resolve_at`` (the hysteresis band keeps a value that
hovers around a threshold from flapping). State lives in SQLite so a restarted
service neither re-opens nor forgets alerts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from kotacerdas.standards import BIN_FILL_DUE, BIN_FILL_EMPTIED, ISPU_BANDS

# ISPU index values where Tidak Sehat and Sangat Tidak Sehat begin (P.14/2020, kotacerdas/standards.py)
_ISPU_UNHEALTHY = float(ISPU_BANDS[2].lower or 0.0)
_ISPU_VERY_UNHEALTHY = float(ISPU_BANDS[3].lower or 0.0)

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Rule:
    name: str
    department: str
    open_at: float  # value >= open_at opens (for direction "above")
    resolve_at: float  # value < resolve_at resolves; open_at > resolve_at
    severities: tuple[tuple[float, str], ...]  # ascending (threshold, severity): highest reached wins
    text_id: str  # str.format template: {device} {value} {severity} {detail}
    text_en: str


@dataclass(frozen=True)
class Condition:
    rule: Rule
    device: str
    value: float  # NaN = no data this pass: the alert keeps its state
    ts_ms: int
    detail_id: str = ""
    detail_en: str = ""


@dataclass
class Alert:
    alert_id: str
    rule: str
    device: str
    department: str
    severity: str
    state: str  # open | update | resolved (the last transition)
    value: float
    opened_ms: int
    updated_ms: int
    resolved_ms: int | None
    acknowledged: bool
    ack_by: str | None
    text_id: str
    text_en: str

    def to_json(self) -> dict:
        return asdict(self)


def severity_of(rule: Rule, value: float) -> str:
    sev = rule.severities[0][1]
    for thr, s in rule.severities:
        if value >= thr:
            sev = s
    return sev


class AlertStore:
    """SQLite-backed alert state (one row per alert; active = not resolved)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts (alert_id TEXT PRIMARY KEY, rule TEXT, device TEXT, department TEXT,"
            " severity TEXT, state TEXT, value REAL, opened_ms INTEGER, updated_ms INTEGER, resolved_ms INTEGER,"
            " acknowledged INTEGER, ack_by TEXT, text_id TEXT, text_en TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS active ON alerts(rule, device, state)")

    def close(self) -> None:
        self._db.close()

    def _row(self, r: tuple) -> Alert:
        return Alert(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12], r[13])

    def active(self, rule: str, device: str) -> Alert | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM alerts WHERE rule=? AND device=? AND state!='resolved'",
                                 (rule, device)).fetchone()
        return self._row(r) if r else None

    def save(self, a: Alert) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                a.alert_id, a.rule, a.device, a.department, a.severity, a.state, a.value, a.opened_ms,
                a.updated_ms, a.resolved_ms, int(a.acknowledged), a.ack_by, a.text_id, a.text_en))

    def get(self, alert_id: str) -> Alert | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return self._row(r) if r else None

    def list(self, state: str | None = None, department: str | None = None, limit: int = 500) -> list[Alert]:
        q, args = "SELECT * FROM alerts WHERE 1=1", []  # type: tuple[str, list[object]]
        if state == "active":
            q += " AND state!='resolved'"
        elif state:
            q += " AND state=?"
            args.append(state)
        if department:
            q += " AND department=?"
            args.append(department)
        q += " ORDER BY updated_ms DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            return [self._row(r) for r in self._db.execute(q, args).fetchall()]

    def acknowledge(self, alert_id: str, by: str) -> Alert | None:
        with self._lock:
            cur = self._db.execute("UPDATE alerts SET acknowledged=1, ack_by=? WHERE alert_id=?", (by, alert_id))
        return self.get(alert_id) if cur.rowcount else None


class AlertEngine:
    def __init__(self, store: AlertStore):
        self.store = store

    def evaluate(self, conditions: list[Condition]) -> list[Alert]:
        """Apply one pass of conditions; returns the transitions (open/update/resolved) to deliver."""
        events: list[Alert] = []
        for c in conditions:
            if c.value != c.value:  # NaN: no data, no transition
                continue
            r = c.rule
            cur = self.store.active(r.name, c.device)
            fmt = {"device": c.device, "value": c.value, "detail": c.detail_id}
            if cur is None:
                if c.value >= r.open_at:
                    sev = severity_of(r, c.value)
                    a = Alert(uuid.uuid4().hex, r.name, c.device, r.department, sev, "open", float(c.value),
                              c.ts_ms, c.ts_ms, None, False, None,
                              r.text_id.format(**fmt, severity=sev),
                              r.text_en.format(**(fmt | {"detail": c.detail_en}), severity=sev))
                    self.store.save(a)
                    events.append(a)
                continue
            if c.value < r.resolve_at:
                cur.state, cur.value, cur.updated_ms, cur.resolved_ms = "resolved", float(c.value), c.ts_ms, c.ts_ms
                cur.text_id = f"SELESAI: {cur.text_id}" if not cur.text_id.startswith("SELESAI") else cur.text_id
                cur.text_en = f"RESOLVED: {cur.text_en}" if not cur.text_en.startswith("RESOLVED") else cur.text_en
                self.store.save(cur)
                events.append(cur)
                continue
            sev = severity_of(r, c.value)
            if sev != cur.severity:  # dedup: only a change of severity is news
                cur.severity, cur.state, cur.value, cur.updated_ms = sev, "update", float(c.value), c.ts_ms
                cur.text_id = r.text_id.format(**fmt, severity=sev)
                cur.text_en = r.text_en.format(**(fmt | {"detail": c.detail_en}), severity=sev)
                self.store.save(cur)
                events.append(cur)
            else:
                cur.value = float(c.value)  # keep the latest value without announcing it
                self.store.save(cur)
        return events


def payload(a: Alert) -> bytes:
    return json.dumps({"v": 1, **a.to_json()}, ensure_ascii=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------ the rules

def rules(departments: dict[str, str]) -> dict[str, Rule]:
    """The platform's alert rules; ``departments`` maps kind -> department (catalogue ``kind.department``)."""
    air, water, bins = departments["air"], departments["water"], departments["waste_bin"]
    return {
        # ISPU > 100 = Tidak Sehat (P.14/2020); resolve back in Sedang with margin
        "ispu_unhealthy": Rule("ispu_unhealthy", air, _ISPU_UNHEALTHY, 90.0,
                               ((_ISPU_UNHEALTHY, "warning"), (_ISPU_VERY_UNHEALTHY, "critical")),
                               "Kualitas udara di {device}: ISPU {value:.0f} ({detail}). Kurangi aktivitas di luar ruangan.",
                               "Air quality at {device}: ISPU {value:.0f} ({detail}). Reduce outdoor activity."),
        # value = exceedance of the Permenkes 2/2023 limit as a fraction of the limit
        "water_noncompliant": Rule("water_noncompliant", water, 1e-6, 1e-6,
                                   ((0.0, "warning"), (0.5, "critical")),
                                   "Air di titik {device} tidak memenuhi Permenkes 2/2023: {detail}.",
                                   "Water at sampling point {device} breaches Permenkes 2/2023: {detail}."),
        # due for collection (operational threshold, kotacerdas/standards.py); resolves once emptied
        "bin_full": Rule("bin_full", bins, BIN_FILL_DUE, BIN_FILL_EMPTIED, ((BIN_FILL_DUE, "info"), (100.0, "warning")),
                         "Tempat sampah {device} penuh ({value:.0f}%). Jadwalkan pengangkutan.",
                         "Waste bin {device} is full ({value:.0f}%). Schedule a collection."),
        "bin_tilted": Rule("bin_tilted", bins, 0.5, 0.5, ((0.5, "warning"),),
                           "Tempat sampah {device} terguling.", "Waste bin {device} has been knocked over."),
        # temperature inside a bin: a fire starts long before the sensor's 85 C limit
        "bin_fire": Rule("bin_fire", bins, 60.0, 50.0, ((60.0, "critical"),),
                         "Suhu tinggi di tempat sampah {device} ({value:.0f} C): kemungkinan kebakaran.",
                         "High temperature in waste bin {device} ({value:.0f} C): possible fire."),
    }
