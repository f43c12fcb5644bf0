"""Averaging periods with data completeness, shared by ISPU, US AQI and the evaluation harness.

A period's mean is the mean of its valid hourly means (an hour is valid with >= 75 % of its
readings); the period is complete with >= 75 % valid hours (18 of 24, 6 of 8, 1 of 1).
Rule and sources: kotacerdas/standards.py INDEX_COMPLETENESS (Directive 2008/50/EC Annex XI A;
40 CFR 50 App. N; adopted, not from the ISPU regulation).
Everything is computed at every time step over trailing windows, (S, T) in and out, with
one vectorised pass per hour of the period (no per-series loops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kotacerdas.standards import INDEX_COMPLETENESS

COMPLETE = INDEX_COMPLETENESS  # required share of readings in an hour, and of valid hours in a period


@dataclass(frozen=True)
class PeriodMean:
    conc: np.ndarray  # (S, T) mean of the valid hourly means (no valid hour yet: of the partial ones; NaN: no data)
    hours: np.ndarray  # (S, T) int: valid hourly means in the period
    samples: np.ndarray  # (S, T) int: readings in the period
    hours_needed: int  # valid hours for a complete period

    @property
    def provisional(self) -> np.ndarray:
        """(S, T) bool: fewer valid hours than the completeness rule asks."""
        return self.hours < self.hours_needed


def _trailing(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing sums and counts of non-NaN values over ``w`` steps, (S, T) each."""
    present = ~np.isnan(x)
    c = np.zeros((x.shape[0], x.shape[1] + 1))
    n = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(np.where(present, x, 0.0), axis=1, out=c[:, 1:])
    np.cumsum(present, axis=1, out=n[:, 1:])
    lo = np.maximum(np.arange(1, x.shape[1] + 1) - w, 0)
    return c[:, 1:] - c[:, lo], n[:, 1:] - n[:, lo]


def period_mean(x: np.ndarray, step_s: float, period_s: float) -> PeriodMean:
    """Trailing ``period_s`` average of ``x`` (S, T) sampled every ``step_s`` seconds."""
    x = np.asarray(x, dtype=np.float64)
    per_hour = max(int(round(3600 / step_s)), 1)
    n_hours = max(int(round(period_s / 3600)), 1)
    hsum, hcnt = _trailing(x, per_hour)
    with np.errstate(invalid="ignore", divide="ignore"):
        hmean = hsum / hcnt
    hvalid = hcnt >= math.ceil(COMPLETE * per_hour)
    s, t = x.shape
    tot = np.zeros((s, t))
    tot_any = np.zeros((s, t))  # partial hours too: the provisional value before any hour is valid
    n_any = np.zeros((s, t))
    hours = np.zeros((s, t), dtype=np.int64)
    samples = np.zeros((s, t), dtype=np.int64)
    for k in range(n_hours):  # the k-th hour back ends k hours before each time step
        sh = k * per_hour
        if sh >= t:
            break
        v = hvalid[:, : t - sh]
        tot[:, sh:] += np.where(v, hmean[:, : t - sh], 0.0)
        has = hcnt[:, : t - sh] > 0
        tot_any[:, sh:] += np.where(has, hmean[:, : t - sh], 0.0)
        n_any[:, sh:] += has
        hours[:, sh:] += v
        samples[:, sh:] += hcnt[:, : t - sh].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conc = np.where(hours > 0, tot / np.maximum(hours, 1), np.where(n_any > 0, tot_any / n_any, np.nan))
    return PeriodMean(conc, hours, samples, math.ceil(COMPLETE * n_hours))
