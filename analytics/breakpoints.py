"""Piecewise-linear index tables (ISPU, US AQI) evaluated over whole arrays at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Table:
    """Segments ``[c_lo[i], c_hi[i]] -> [i_lo[i], i_hi[i]]`` (concentration -> index).

    Concentrations between one segment's ``c_hi`` and the next one's ``c_lo`` (the
    EPA's 0.1-step gaps) belong to the upper segment, as the EPA's truncation rule
    implies. Above the last ``c_hi`` the index is capped at the last ``i_hi``.
    """

    c_lo: tuple[float, ...]
    c_hi: tuple[float, ...]
    i_lo: tuple[float, ...]
    i_hi: tuple[float, ...]

    def index(self, conc: np.ndarray) -> np.ndarray:
        c = np.asarray(conc, dtype=np.float64)
        c_lo, c_hi = np.asarray(self.c_lo), np.asarray(self.c_hi)
        i_lo, i_hi = np.asarray(self.i_lo), np.asarray(self.i_hi)
        seg = np.clip(np.searchsorted(c_lo, c, side="right") - 1, 0, len(c_lo) - 1)
        cl, ch, il, ih = c_lo[seg], c_hi[seg], i_lo[seg], i_hi[seg]
        with np.errstate(invalid="ignore"):
            val = (ih - il) / (ch - cl) * (np.minimum(c, ch) - cl) + il
            val = np.where(c > c_hi[-1], i_hi[-1], val)
            val = np.where(c < 0, np.nan, val)
        return val


def category_level(index: np.ndarray, upper_bounds: tuple[float, ...]) -> np.ndarray:
    """Level 1..len(upper_bounds)+1 of each (already rounded) index; 0 for NaN."""
    idx = np.asarray(index, dtype=np.float64)
    lvl = np.searchsorted(np.asarray(upper_bounds), idx, side="left") + 1
    return np.where(np.isnan(idx), 0, lvl).astype(np.int64)


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Index values are reported as integers, .5 rounding up (not numpy's banker's rounding)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)
