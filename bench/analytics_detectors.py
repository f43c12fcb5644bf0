"""Benchmark: the full analytics detector set over 10,000 series x 1,440 points.

Compared in the same run against a per-series pandas/Python loop doing the same
computations (gross range, flat line, spike, rate of change, gap, drift against
the cross-series median, Hampel rolling median/MAD, EWMA chart, CUSUM, time-of-day
baseline). The baseline is timed on a subset of series and extrapolated
linearly (it is a per-series loop, so its cost is linear in the series count).

    .venv/bin/python bench/analytics_detectors.py [--series 10000] [--points 1440] [--baseline-series 200]
        [--workers N] [--system-malloc]

Like the analytics service, the benchmark keeps freed memory in the process
(analytics/memory.py); ``--system-malloc`` measures with glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from analytics import alarmset
from analytics.detectors import QcParams, StatParams, run_all
from analytics.memory import retain_freed_memory


def synthetic(s: int, t: int, step_s: int, seed: int = 7) -> np.ndarray:
    """Diurnal signal + noise, 1 % missing, a few spikes/flatlines/offsets: realistic branch mix."""
    rng = np.random.default_rng(seed)
    tt = np.arange(t) * step_s
    x = 35 + 10 * np.sin(2 * np.pi * tt / 86400)[None, :] + rng.normal(0, 2, (s, t))
    x = np.round(x)  # PMS5003-like 1 ug/m3 resolution
    x[rng.random((s, t)) < 0.01] = np.nan
    rows = rng.integers(0, s, s // 20)
    cols = rng.integers(1, t - 1, s // 20)
    x[rows, cols] += 200
    for r in rng.integers(0, s, s // 50):
        c = rng.integers(0, t - 200)
        x[r, c : c + 150] = x[r, c]
    return x


def baseline(x: np.ndarray, p: QcParams, sp: StatParams, t0_ms: int) -> dict[int, tuple]:
    """The same detectors, one series at a time with pandas (the way a notebook would do it)."""
    ref = pd.DataFrame(x.T).median(axis=1, skipna=True)  # cross-series median (drift needs all neighbours)
    slot = ((t0_ms // 1000 + np.arange(x.shape[1]) * p.step_s) % 86400 // p.step_s).astype(int)
    flags: dict[int, tuple] = {}
    n_ref = x.shape[1] // 2
    for i in range(x.shape[0]):
        s = pd.Series(x[i])
        gr = (s < p.suspect_lo) | (s > p.suspect_hi)
        same = s.diff().abs() <= p.resolution * 0.5
        flat = same.groupby((~same).cumsum()).cumsum()
        scale = max(1.4826 * s.diff().abs().median(), 2 * p.resolution)
        spike = (s - (s.shift(1) + s.shift(-1)) / 2).abs() - (s.shift(-1) - s.shift(1)).abs() / 2
        roc = s.diff().abs() / p.step_s
        miss = s.isna()
        gap = miss.groupby((~miss).cumsum()).cumsum()
        r = s - ref
        drift = r.rolling(p.drift_window, min_periods=1).mean() - r.iloc[: x.shape[1] // 3].median()
        med = s.rolling(60, center=True, min_periods=1).median()
        mad = (s - med).abs().rolling(60, center=True, min_periods=1).median()
        hampel = (s - med).abs() / np.maximum(1.4826 * mad, p.resolution)
        m0 = s.iloc[:n_ref].median()
        sc0 = max(1.4826 * (s.iloc[:n_ref] - m0).abs().median(), p.resolution)
        z = ((s - m0) / sc0).fillna(0.0)
        ew = z.ewm(alpha=sp.ewma_alpha, adjust=False).mean()
        c = (z - sp.cusum_k).cumsum()
        hi = c - np.minimum(c.cummin(), 0)
        c2 = (-z - sp.cusum_k).cumsum()
        lo = c2 - np.minimum(c2.cummin(), 0)
        base = s.groupby(slot).transform("median")
        resid = s - base
        seas = resid.abs() / max(1.4826 * resid.abs().median(), p.resolution)
        flags[i] = (gr.sum(), flat.max(), (spike > 6 * scale).sum(), (roc > 8 * scale / p.step_s).sum(),
                    gap.max(), drift.abs().max(), (hampel > 5).sum(), ew.abs().max(), np.maximum(hi, lo).max(),
                    (seas > 5).sum())
    return flags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_440)
    ap.add_argument("--step", type=int, default=300, help="grid step s (1440 x 300 s = 5 days: seasonal applies)")
    ap.add_argument("--baseline-series", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="threads for the vectorised run (default 1)")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's allocator settings alone (the analytics service keeps freed memory: "
                         "analytics/memory.py)")
    a = ap.parse_args()
    retained = False if a.system_malloc else retain_freed_memory()
    x = synthetic(a.series, a.points, a.step)
    p = QcParams(0, 1000, 0, 500, 1.0, float(a.step))
    sp = StatParams()
    t0 = 1_763_856_000_000
    # warm-up at full size: imports, and the first touch of ~1 GB of fresh memory (outputs and
    # temporaries), which on this VM costs up to ~2 s of kernel time once and says nothing about
    # the detectors; every timed run then gets memory the process already used
    res = run_all(x, p, t0, workers=a.workers)
    times, cpu = [], []
    for _ in range(a.repeat):
        del res  # the previous run's results are released first, as a service's previous pass would be
        t, c = time.perf_counter(), time.process_time()
        res = run_all(x, p, t0, workers=a.workers)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    best = min(times)
    pts = a.series * a.points
    # what the service computes of run_all by default: the tests it writes (analytics/alarmset.py);
    # EWMA / CUSUM / seasonal come from the stateful charts (bench/analytics_stateful.py)
    service = alarmset.written() - {"ewma", "cusum", "seasonal"}
    del res
    st_times, st_cpu = [], []
    for _ in range(a.repeat):
        t, c = time.perf_counter(), time.process_time()
        res = run_all(x, p, t0, workers=a.workers, tests=service)
        st_times.append(time.perf_counter() - t)
        st_cpu.append(time.process_time() - c)
        service_names = list(res)
        del res
    sub = x[: a.baseline_series]
    t, c = time.perf_counter(), time.process_time()
    baseline(sub, p, sp, t0)
    tb = (time.perf_counter() - t) * a.series / a.baseline_series
    cb = (time.process_time() - c) * a.series / a.baseline_series
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start of the baseline")
    print(f"the service's default set ({', '.join(service_names)}), same data, best of "
          f"{a.repeat}: {min(st_times):.2f} s wall, {min(st_cpu):.2f} s CPU ({min(st_cpu) / min(cpu):.2f}x the full set)")
    print(f"detectors: 10 (full set); threads: {a.workers or 1}; "
          f"freed memory {'kept in the process' if retained else 'returned to the system (glibc defaults)'}")
    print(f"vectorised: {a.series} x {a.points} = {pts / 1e6:.1f} M points, best of {a.repeat}: {best:.2f} s "
          f"({pts / best / 1e6:.1f} M points/s); runs: {', '.join(f'{v:.2f}' for v in times)}")
    print(f"baseline (per-series pandas loop) on {a.baseline_series} series, extrapolated x{a.series / a.baseline_series:.0f}: "
          f"{tb:.1f} s ({pts / tb / 1e6:.2f} M points/s)")
    print(f"CPU time (this process; the machine is shared): vectorised best {min(cpu):.2f} s, "
          f"baseline extrapolated {cb:.1f} s, ratio {cb / min(cpu):.0f}x")
    print(f"speed-up: {tb / best:.0f}x; target >= 50x and < 2 s: "
          f"{'MET' if tb / best >= 50 and best < 2 else 'NOT MET'}")


if __name__ == "__main__":
    main()
