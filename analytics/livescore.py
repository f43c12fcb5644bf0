"""Score what the *live* service wrote to InfluxDB (``qc`` verdicts or ``qc_episode`` episodes)
against a simulator run's labels, refusing labels of another run.

The replay in :mod:`analytics.evaluate` scores the detectors as the service would run them;
this scores what a running service actually stored, with the same per-fault-type table
(:func:`analytics.evaluate.score_field`). The run check: every label carries ``run`` and every
simulated device reports ``fw = sim-1.0+<run>`` (:mod:`kotacerdas.simrun`), which ingest stores
with its telemetry; labels without a run id, with several, or whose devices' stored telemetry
names another run raise :class:`RunMismatch` (the CLI exits 2).

Sources:
- ``verdicts``: each stored suspect/fail `qc` verdict marks its grid bin for its test (multivariate
  verdicts are stored on the fields they are about; older ``field=station`` ones count on every field);
- ``episodes``: each stored episode marks its bins from onset to end for every test of its
  fault type (:data:`analytics.episodes.FAULT_OF`), so an episode is one flagged run.

With either source, the alert-rule faults (``pollution_episode``, ``contamination``:
:data:`ALERT_FAULTS`) are scored from the stored ``alerts`` transitions: an alert of the rule
marks its device from ``open`` to ``resolved`` (or to the end when still open). An alert is
per station, not per field, so these rows count per device: one event per labelled
(device, window), however many fields the label names, and one flagged run per alert.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from analytics.episodes import FAULT_OF
from analytics.evaluate import DETECTORS_FOR, Row, new_rows, score_field, traced
from analytics.grid import Grid
from analytics.multivariate import STATION
from kotacerdas import measurements as M
from kotacerdas import simrun
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.lineprotocol import escape_key

SOURCES = ("verdicts", "episodes")
# fault types an alert rule (analytics/rules.yaml) is meant to catch: type -> rule (its "detector" in
# analytics.evaluate.DETECTORS_FOR)
ALERT_FAULTS = {ft: dets[0] for ft, dets in DETECTORS_FOR.items()
                if ft in ("pollution_episode", "contamination")}


class RunMismatch(ValueError):
    """The labels do not belong to the run whose data is in InfluxDB (or carry no run id)."""


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def labels_run(labels: list[dict]) -> str:
    """The one run id the labels carry."""
    runs = {lb.get("run") or "" for lb in labels}
    if not labels:
        raise RunMismatch("the labels file is empty")
    if runs == {""}:
        raise RunMismatch("the labels carry no run id (written by a simulator before run ids): re-run the scenario")
    if len(runs) > 1:
        raise RunMismatch(f"the labels mix runs {sorted(r or '(none)' for r in runs)}")
    return runs.pop()


def stored_runs(influx: InfluxClient, cat: Catalogue, kind: str, start_ms: int, end_ms: int) -> dict[str, str | None]:
    """device -> the run id in its latest stored firmware string in [start_ms, end_ms] (None: not simulated)."""
    meas = cat[kind].measurement
    out: dict[str, str | None] = {}
    for s in influx.series(f'SELECT last("fw") FROM "{meas}" WHERE time >= {int(start_ms)}ms AND '
                           f'time <= {int(end_ms)}ms GROUP BY "device"'):
        out[s.tags.get("device", "")] = simrun.run_of(s.values[0][1] if s.values else None)
    return out


def check_run(influx: InfluxClient, labels: list[dict], cat: Catalogue, start_ms: int, end_ms: int) -> str:
    """The labels' run id, after checking that InfluxDB holds that run's telemetry for their devices."""
    run = labels_run(labels)
    seen: dict[str, str | None] = {}
    for kind in sorted({lb["kind"] for lb in labels if lb["kind"] in cat}):
        seen.update(stored_runs(influx, cat, kind, start_ms, end_ms))
    labelled = sorted({lb["device"] for lb in labels if lb["kind"] in cat})
    have = {d: seen[d] for d in labelled if d in seen}
    if not have:
        raise RunMismatch(f"InfluxDB holds no telemetry of the {len(labelled)} labelled devices between "
                          f"{start_ms} and {end_ms} ms: not the database of run {run}")
    other = sorted({r or "(not simulated)" for r in have.values() if r != run})
    if other:
        bad = sorted(d for d, r in have.items() if r != run)
        raise RunMismatch(f"labels are from run {run}, but InfluxDB holds run(s) {', '.join(other)} for "
                          f"{len(bad)} of the labelled devices (e.g. {', '.join(bad[:3])})")
    return run


def _devices(influx: InfluxClient, cat: Catalogue, kind: str, run: str, start_ms: int, end_ms: int) -> list[str]:
    """The run's devices of ``kind`` (every one, not only the labelled: the alarm budget needs them all)."""
    return sorted(d for d, r in stored_runs(influx, cat, kind, start_ms, end_ms).items() if r == run)


def evaluate_live(influx: InfluxClient, labels: list[dict], cat: Catalogue | None = None, *, source: str = "verdicts",
                  margin_ms: int = 3_600_000) -> list[Row]:
    """Score the stored ``source`` ("verdicts": `qc` rows, or "episodes") against ``labels``; raises :class:`RunMismatch`."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    cat = cat or load_catalogue()
    start_ms = min(int(lb["start"]) for lb in labels) - margin_ms if labels else 0
    end_ms = max(int(lb["end"]) for lb in labels) + margin_ms if labels else 0
    run = check_run(influx, labels, cat, start_ms, end_ms)
    rows = new_rows()
    labels = traced(labels, rows)
    for kind_name in sorted({lb["kind"] for lb in labels if lb["kind"] in cat}):
        kind = cat[kind_name]
        devices = _devices(influx, cat, kind_name, run, start_ms, end_ms)
        if not devices:
            continue
        dindex = {d: i for i, d in enumerate(devices)}
        step_ms = int(kind.report_interval_s * 1000)
        grid = Grid.covering(start_ms, end_ms, step_ms)
        times = grid.times_ms
        days = grid.n * step_ms / 86_400_000
        marks: dict[str, dict[str, np.ndarray]] = defaultdict(dict)  # field -> test -> (S, T)

        def mark(fname: str, test: str, dev: str, t0: int, t1: int) -> None:
            if dev not in dindex:
                return
            _mark_span(marks[fname].setdefault(test, np.zeros((len(devices), grid.n), dtype=bool)), dindex[dev],
                       grid, t0, t1)

        where = (f"\"kind\"='{_q(escape_key(kind_name))}' AND time >= {start_ms}ms AND time <= {end_ms}ms")
        if source == "verdicts":
            for s in influx.series(f'SELECT "flag" FROM "{M.QC.name}" WHERE {where} AND "flag" >= 3 '
                                   'GROUP BY "device","field","test"'):
                for t, _ in s.values:
                    mark(s.tags["field"], s.tags["test"], s.tags["device"], int(t), int(t))
        else:
            for s in influx.series(f'SELECT "end_ms" FROM "{M.QC_EPISODE.name}" WHERE {where} '
                                   'GROUP BY "device","field","fault"'):
                tests = [t for t, fault in FAULT_OF.items() if fault == s.tags["fault"]]
                for t, end in s.values:
                    for test in tests:
                        mark(s.tags["field"], test, s.tags["device"], int(t), int(end))
        station = marks.pop(STATION, {})
        klabels = [lb for lb in labels if lb["kind"] == kind_name and lb["device"] in dindex]
        for f in kind.fields:
            # every test the service may write, stored verdicts or not (nothing stored = said nothing)
            none = np.zeros((len(devices), grid.n), dtype=bool)
            flagged = {test: none for test in FAULT_OF}
            flagged.update(marks.get(f.name, {}))
            flagged.update(station)
            score_field(rows, kind, f.name, flagged, times, days, dindex, klabels)
        alerted = alert_marks(influx, devices, grid, start_ms, end_ms)
        # per station: the labels without their field, each (device, window, type) once
        per_device = {(lb["device"], lb["start"], lb["end"], lb["type"]): {**lb, "field": None} for lb in klabels}
        score_field(rows, kind, kind.fields[0].name, alerted, times, days, dindex, list(per_device.values()))
    return list(rows.values())


def alert_marks(influx: InfluxClient, devices: list[str], grid: Grid, start_ms: int, end_ms: int) -> dict[str, np.ndarray]:
    """rule -> (S, T) bool on ``grid``: bins from an alert's ``open`` to its ``resolved`` (inclusive; to the
    grid's end while open), for the rules of :data:`ALERT_FAULTS`, rows in the order of ``devices``."""
    dindex = {d: i for i, d in enumerate(devices)}
    out = {rule: np.zeros((len(devices), grid.n), dtype=bool) for rule in ALERT_FAULTS.values()}
    rules = " OR ".join(f"\"rule\"='{_q(escape_key(r))}'" for r in out)
    for s in influx.series(f'SELECT "state" FROM "{M.ALERTS.name}" WHERE ({rules}) AND time >= {int(start_ms)}ms '
                           f'AND time <= {int(end_ms)}ms GROUP BY "device","rule"'):
        row = dindex.get(s.tags.get("device", ""))
        if row is None:
            continue
        opened: int | None = None
        for t, state in sorted(s.values, key=lambda v: v[0]):
            if state == "open" and opened is None:
                opened = int(t)
            elif state == "resolved" and opened is not None:
                _mark_span(out[s.tags["rule"]], row, grid, opened, int(t))
                opened = None
        if opened is not None:
            _mark_span(out[s.tags["rule"]], row, grid, opened, end_ms)
    return out


def _mark_span(a: np.ndarray, row: int, grid: Grid, t0: int, t1: int) -> None:
    i0 = max(int((t0 - grid.t0_ms) // grid.step_ms), 0)
    i1 = min(int((t1 - grid.t0_ms) // grid.step_ms), grid.n - 1)
    if i1 >= i0:
        a[row, i0 : i1 + 1] = True


__all__ = ["ALERT_FAULTS", "RunMismatch", "SOURCES", "alert_marks", "check_run", "evaluate_live", "labels_run"]
