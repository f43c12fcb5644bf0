"""Trailing baselines over blocks aligned to absolute grid time: what makes a live pass equal a batch run.

The service's live loop re-reads a sliding window every pass and writes only its newest bins.
A detector whose reference is "the first half of the window" or "the whole window" therefore
gives a bin one verdict live and another in a batch run over the same data. Here every
reference is built from *blocks* of ``b`` grid samples aligned to absolute grid time
(block id = grid index // b, grid index = time // step): each block gets its robust
statistics (median, MAD, ...) once, and the samples of block ``j`` are judged against the
median of those statistics over the previous ``k`` blocks ``j-k .. j-1``. A sample's verdict
thus depends only on data up to itself (plus, for the spike test, one step after it) and on
blocks that lie wholly inside any window at least ``(k + 2) * b`` samples long.

Blocks cut by the window's start and blocks with fewer than half their samples present are
not used. A sample without at least ``min_blocks`` usable blocks behind it has no baseline
(NaN): the detectors say NOT_EVALUATED there (warm-up after start or after an outage).

Arrays are (S, T) as everywhere in analytics; block statistics are (S, NB).
"""

from __future__ import annotations

import numpy as np

from analytics.qc import _median_last, alternate_inf

BLOCK_S = 3600.0  # a block is an hour of readings ...
MIN_BLOCK_SAMPLES = 4  # ... and never fewer than this many grid samples


def block_len(step_s: float, block_s: float = BLOCK_S) -> int:
    """Samples per block for a grid step (seconds)."""
    return max(int(round(block_s / float(step_s))), MIN_BLOCK_SAMPLES)


class Blocks:
    """The block layout of a window of ``t`` samples whose column 0 is grid index ``g0``.

    ``lead``: samples of the first block that lie before column 0; ``nb``: blocks touched.
    """

    __slots__ = ("t", "b", "lead", "nb")

    def __init__(self, t: int, g0: int, b: int):
        self.t, self.b = int(t), int(b)
        self.lead = int(g0) % self.b
        self.nb = -(-(self.lead + self.t) // self.b)

    def tiles(self, a: np.ndarray) -> np.ndarray:
        """(S, T) -> (S, NB, b) copy, NaN before column 0 and after the last column."""
        s = a.shape[0]
        out = np.full((s, self.nb * self.b), np.nan, dtype=a.dtype)
        out[:, self.lead : self.lead + self.t] = a
        return out.reshape(s, self.nb, self.b)

    def expand(self, v: np.ndarray) -> np.ndarray:
        """(S, NB) per-block values -> (S, T): every sample takes its block's value."""
        return np.repeat(v, self.b, axis=1)[:, self.lead : self.lead + self.t]

    def usable(self, n_present: np.ndarray) -> np.ndarray:
        """(S, NB) bool: a block is used when at least half of it is present and the window holds all of it."""
        ok = n_present * 2 >= self.b
        if self.lead:
            ok[:, 0] = False  # cut by the window's start: its statistics would differ from a longer window's
        return ok


def block_median_mad(blocks: Blocks, a: np.ndarray, *, mad: bool = True, abs_values: bool = False,
                     tail_q: float | None = None):
    """Per-block median (and MAD around it) of ``a`` (S, T), NaN-aware, each (S, NB); and the present counts.

    ``tail_q``: also the ``tail_q`` quantile of |a - median| per block (a heavy tail's width:
    bursty series have a small MAD and a wide tail), a fourth element.
    ``abs_values``: take the statistics of |a| (e.g. the median absolute step).
    """
    tl = blocks.tiles(a)
    if abs_values:
        np.abs(tl, out=tl)
    nan = np.isnan(tl)
    n = blocks.b - nan.sum(axis=2)
    nan_pos = np.flatnonzero(nan)
    work = tl.copy() if mad else tl
    if len(nan_pos):
        alternate_inf(work, nan_pos)  # +/-inf pairs keep the median of the readings (see qc.nanmedian_fast)
    med = _median_last(work, overwrite=True)
    ok = blocks.usable(n)
    med[~ok] = np.nan
    if not mad:
        return med, None, n
    dev = np.subtract(tl, med[..., None])
    np.abs(dev, out=dev)
    if len(nan_pos):
        alternate_inf(dev, nan_pos)
    d = _median_last(dev, overwrite=True)
    d[~ok] = np.nan
    if tail_q is None:
        return med, d, n
    # dev is sorted now when the block is short (see qc._median_last); else sort it. The
    # -inf of the NaN rule sit in front: floor(missing / 2) of them
    if blocks.b > 512:
        dev.sort(axis=-1)
    lead_inf = (blocks.b - n) // 2
    pos = np.minimum(lead_inf + (tail_q * np.maximum(n - 1, 0)).astype(np.int64), blocks.b - 1)
    q = np.take_along_axis(dev, pos[..., None], axis=-1)[..., 0]
    q[~ok] = np.nan
    return med, d, n, q


def block_quantiles(blocks: Blocks, a: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Per-block quantiles ``qs`` of ``a`` (S, T), NaN-aware (lower order statistic), each (S, NB);
    NaN for unusable blocks (see :meth:`Blocks.usable`). One sort of each block's samples."""
    tl = blocks.tiles(a)
    nan = np.isnan(tl)
    n = blocks.b - nan.sum(axis=2)
    tl[nan] = np.inf  # missing samples sort last
    tl.sort(axis=-1)
    ok = blocks.usable(n)
    out = []
    for q in qs:
        pos = (q * np.maximum(n - 1, 0)).astype(np.int64)
        v = np.take_along_axis(tl, pos[..., None], axis=-1)[..., 0]
        v[~ok] = np.nan
        out.append(v)
    return out


def _network_sort(a: np.ndarray) -> None:
    """Sort (k, ...) along axis 0 in place by odd-even transposition: k rounds of elementwise
    min/max over whole (...) slices. For the handful of blocks behind a sample this is far
    cheaper than numpy's sort over millions of tiny rows."""
    k = a.shape[0]
    lo = np.empty_like(a[0])
    for r in range(k):
        for i in range(r % 2, k - 1, 2):
            np.minimum(a[i], a[i + 1], out=lo)
            np.maximum(a[i], a[i + 1], out=a[i + 1])
            a[i] = lo


def _middle(a: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Median of the first ``cnt`` entries along axis 0 of a sorted (k, ...) array.

    Nearly every cell has all k entries: that case is two slices; the rest are patched per count.
    """
    k = a.shape[0]
    with np.errstate(invalid="ignore"):
        out = 0.5 * (a[(k - 1) // 2] + a[k // 2])
        for c in range(1, k):
            m = cnt == c
            if m.any():
                out[m] = 0.5 * (a[(c - 1) // 2][m] + a[c // 2][m])
    return out


def block_mean(blocks: Blocks, a: np.ndarray) -> np.ndarray:
    """Per-block mean of ``a`` (S, T), NaN-aware, (S, NB); NaN for unusable blocks (see :meth:`Blocks.usable`).

    For series that are smooth already (an EWMA, a moving average) a block mean is as good
    a summary as a median, and one pass instead of a sort.
    """
    tl = blocks.tiles(a)
    nan = np.isnan(tl)
    n = blocks.b - nan.sum(axis=2)
    tl[nan] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = tl.sum(axis=2) / n
    out[~blocks.usable(n)] = np.nan
    return out


def trailing(v: np.ndarray, k: int, min_blocks: int = 1, with_mad: bool = False, stride: int = 1):
    """Median of the usable (non-NaN) block values over the previous ``k`` blocks, (S, NB) -> (S, NB).

    Block ``j`` gets the median over ``j-k .. j-1`` (never itself: a block is judged by
    its past only); NaN where fewer than ``min_blocks`` of them are usable.
    ``with_mad``: also return the median absolute deviation of those block values from it
    (how much the block statistic itself moves from block to block). ``stride``: use every
    ``stride``-th of the previous ``k * stride`` blocks (a long baseline at the cost of a short one).
    """
    s, nb = v.shape
    k = max(int(k), 1)
    span = k * stride
    pad = np.full((s, nb + span), np.inf, dtype=v.dtype)
    np.copyto(pad[:, span:], v)
    np.copyto(pad[:, span:], np.inf, where=np.isnan(v))  # unusable blocks sort last
    if k == 1 and not with_mad:
        out = pad[:, stride - 1 : stride - 1 + nb].copy()
        out[~np.isfinite(out)] = np.nan
        if min_blocks > 1:
            out[...] = np.nan
        return out
    win = np.stack([pad[:, i : i + nb] for i in range(stride - 1, span, stride)])  # (k, S, NB): j-span .. j-1
    cnt = np.isfinite(win).sum(axis=0)
    _network_sort(win)
    out = _middle(win, cnt)
    bad = cnt < max(min_blocks, 1)
    out[bad] = np.nan
    if not with_mad:
        return out
    dev = np.subtract(win, out[None])
    np.abs(dev, out=dev)
    np.fmin(dev, np.inf, out=dev)  # NaN (inf - inf, or no level) -> inf: sorts last like an unusable block
    _network_sort(dev)
    mad = _middle(dev, cnt)
    mad[bad] = np.nan
    return out, mad


__all__ = ["BLOCK_S", "Blocks", "block_len", "block_mean", "block_quantiles", "block_median_mad", "trailing"]
