"""The detector set on real labelled series (NAB format), against trivial baselines in the same run.

    python bench/analytics_realdata.py DATA_DIR WINDOWS_JSON [--per-detector] [--z 3] [--z-days 1]

DATA_DIR: CSV files ``timestamp,value[,...]`` (timestamps ``YYYY-MM-DD HH:MM:SS``, UTC assumed), found
recursively; WINDOWS_JSON: ``{"<dir>/<file>.csv": [[start, end], ...]}`` (the Numenta Anomaly
Benchmark's ``labels/combined_windows.json`` layout); files are matched by name. Nothing is
downloaded and no data ships with the repository: the caller brings both (docs/analytics.md says
where the recorded figures' data came from).

Each file is one series on a regular grid (its median sampling step), run as a user would run the
service with default settings: the detectors of :func:`analytics.evaluate.detector_results` in
stream mode (a pass every 3 h over the last 24 h, verdicts one step late, the stateful EWMA /
CUSUM and seasonal tests carried from pass to pass), parameters from
:func:`analytics.detectors.params_for`'s defaults for a field with no catalogue range (the range
test and the neighbour drift test have nothing to work with on one unlabelled series) and the data's
own resolution (its smallest step). "detectors" = any suspect/fail verdict, as the service writes
to ``qc``. Baselines in the same run: a rolling z-score (|x - mean| / std of the previous
``--z-days`` of samples, > ``--z``) and flag-everything.

Scoring, per file and overall (sums over files): an anomaly window is *found* when at least one
flag falls inside it (recall); flagged runs are cut at window edges and a run inside a window is a
true alarm, one outside every window a false alarm (event precision; flag-everything thus scores
one true and about one false alarm per window); point precision = flagged samples inside windows /
flagged samples; false alarms per day of data.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import qc  # noqa: E402
from analytics.detectors import QcParams, StatParams  # noqa: E402
from analytics.evaluate import detector_results  # noqa: E402
from analytics.grid import Grid, to_grid  # noqa: E402

DAY_MS = 86_400_000


@dataclass
class Score:
    windows: int = 0
    found: int = 0
    true_runs: int = 0
    false_runs: int = 0
    flagged: int = 0
    flagged_inside: int = 0
    days: float = 0.0

    def add(self, o: "Score") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    @property
    def recall(self) -> float:
        return self.found / self.windows if self.windows else math.nan

    @property
    def precision(self) -> float:
        n = self.true_runs + self.false_runs
        return self.true_runs / n if n else math.nan

    @property
    def point_precision(self) -> float:
        return self.flagged_inside / self.flagged if self.flagged else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else 0.0

    @property
    def false_per_day(self) -> float:
        return self.false_runs / self.days if self.days else math.nan


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.strip()).replace(tzinfo=timezone.utc).timestamp() * 1000)


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times ms, values) of a ``timestamp,value`` CSV (header skipped, unparseable rows skipped)."""
    ts, vals = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            try:
                t, v = _ms(row[0]), float(row[1])
            except (ValueError, IndexError):
                continue
            if math.isfinite(v):
                ts.append(t)
                vals.append(v)
    return np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64)


def params_for_series(x: np.ndarray, step_s: float) -> QcParams:
    """Default QC parameters for a series the catalogue does not know: no sensor or expected range, no
    neighbours, resolution = the smallest step between distinct values."""
    v = np.unique(x[~np.isnan(x)])
    d = np.diff(v)
    res = float(d[d > 0].min()) if (d > 0).any() else 1.0
    return QcParams(fail_lo=-math.inf, fail_hi=math.inf, suspect_lo=-math.inf, suspect_hi=math.inf, resolution=res,
                    step_s=step_s, drift_enabled=False, drift_window_s=max(3600.0, 24 * step_s))


def rolling_z(x: np.ndarray, n: int, z: float) -> np.ndarray:
    """|x - mean| / std of the previous ``n`` samples (NaN-aware, at least n/4 of them) > ``z``; (T,) bool."""
    ok = ~np.isnan(x)
    v = np.where(ok, x, 0.0)
    c = np.concatenate([[0.0], np.cumsum(ok)])
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])
    i = np.arange(x.size)
    lo = np.maximum(i - n, 0)
    cnt = c[i] - c[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (s1[i] - s1[lo]) / cnt
        var = (s2[i] - s2[lo]) / cnt - mean * mean
        score = np.abs(x - mean) / np.sqrt(np.maximum(var, 0.0))
    return ok & (cnt >= max(n // 4, 2)) & (score > z)


def score(flags: np.ndarray, inside: np.ndarray, window_ids: np.ndarray, n_windows: int, days: float) -> Score:
    """``flags`` / ``inside`` (T,) bool; ``window_ids`` (T,) int (0 outside, k for the k-th window)."""
    s = Score(windows=n_windows, days=days, flagged=int(flags.sum()), flagged_inside=int((flags & inside).sum()))
    s.found = len(set(np.unique(window_ids[flags & inside]).tolist()) - {0})
    # runs cut at window edges: a new run starts where a flag follows no flag, or the window id changes
    start = flags.copy()
    start[1:] &= ~flags[:-1] | (window_ids[1:] != window_ids[:-1])
    s.true_runs = int((start & inside).sum())
    s.false_runs = int((start & ~inside).sum())
    return s


def run_file(path: Path, windows: list[list[str]], z: float, z_days: float,
             per_detector: bool) -> tuple[dict[str, Score], int, float]:
    """method -> score for one file; (samples, step s)."""
    t, v = read_series(path)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    step_ms = int(np.median(np.diff(t)))
    grid = Grid.covering(int(t[0]), int(t[-1]), step_ms)
    x = to_grid(np.zeros(t.size, dtype=np.int64), t, v, 1, grid, how="mean")
    times = grid.times_ms
    wid = np.zeros(grid.n, dtype=np.int64)
    for k, (a, b) in enumerate(windows, 1):
        wid[(times >= _ms(a)) & (times <= _ms(b))] = k
    inside = wid > 0
    days = grid.n * step_ms / DAY_MS
    p = params_for_series(x, step_ms / 1000)
    res = detector_results(x, p, grid.t0_ms, StatParams())
    flagged = {k: ((r.flag == qc.SUSPECT) | (r.flag == qc.FAIL))[0] for k, r in res.items()}
    methods: dict[str, np.ndarray] = {"detectors": np.logical_or.reduce(list(flagged.values()))}
    if per_detector:
        methods.update({f"  {k}": m for k, m in sorted(flagged.items())})
        for test, r in sorted(res.items()):  # how far each test's own score is from its threshold, in and out
            sc = r.score[0]
            ins, out = sc[inside & ~np.isnan(sc)], sc[~inside & ~np.isnan(sc)]
            if ins.size and out.size:
                print(f"# {path.name} {test}: score max in windows {ins.max():.1f}, outside max {out.max():.1f}, "
                      f"outside p99.9 {np.percentile(out, 99.9):.1f}")
    methods["rolling z"] = rolling_z(x[0], max(int(round(z_days * DAY_MS / step_ms)), 8), z)
    methods["flag everything"] = ~np.isnan(x[0])
    return {m: score(f, inside, wid, len(windows), days) for m, f in methods.items()}, int(t.size), step_ms / 1000


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.0f}%"


def table(name: str, scores: dict[str, Score]) -> list[str]:
    out = []
    ref = {b: scores[b].f1 for b in ("rolling z", "flag everything")}
    for m, s in scores.items():
        ratio = "" if m in ref else " ".join(f"{s.f1 / r:.2f}" if r else "-" for r in ref.values())
        out.append(f"{name:44s} {m:20s} {s.windows:4d} {s.found:4d} {_pct(s.recall):>6} {s.true_runs:6d} "
                   f"{s.false_runs:6d} {_pct(s.precision):>6} {_pct(s.point_precision):>6} {_pct(s.f1):>5} "
                   f"{s.false_per_day:8.2f} {ratio:>11}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("windows", type=Path)
    ap.add_argument("--z", type=float, default=3.0, help="rolling z-score threshold (default 3)")
    ap.add_argument("--z-days", type=float, default=1.0, help="rolling z-score window, days (default 1)")
    ap.add_argument("--per-detector", action="store_true", help="also each detector alone")
    a = ap.parse_args(argv)
    by_name = {Path(k).name: w for k, w in json.loads(a.windows.read_text()).items()}
    files = sorted(f for f in a.data_dir.rglob("*.csv") if f.name in by_name)
    if not files:
        print(f"no CSV in {a.data_dir} is named in {a.windows}", file=sys.stderr)
        return 2
    head = (f"{'file':44s} {'method':20s} {'win':>4} {'hit':>4} {'recall':>6} {'true':>6} {'false':>6} {'prec':>6} "
            f"{'pprec':>6} {'F1':>5} {'false/day':>8} {'F1 vs z/all':>11}")
    print(head)
    print("-" * len(head))
    total: dict[str, Score] = {}
    for f in files:
        scores, n, step = run_file(f, by_name[f.name], a.z, a.z_days, a.per_detector)
        for line in table(f"{f.name} ({n} x {step:.0f} s)", scores):
            print(line)
        for m, s in scores.items():
            total.setdefault(m, Score()).add(s)
    print("-" * len(head))
    for line in table(f"overall ({len(files)} files)", total):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Score", "params_for_series", "read_series", "rolling_z", "run_file", "score"]
