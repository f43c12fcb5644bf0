"""Resample irregular telemetry points onto a regular time grid.

Every detector works on arrays shaped ``(series, time)`` with NaN for "no reading",
so irregular sampling, duplicates and gaps are resolved once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``t0_ms + step_ms * arange(n)`` (bin starts, ms since epoch)."""

    t0_ms: int
    step_ms: int
    n: int

    @property
    def times_ms(self) -> np.ndarray:
        """Shape (n,), int64 ms: the start of each bin."""
        return self.t0_ms + self.step_ms * np.arange(self.n, dtype=np.int64)

    @classmethod
    def covering(cls, start_ms: int, end_ms: int, step_ms: int) -> "Grid":
        """Bins aligned to multiples of ``step_ms`` covering [start_ms, end_ms]."""
        t0 = (int(start_ms) // step_ms) * step_ms
        n = int((int(end_ms) - t0) // step_ms) + 1
        return cls(t0, int(step_ms), max(n, 1))


def to_grid(
    series_index: np.ndarray,
    t_ms: np.ndarray,
    values: np.ndarray,
    n_series: int,
    grid: Grid,
    how: str = "mean",
) -> np.ndarray:
    """Bin flat points onto ``grid``.

    series_index: shape (P,), int row of each point in the output.
    t_ms: shape (P,), int64 ms timestamps (any order; out-of-grid points are dropped).
    values: shape (P,), float; NaN values are ignored.
    how: "mean" (several points in a bin are averaged) or "last" (latest timestamp wins).
    Returns (n_series, grid.n) float64 with NaN where a bin had no reading.
    """
    si = np.asarray(series_index, dtype=np.int64)
    t = np.asarray(t_ms, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    b = (t - grid.t0_ms) // grid.step_ms
    ok = (b >= 0) & (b < grid.n) & ~np.isnan(v) & (si >= 0) & (si < n_series)
    si, b, v, t = si[ok], b[ok], v[ok], t[ok]
    flat = si * grid.n + b
    size = n_series * grid.n
    if how == "mean":
        s = np.bincount(flat, weights=v, minlength=size)
        c = np.bincount(flat, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = s / c
        return out.reshape(n_series, grid.n)
    if how == "last":
        out = np.full(size, np.nan)
        order = np.lexsort((t, flat))  # by bin, then time: the last write per bin is the latest
        out[flat[order]] = v[order]
        return out.reshape(n_series, grid.n)
    raise ValueError(f"unknown aggregation {how!r}")


def stack_series(series: Sequence[tuple[np.ndarray, np.ndarray]], grid: Grid, how: str = "mean") -> np.ndarray:
    """Convenience: a list of per-series ``(t_ms, values)`` pairs -> (len(series), grid.n)."""
    if not series:
        return np.empty((0, grid.n))
    idx = np.concatenate([np.full(len(t), i, dtype=np.int64) for i, (t, _) in enumerate(series)])
    t = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in series])
    v = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series])
    return to_grid(idx, t, v, len(series), grid, how)
