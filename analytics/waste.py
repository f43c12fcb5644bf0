"""Waste bins: fill-rate estimate, time-to-full forecast and tomorrow's collection order."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kotacerdas.standards import BIN_FILL_DUE


class BinForecast(NamedTuple):
    fill: np.ndarray  # (S,) % latest fill reading
    fill_rate: np.ndarray  # (S,) %/h, least-squares slope since the last emptying
    hours_to_full: np.ndarray  # (S,) h until `full_at` at that rate (inf if not filling)
    full_by_horizon: np.ndarray  # (S,) bool: full now or within the horizon
    priority: np.ndarray  # (S,) int rank, 1 = collect first


def forecast(fill: np.ndarray, step_s: float, *, horizon_h: float = 24.0, full_at: float = 100.0,
             full_now: float = BIN_FILL_DUE, empty_drop: float = 20.0, fit_window_h: float = 48.0) -> BinForecast:
    """Forecast every bin at once.

    fill: (S, T) fill level in % on a regular grid of ``step_s`` seconds, NaN = no reading.
    An emptying is a fall of more than ``empty_drop`` percentage points between
    consecutive readings; the rate is fitted only to readings since the last one,
    within the last ``fit_window_h`` hours. A bin at or above ``full_now`` % counts
    as full already.
    """
    s, t = fill.shape
    idx = np.arange(t)
    present = ~np.isnan(fill)
    # forward-filled series so a drop across a gap still counts as an emptying
    last_i = np.maximum.accumulate(np.where(present, idx, 0), axis=1)
    ff = np.take_along_axis(np.where(present, fill, 0.0), last_i, axis=1)
    drop = np.zeros((s, t), dtype=bool)
    drop[:, 1:] = (np.diff(ff, axis=1) < -empty_drop) & present[:, 1:]
    start = np.max(np.where(drop, idx, 0), axis=1)
    lo = np.maximum(start, t - int(fit_window_h * 3600 / step_s))
    m = present & (idx[None, :] >= lo[:, None])
    tt = np.where(m, idx * (step_s / 3600.0), 0.0)  # hours
    xx = np.where(m, fill, 0.0)
    n = m.sum(axis=1)
    st, sx = tt.sum(axis=1), xx.sum(axis=1)
    stt, stx = (tt * tt).sum(axis=1), (tt * xx).sum(axis=1)
    den = n * stt - st * st
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where((n >= 2) & (den > 0), (n * stx - st * sx) / den, np.nan)
        has = present.any(axis=1)
        now = np.where(has, fill[np.arange(s), last_i[:, -1]], np.nan)
        htf = np.where(rate > 0, np.maximum(full_at - now, 0.0) / rate, np.inf)
    htf = np.where(now >= full_now, 0.0, htf)
    full_by = (htf <= horizon_h) & has
    return BinForecast(now, rate, htf, full_by, priority(htf, now))


def priority(hours_to_full: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Rank 1..S: soonest full first, fuller first on ties; bins without data last."""
    h = np.where(np.isnan(hours_to_full), np.inf, hours_to_full)
    f = np.where(np.isnan(fill), -np.inf, fill)
    order = np.lexsort((-f, h))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def collection_list(devices: list[str], fc: BinForecast) -> list[dict]:
    """Tomorrow's rounds: the bins full within the horizon, in priority order."""
    rows = [
        {"device": d, "priority": int(fc.priority[i]), "fill": float(fc.fill[i]),
         "hours_to_full": float(fc.hours_to_full[i]), "fill_rate": float(fc.fill_rate[i])}
        for i, d in enumerate(devices) if fc.full_by_horizon[i]
    ]
    return sorted(rows, key=lambda r: r["priority"])
