"""Cost of the stateful / station detectors in one live pass, next to the windowed detector set.

One field of S series over a 24 h window at 1 min (the service's default): ``run_all`` (the
windowed set, every pass) as the baseline in the same run; the stateful charts, the seasonal
residual and the range learner each advancing by one new bin (a live pass) and over the whole
window (a first pass / restart without state); the station PCA over 8 fields.

    flock /tmp/kc-bench.lock .venv/bin/python bench/analytics_stateful.py [--series 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analytics import chartstate, multivariate, ranges, seasonal, shift, trend
from analytics.detectors import StatParams, params_for, run_all
from kotacerdas.catalogue import load_catalogue


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=3000)
    a = ap.parse_args()
    s, t = a.series, 1440
    cat = load_catalogue()
    kind = next(k for k in cat if "pm25" in k.field_names)  # an air station: 8 co-located fields
    p = params_for(kind, kind.field("pm25"), 60.0)
    rng = np.random.default_rng(1)
    x = 30 + np.cumsum(rng.normal(0, 0.5, (s, t)), axis=1)
    g0 = 29_000_000 // 60 * 60
    devs = [f"d{i}" for i in range(s)]
    cp = chartstate.ChartParams.from_detectors(p, StatParams())
    spp = seasonal.params_for(p)
    lp = ranges.LearnParams(p.fail_lo, p.fail_hi, 60_000, catalogue_lo=p.suspect_lo, catalogue_hi=p.suspect_hi)
    base = timed(lambda: run_all(x, p, g0 * 60_000, dtype=np.float64, score_dtype=np.float64), 2)
    r = chartstate.residual(x)

    def charts_window() -> None:
        st = chartstate.ChartState([], cp)
        chartstate.update(st, st.rows_for(devs), r, g0, cp)

    st = chartstate.ChartState([], cp)
    rows = st.rows_for(devs)
    chartstate.update(st, rows, r[:, :-1], g0, cp)
    ss = seasonal.SeasonState([], seasonal.per_hour(60_000))
    srows = ss.rows_for(devs)
    seasonal.update(ss, srows, x[:, :-1], g0, spp)
    rs = ranges.RangeState([])
    rrows = rs.rows_for(devs)
    ranges.learn(rs, rrows, x[:, :-1], g0, lp)

    def one_bin() -> None:
        a, b, c = (chartstate.ChartState.__new__(chartstate.ChartState) for _ in range(3))
        a.__dict__ = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.__dict__.items()}
        chartstate.update(a, rows, r[:, -1:], g0 + t - 1, cp)
        seasonal.update(ss, srows, x[:, -1:], g0 + t - 1, spp)
        ss.g_next = g0 + t - 1
        ranges.learn(rs, rrows, x[:, -1:], g0 + t - 1, lp)
        rs.g_next = g0 + t - 1

    tp = trend.TrendParams.from_detectors(p)
    ref = trend.reference(x)

    def trend_window() -> None:
        tst = trend.TrendState([], tp)
        trend.update(tst, tst.rows_for(devs), x, ref, g0, tp)

    tst = trend.TrendState([], tp)
    trows = tst.rows_for(devs)
    trend.update(tst, trows, x[:, :-p.block], ref[:-p.block], g0, tp)

    def trend_hour_end() -> None:  # the bin that closes an hour: the fit and verdict of every series
        c = trend.TrendState.__new__(trend.TrendState)
        c.__dict__ = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in tst.__dict__.items()}
        trend.update(c, trows, x[:, -p.block:-p.block + 1], ref[-p.block:-p.block + 1], g0 + t - p.block, tp)

    shp = shift.ShiftParams.from_detectors(p)

    def shift_window() -> None:
        sh = shift.ShiftState([], shp)
        shift.update(sh, sh.rows_for(devs), r, g0, shp)

    sh = shift.ShiftState([], shp)
    shrows = sh.rows_for(devs)
    shift.update(sh, shrows, r[:, :-1], g0, shp)

    def shift_bin() -> None:
        b = shift.ShiftState.__new__(shift.ShiftState)
        b.__dict__ = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sh.__dict__.items()}
        shift.update(b, shrows, r[:, -1:], g0 + t - 1, shp)

    xs = np.stack([x + rng.normal(0, 1, (s, t)) for _ in range(8)], axis=1)
    rows_out = [
        ("run_all, one field (baseline)", base),
        ("stateful charts, whole window (first pass)", timed(charts_window, 1)),
        ("charts + seasonal + ranges, one new bin (live pass)", timed(one_bin, 5)),
        ("trend test, whole window (first pass)", timed(trend_window, 1)),
        ("trend test, one new bin closing an hour (live pass)", timed(trend_hour_end, 5)),
        ("level-shift test, whole window (first pass)", timed(shift_window, 1)),
        ("level-shift test, one new bin (live pass)", timed(shift_bin, 5)),
        ("station PCA, 8 fields", timed(lambda: multivariate.multivariate(xs, g0, p.block, 1.0), 1)),
    ]
    print(f"{s} series x {t} bins (24 h at 1 min)")
    for name, sec in rows_out:
        print(f"{name:<55} {sec:8.3f} s  {sec / base:6.2f}x run_all")


if __name__ == "__main__":
    main()
