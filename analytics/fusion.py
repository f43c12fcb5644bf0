"""Tail probabilities of detector scores: how unusual a score is for *this* test on *this* series.

Scores of different tests are in different units (a spike in field units, a rate of change in
units/s, a CUSUM sum, robust sigmas): comparing them raw says nothing about which alarm is the
stronger one. Here each test's score is mapped to a tail probability under its own null, the
same test's scores on the same series in the previous ``k`` blocks (:mod:`analytics.baseline`,
blocks aligned to grid time, so a live pass gives what a batch run gives): per block the 50th, 90th
and 99th percentiles of |score|, their medians over the previous blocks, log10 p interpolated
linearly between (q50, 0.5), (q90, 0.1) and (q99, 0.01), and beyond q99 an exponential tail, one
more decade per (q99 - q90) (the tail through q90 and q99: a peaks-over-threshold fit with the
exponential shape). Returned as the surprise -log10 p (0.3 at or below the median).

Shapes: score (S, T); result (S, T) float64, NaN without ``min_blocks`` usable past blocks.
"""

from __future__ import annotations

import numpy as np

from analytics import baseline as bl

QS = (0.5, 0.9, 0.99)
MAX_SURPRISE = 300.0  # p = 1e-300: a score far beyond a test that never moves


def surprise(score: np.ndarray, g0: int, block: int, k: int = 6, min_blocks: int = 2) -> np.ndarray:
    """-log10 of the tail probability of each |score| (S, T) against the previous ``k`` blocks' scores."""
    a = np.abs(np.asarray(score, dtype=np.float64))
    blocks = bl.Blocks(a.shape[1], g0, block)
    r50, r90, r99 = (blocks.expand(bl.trailing(q, k, min_blocks)) for q in bl.block_quantiles(blocks, a, QS))
    lo50 = -np.log10(0.5)
    eps = 1e-9 + 1e-6 * np.abs(r99)  # a test whose scores sit still: any step beyond is far in the tail
    with np.errstate(invalid="ignore", divide="ignore"):
        w1 = np.maximum(r90 - r50, eps)
        w2 = np.maximum(r99 - r90, eps)
        out = np.where(a <= r50, lo50,
                       np.where(a <= r90, lo50 + (a - r50) / w1 * (1.0 - lo50),
                                np.where(a <= r99, 1.0 + (a - r90) / w2, 2.0 + (a - r99) / w2)))
    out = np.minimum(out, MAX_SURPRISE)
    out[np.isnan(r99) | np.isnan(a)] = np.nan
    return out


__all__ = ["MAX_SURPRISE", "QS", "surprise"]
