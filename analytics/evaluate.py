"""Evaluation harness: score the detectors against the simulators' ground-truth labels.

Inputs (written by ``kotacerdas simulate run --dry-run FILE --labels FILE``):
- dry run, JSON lines ``{"t": ms, "topic": str, "payload": str}`` (payload = telemetry JSON);
- labels, JSON lines ``{"device","kind","field"|null,"start": ms,"end": ms,"type","trace"}`` (a label
  whose ``trace`` is false, a fault that changed no reading, is counted apart and not scored: :func:`traced`).

The detectors run as the service's live loop runs them (:func:`analytics.detectors.stream_run`:
a pass every ``every_s`` over the last ``window_s``, verdicts one grid step late), or, with
``mode="batch"``, in one run over the record (the same flags: tests/analytics/test_stream.py).
Each fault type is matched with the detectors meant to catch it (:data:`DETECTORS_FOR`).
Per type:
- recall: labelled events with at least one suspect/fail flag from those detectors
  on the labelled device (and field, when the label names one) between ``start`` and
  ``end`` plus a tolerance of :data:`TOLERANCE_STEPS` grid steps;
- precision: runs of consecutive flags from those detectors that overlap a label of
  that type (with the same tolerance either side), over those runs plus the runs that touch
  no label at all (a run on another type's label is neither);
- delay: first flag minus label start, seconds (median and 90th percentile);
- alarm budget: flagged runs of those detectors that touch no label of *any* type (with the
  same tolerance), per sensor (series of one field) per day: false alarms on clean stretches.
  The row "all alarms" does the same for the union of every `qc` test the service writes
  (:mod:`analytics.alarmset`: the data-quality tests too): the false alarms a user sees.
Message-level faults (duplicate, out_of_order, malformed, clock_skew) are the
gateway's job (it rejects or reorders them before storage) and are reported as such.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Collection, Iterable

import numpy as np

from analytics import alarmset, ispu, multivariate, qc, water
from analytics.detectors import QcParams, StatParams, batch_run, params_for, stream_run
from analytics.grid import Grid, to_grid
from analytics.stateful import Source, States, advance
from kotacerdas import contract
from kotacerdas.catalogue import Catalogue, load_catalogue

TOLERANCE_STEPS = 3
GATEWAY_TYPES = ("duplicate", "out_of_order", "malformed", "clock_skew")
DETECTORS_FOR: dict[str, tuple[str, ...]] = {
    "spike": ("spike",),  # Hampel found no spike the spike test missed; only false alarms (docs/analytics.md)
    "flatline": ("flat_line",),
    # drifts: the trend test against its frozen long baseline (analytics/trend.py); the windowed
    # neighbour drift test and EWMA / CUSUM re-base within hours (a walk enters their baselines)
    "drift": ("trend",),
    # a step that stays: the window changepoint test (analytics/shift.py; docs/analytics.md, "Level shifts")
    "offset": ("shift",),
    # hard cases (simulators/hardcases.py)
    "level_shift": ("shift",),
    "slow_drift": ("trend",),
    # every field of a device steps at once: the shift test on each field; the station test
    # (multivariate) is opt-in (analytics/alarmset.py: 4 of 277 events for 366 false runs, 6 hard seeds)
    "correlated": ("shift",),
    # a value normal for another hour of the day / day of the week (analytics/seasonal.py)
    "night_at_day_level": ("seasonal",),
    "no_weekly_dip": ("seasonal",),
    # a reading beyond the sensor's valid range: the gateway refuses it before storage (counted, dead-
    # lettered); scored here on the dry run as the service's second line (gross range) would flag it
    "out_of_range": ("gross_range",),
    "dropout": ("gap",),
    "offline": ("gap",),
    "pollution_episode": ("ispu_unhealthy",),
    "contamination": ("water_noncompliant",),
}
# what the alert rules raise (not `qc` tests): scored above, left out of the "all alarms" row
RULE_DETECTORS = ("ispu_unhealthy", "water_noncompliant")
ALL_ALARMS = "all alarms"  # every flagged run of every `qc` test the service writes, touching no label


@dataclass
class Row:
    type: str
    detectors: str
    events: int = 0
    detected: int = 0
    flagged_runs: int = 0
    true_runs: int = 0
    delays_s: list[float] = field(default_factory=list)
    false_runs: int = 0  # flagged runs touching no label at all
    sensor_days: float = 0.0
    note: str = ""
    untraced: int = 0  # labels of this type whose fault left no trace in the data (not scored)

    @property
    def false_per_sensor_day(self) -> float:
        return self.false_runs / self.sensor_days if self.sensor_days else math.nan

    @property
    def recall(self) -> float:
        return self.detected / self.events if self.events else math.nan

    @property
    def precision(self) -> float:
        return self.true_runs / self.flagged_runs if self.flagged_runs else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p == p and r == r and (p + r) > 0 else math.nan


def read_dry_run(lines: Iterable[str]) -> tuple[dict[tuple[str, str], list[tuple[int, dict]]], int]:
    """(kind, device) -> [(ts, fields)] of parseable telemetry, and the count of unusable messages."""
    out: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    bad = 0
    for ln in lines:
        try:
            doc = json.loads(ln)
            parts = doc["topic"].split("/")
            if len(parts) != 6 or parts[5] != contract.CH_TELEMETRY:
                continue
            p = json.loads(doc["payload"])
            ts, fields = int(p["ts"]), p["fields"]
            if not isinstance(fields, dict):
                raise ValueError("fields")
        except (KeyError, ValueError, TypeError):  # malformed on purpose: the gateway's dead letters
            bad += 1
            continue
        num = {k: float(v) for k, v in fields.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        out[(parts[3], parts[4])].append((ts, num))
    return out, bad


def _runs_overlap(mask: np.ndarray, cover: np.ndarray) -> tuple[int, int]:
    """(number of runs of True in mask, number of those touching cover)."""
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    n = int(starts.sum())
    if n == 0:
        return 0, 0
    run_id = np.cumsum(starts.ravel()).reshape(mask.shape)
    hit = np.bincount(run_id[mask], weights=cover[mask].astype(np.float64), minlength=n + 1)[1:]
    return n, int((hit > 0).sum())


def evaluate(data: dict[tuple[str, str], list[tuple[int, dict]]], labels: list[dict],
             cat: Catalogue | None = None, *, qc_overrides: dict | None = None,
             stat_params: StatParams | None = None, mode: str = "stream", window_s: float = 86400.0,
             every_s: float = 3 * 3600.0, stateful: bool = True, extra_tests: Iterable[str] = ()) -> list[Row]:
    """Score the detector set; ``qc_overrides`` / ``stat_params`` try other parameters (for tuning).

    Only the tests the service writes are scored (:func:`analytics.alarmset.written` of
    ``extra_tests``, the service's ``analytics.extra_tests``); the row :data:`ALL_ALARMS` counts
    every flagged run of any of them that touches no label.

    ``mode``: "stream" (the live loop, a pass every ``every_s`` over ``window_s``) or "batch".
    ``stateful``: EWMA / CUSUM, the seasonal residual and the trend test as the service runs them, with
    state carried between passes (:mod:`analytics.stateful`: the record is the history, so the
    seasonal test needs a record of more than 7 days); False: the windowed ones of
    :func:`analytics.detectors.run_all`.
    """
    cat = cat or load_catalogue()
    rows = new_rows()
    labels = traced(labels, rows)
    tests = alarmset.written(extra_tests)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kname, dev in data:
        by_kind[kname].append(dev)
    for kind_name, devices in by_kind.items():
        if kind_name not in cat:
            continue
        kind = cat[kind_name]
        devices.sort()
        dindex = {d: i for i, d in enumerate(devices)}
        all_ts = [t for d in devices for t, _ in data[(kind_name, d)]]
        step_ms = kind.report_interval_s * 1000
        grid = Grid.covering(min(all_ts), max(all_ts), step_ms)
        days = (grid.n * step_ms) / 86_400_000
        times = grid.times_ms
        klabels = [lb for lb in labels if lb["kind"] == kind_name and lb["device"] in dindex]
        grids: dict[str, np.ndarray] = {}
        for f in kind.fields:
            idx: list[int] = []
            ts: list[int] = []
            vals: list[float] = []
            for d in devices:
                for t, fl in data[(kind_name, d)]:
                    if f.name in fl:
                        idx.append(dindex[d])
                        ts.append(t)
                        vals.append(fl[f.name])
            if vals:
                grids[f.name] = to_grid(np.array(idx), np.array(ts), np.array(vals), len(devices), grid, how="mean")
        station = _station_flags(kind, grids, grid) if "multivariate" in tests else {}  # field -> (S, T)
        for f in kind.fields:
            if f.name not in grids:
                continue
            x = grids[f.name]
            p = replace(params_for(kind, f, kind.report_interval_s), **(qc_overrides or {}))
            res = detector_results(x, p, grid.t0_ms, stat_params or StatParams(), mode=mode, window_s=window_s,
                                   every_s=every_s, stateful=stateful, tests=tests,
                                   src=Source.of(kind, grids, p, kind.report_interval_s))
            flagged = {k: (r.flag == qc.SUSPECT) | (r.flag == qc.FAIL) for k, r in res.items() if k in tests}
            if f.name in station:  # a station verdict counts on the fields it is about
                flagged["multivariate"] = station[f.name]
            # domain "detectors": what the alert rules would flag, averaged exactly as the service
            # averages (ispu.averaged: the regulation's period with hourly completeness)
            if f.name in ispu.TABLES:
                flagged["ispu_unhealthy"] = ispu.index(f.name, ispu.averaged(f.name, x, grid.step_ms / 1000).conc) > 100
            if f.name in water.LIMITS:
                n = max(int(900 / kind.report_interval_s), 1)
                m = qc.rolling_mean(x, n)
                flagged["water_noncompliant"] = ~water.compliant(f.name, m) & ~np.isnan(m)
            score_field(rows, kind, f.name, flagged, times, days, dindex, klabels)
    return list(rows.values())


def detector_results(x: np.ndarray, p: QcParams, t0_ms: int, sp: StatParams, *, mode: str = "stream",
                     window_s: float = 86400.0, every_s: float = 3 * 3600.0, stateful: bool = True,
                     tests: Collection[str] = alarmset.ALL, src: Source | None = None) -> dict[str, qc.QcResult]:
    """Every per-series detector over one field's record ``x`` (S, T) on a grid of ``p.step_s`` from
    ``t0_ms``, as the service runs them with the tests ``tests`` written (EWMA / CUSUM are charted only
    then): test name -> flags / scores (S, T). ``src``: a resetting field's measured field. See
    :func:`evaluate`."""
    step_ms = int(round(p.step_s * 1000))
    if mode == "stream":
        res = stream_run(x, p, t0_ms, max(int(window_s * 1000 // step_ms), 2), max(int(every_s * 1000 // step_ms), 1),
                         sp)
    else:
        res = batch_run(x, p, t0_ms, sp)
    # the stateful tests over the record from fresh states, as a service started at its first bin runs them
    got = advance(States.fresh(p, sp, tests if stateful else (), src is not None), [str(i) for i in range(x.shape[0])],
                  x, p.g0(t0_ms), src=src)
    res.update(got if stateful else {"shift": got["shift"]})  # the shift test has no windowed twin
    return res


def score_field(rows: dict[str, Row], kind, fname: str, flagged: dict[str, np.ndarray], times: np.ndarray,  # noqa: ANN001
                days: float, dindex: dict[str, int], klabels: list[dict]) -> None:
    """Add one field's flags to ``rows`` (fault type -> :class:`Row`): ``flagged`` detector -> (S, T) bool
    on the grid ``times`` (ms, T), series in the order of ``dindex`` (device -> row), ``days`` the
    grid's span; ``klabels`` the kind's labels."""
    step_ms = int(kind.report_interval_s * 1000)
    shape = next(iter(flagged.values())).shape
    # every labelled stretch of this field (any type), for the alarm budget
    any_label = np.zeros(shape, dtype=bool)
    for lb in klabels:
        if lb["field"] in (None, fname):
            i0 = int(np.searchsorted(times, lb["start"] - step_ms + 1)) - TOLERANCE_STEPS
            i1 = int(np.searchsorted(times, lb["end"], side="right")) + TOLERANCE_STEPS
            any_label[dindex[lb["device"]], max(i0, 0) : i1] = True
    for ftype, dets in DETECTORS_FOR.items():
        have = [flagged[d] for d in dets if d in flagged]
        if not have:
            continue
        mask = np.logical_or.reduce(have)
        rows[ftype].sensor_days += shape[0] * days
        n_all, touching = _runs_overlap(mask, any_label)
        rows[ftype].false_runs += n_all - touching
        cover = np.zeros_like(mask)
        row = rows[ftype]
        for lb in klabels:
            if lb["type"] != ftype or (lb["field"] not in (None, fname)):
                continue
            s = dindex[lb["device"]]
            i0 = int(np.searchsorted(times, lb["start"] - step_ms + 1))
            i1 = int(np.searchsorted(times, lb["end"], side="right")) + TOLERANCE_STEPS
            cover[s, max(i0 - TOLERANCE_STEPS, 0) : i1] = True
            # a field-less label (device offline) is one event, counted on the first field only
            if lb["field"] is None and fname != kind.fields[0].name:
                continue
            row.events += 1
            hit = np.nonzero(mask[s, i0:i1])[0]
            if hit.size:
                row.detected += 1
                row.delays_s.append(max((times[i0 + hit[0]] - lb["start"]) / 1000.0, 0.0))
        # runs on another type's label are that type's: neither true nor false here
        n, tp = _runs_overlap(mask, cover)
        row.flagged_runs += n_all - touching + tp
        row.true_runs += tp
    written = [m for d, m in flagged.items() if d in alarmset.ALL]
    if written:  # what a user sees: any test's flag, one run however many tests flag it
        n_all, touching = _runs_overlap(np.logical_or.reduce(written), any_label)
        rows[ALL_ALARMS].false_runs += n_all - touching
        rows[ALL_ALARMS].sensor_days += shape[0] * days

def traced(labels: list[dict], rows: dict[str, Row]) -> list[dict]:
    """The labels to score: those whose fault showed in the data (the simulator's ``trace``; a label
    without the key, from an older simulator, counts as traced). The others are counted per type in
    ``rows`` and left out: a step that pinned a field already at its range floor, every reading of
    the window dropped, changed nothing a detector could read (an alarm there is a false one)."""
    out = []
    for lb in labels:
        if lb.get("trace", True):
            out.append(lb)
        elif lb["type"] in rows:
            rows[lb["type"]].untraced += 1
    return out


def new_rows() -> dict[str, Row]:
    """An empty score table: one row per fault type (gateway-only types as notes)."""
    rows = {ft: Row(ft, "+".join(d)) for ft, d in DETECTORS_FOR.items()}
    for ft in GATEWAY_TYPES:
        rows[ft] = Row(ft, "gateway", note="rejected/reordered by the gateway before storage")
    rows[ALL_ALARMS] = Row(ALL_ALARMS, "any qc test written (no alert rules)")
    return rows


def _station_flags(kind, grids: dict[str, np.ndarray], grid: Grid) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The station test (:mod:`analytics.multivariate`) as the service runs it: field -> suspect/fail
    (S, T) on the fields each verdict is about (their share of the residual); empty without a station."""
    mv = [f for f in multivariate.station_fields(kind) if f in grids]
    if len(mv) < 2:
        return {}
    p = params_for(kind, kind.field(mv[0]), kind.report_interval_s)
    _, fields = multivariate.station_test(np.stack([grids[f] for f in mv], axis=1), p.g0(grid.t0_ms), p.block,
                                          np.array([kind.field(f).resolution for f in mv]))
    return {f: fields[:, i] for i, f in enumerate(mv)}


def evaluate_files(data_path: str, labels_path: str, root: str | None = None, **kw) -> list[Row]:  # noqa: ARG001
    """:func:`evaluate` over a dry run and its labels file; ``kw``: mode, window_s, every_s."""
    with open(data_path, encoding="utf-8") as fh:
        data, _bad = read_dry_run(fh)
    with open(labels_path, encoding="utf-8") as fh:
        labels = [json.loads(ln) for ln in fh if ln.strip()]
    return evaluate(data, labels, **kw)


def _fmt(v: float, pct: bool = True) -> str:
    if v != v:
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.0f}"


def _fmt2(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"


def render(rows: list[Row]) -> str:
    head = f"{'fault type':<18} {'detectors':<44} {'events':>6} {'found':>6} {'recall':>7} {'precision':>9} " \
           f"{'F1':>5} {'delay p50 s':>11} {'p90 s':>7} {'false/sensor/day':>16}"
    out = [head, "-" * len(head)]
    for r in rows:
        if r.note:
            out.append(f"{r.type:<18} {r.detectors:<44} {r.note}")
            continue
        if r.type == ALL_ALARMS:  # no label type of its own: only its false runs
            what = f"{r.false_runs:>6} false runs over {r.sensor_days:.0f} sensor-days"
            out.append(f"{r.type:<18} {r.detectors:<44} {what:<57} {_fmt2(r.false_per_sensor_day):>16}")
            continue
        d = np.array(r.delays_s) if r.delays_s else np.array([math.nan])
        p50 = float(np.median(d)) if r.delays_s else math.nan
        out.append(f"{r.type:<18} {r.detectors:<44} {r.events:>6} {r.detected:>6} {_fmt(r.recall):>7} "
                   f"{_fmt(r.precision):>9} {_fmt(r.f1):>5} {_fmt(p50, False):>11} "
                   f"{_fmt(float(np.nanpercentile(d, 90)) if r.delays_s else math.nan, False):>7} "
                   f"{_fmt2(r.false_per_sensor_day):>16}"
                   + (f"  ({r.untraced} without trace, not scored)" if r.untraced else ""))
    return "\n".join(out)
