"""Alerts: hysteresis, deduplication, lifecycle (open -> update -> resolved), bilingual text.

The engine is fed one :class:`Condition` per (rule, device) each pass. An alert
opens when the value crosses the rule's ``open_at`` threshold, is updated only
when its severity changes (no repeats of the same news), and resolves only once
the value is back past ``resolve_at`` (the hysteresis band keeps a value that
hovers around a threshold from flapping). State lives in SQLite so a restarted
service neither re-opens nor forgets alerts.

An alert carries what an agency analyst needs without opening a dashboard: where
(city, district, coordinates), what was measured (parameter, concentration and unit,
the threshold and the averaging period it was judged on), when it was observed, and
what the public should do (category advice, Bahasa Indonesia and English). The rules
themselves are data (``analytics/rules.yaml``, or the operator's file, validated by
:mod:`analytics.alertconfig`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from kotacerdas import contract

SEVERITIES = contract.ALERT_SEVERITIES


@dataclass(frozen=True)
class Rule:
    name: str
    department: str
    open_at: float  # value >= open_at opens (for direction "above")
    resolve_at: float  # value < resolve_at resolves; open_at > resolve_at
    severities: tuple[tuple[float, str], ...]  # ascending (threshold, severity): highest reached wins
    text_id: str  # str.format template, placeholders in TEMPLATE_KEYS
    text_en: str
    resolved_id: str = "SELESAI: {device} ({district}) kembali normal, nilai {value:g} pada {time}."
    resolved_en: str = "RESOLVED: {device} ({district}) is back to normal, value {value:g} at {time}."
    parameter: str = ""  # what ``value`` is: "ISPU", "fill", ...
    unit: str = ""  # unit of ``value``


# what a template may use; alertconfig checks every template against these
TEMPLATE_KEYS = ("device", "city", "district", "value", "severity", "detail", "threshold", "time", "unit",
                 "concentration", "averaging")


@dataclass(frozen=True)
class Condition:
    rule: Rule
    device: str
    value: float  # NaN = no data this pass: the alert keeps its state
    ts_ms: int  # when the value was observed (end of its averaging period)
    detail_id: str = ""
    detail_en: str = ""
    city: str = ""
    district: str = ""
    lat: float | None = None
    lon: float | None = None
    pollutant: str = ""  # the parameter behind ``value`` (ISPU: the dominant pollutant)
    concentration: float | None = None  # measured concentration behind an index value
    concentration_unit: str = ""
    threshold: float | None = None  # the regulatory/operational limit that was crossed (default rule.open_at)
    averaging_s: float | None = None  # period the concentration/value was averaged over
    advice_id: str = ""
    advice_en: str = ""


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
    city: str = ""
    district: str = ""
    lat: float | None = None
    lon: float | None = None
    observed_ms: int | None = None
    parameter: str = ""
    unit: str = ""
    pollutant: str = ""
    concentration: float | None = None
    concentration_unit: str = ""
    threshold: float | None = None
    averaging_s: float | None = None
    advice_id: str = ""
    advice_en: str = ""

    def to_json(self) -> dict:
        """The alert as the contract lists its fields (``kotacerdas.contract.alerts.ALERT_FIELDS``)."""
        return contract.alert_doc({**asdict(self), "observed_at": _iso(self.observed_ms)})


_CTX = ("city", "district", "lat", "lon", "observed_ms", "parameter", "unit", "pollutant", "concentration",
        "concentration_unit", "threshold", "averaging_s", "advice_id", "advice_en")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clean(x: float | None) -> float | None:
    return None if x is None or x != x else float(x)


def _fmt(c: Condition, sev: str, detail: str) -> dict:
    return {"device": c.device, "city": c.city or "-", "district": c.district or "-", "value": c.value,
            "severity": sev, "detail": detail, "threshold": c.threshold if c.threshold is not None else c.rule.open_at,
            "time": _iso(c.ts_ms), "unit": c.rule.unit,
            "concentration": "-" if c.concentration is None else f"{c.concentration:g} {c.concentration_unit}".strip(),
            "averaging": _period(c.averaging_s)}


def _period(s: float | None) -> str:
    if not s:
        return "-"
    return f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min"


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
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}
        if "ctx" not in cols:  # databases from before alerts carried location and measurement context
            self._db.execute("ALTER TABLE alerts ADD COLUMN ctx TEXT")

    def close(self) -> None:
        self._db.close()

    def _row(self, r: tuple) -> Alert:
        ctx = json.loads(r[14]) if len(r) > 14 and r[14] else {}
        return Alert(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12], r[13],
                     **{k: ctx[k] for k in _CTX if k in ctx})

    def active(self, rule: str, device: str) -> Alert | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM alerts WHERE rule=? AND device=? AND state!='resolved'",
                                 (rule, device)).fetchone()
        return self._row(r) if r else None

    def save(self, a: Alert) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                a.alert_id, a.rule, a.device, a.department, a.severity, a.state, a.value, a.opened_ms,
                a.updated_ms, a.resolved_ms, int(a.acknowledged), a.ack_by, a.text_id, a.text_en,
                json.dumps({k: getattr(a, k) for k in _CTX})))

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


def _context(a: Alert, c: Condition) -> None:
    """Copy the observation's context onto the alert (latest observation wins)."""
    a.city, a.district = c.city, c.district
    a.lat, a.lon = _clean(c.lat), _clean(c.lon)
    a.observed_ms = c.ts_ms
    a.parameter, a.unit, a.pollutant = c.rule.parameter, c.rule.unit, c.pollutant
    a.concentration, a.concentration_unit = _clean(c.concentration), c.concentration_unit
    a.threshold = _clean(c.threshold if c.threshold is not None else c.rule.open_at)
    a.averaging_s = _clean(c.averaging_s)
    a.advice_id, a.advice_en = c.advice_id, c.advice_en


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
            if cur is None:
                if c.value >= r.open_at:
                    sev = severity_of(r, c.value)
                    a = Alert(uuid.uuid4().hex, r.name, c.device, r.department, sev, "open", float(c.value),
                              c.ts_ms, c.ts_ms, None, False, None,
                              r.text_id.format(**_fmt(c, sev, c.detail_id)),
                              r.text_en.format(**_fmt(c, sev, c.detail_en)))
                    _context(a, c)
                    self.store.save(a)
                    events.append(a)
                continue
            if c.value < r.resolve_at:
                cur.state, cur.value, cur.updated_ms, cur.resolved_ms = "resolved", float(c.value), c.ts_ms, c.ts_ms
                # its own news: back to what, when; not the opening text again
                cur.text_id = r.resolved_id.format(**_fmt(c, cur.severity, c.detail_id))
                cur.text_en = r.resolved_en.format(**_fmt(c, cur.severity, c.detail_en))
                _context(cur, c)
                self.store.save(cur)
                events.append(cur)
                continue
            sev = severity_of(r, c.value)
            if sev != cur.severity:  # dedup: only a change of severity is news
                cur.severity, cur.state, cur.value, cur.updated_ms = sev, "update", float(c.value), c.ts_ms
                cur.text_id = r.text_id.format(**_fmt(c, sev, c.detail_id))
                cur.text_en = r.text_en.format(**_fmt(c, sev, c.detail_en))
                _context(cur, c)
                self.store.save(cur)
                events.append(cur)
            else:
                cur.value = float(c.value)  # keep the latest value without announcing it
                _context(cur, c)
                self.store.save(cur)
        return events


def payload(a: Alert) -> bytes:
    return contract.encode_alert(a.to_json())


# ------------------------------------------------------------------ the rules

def rules(departments: dict[str, str], path: Path | None = None) -> dict[str, Rule]:
    """The platform's alert rules from ``analytics/rules.yaml`` or the operator's ``path`` (validated);
    ``departments`` maps kind -> department (catalogue ``kind.department``)."""
    from analytics.alertconfig import load  # the config module builds Rules: import at call time

    return load(path, departments).rules
