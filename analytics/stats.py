"""Statistical change and outlier detectors over arrays shaped (series, time).

Robust rolling z-score / Hampel (median and MAD), EWMA and CUSUM control charts,
and time-of-day (seasonal) baseline residuals. All NaN-aware; all return
:class:`analytics.qc.QcResult` (QARTOD flags 1/2/3/4/9 plus a score in robust
standard deviations) with the input's shape.

Speed: a median filter evaluated at every sample is the expensive part (scipy's
runs at ~1.4 M points/s here). The Hampel filter below takes medians over
windows that advance by a *hop* (default a whole window: adjacent blocks) and assigns each
sample the statistics of the window centred nearest to it: the median of a
60-sample window barely moves in 15 samples, and the cost drops by the hop. Adjacent
windows are a reshape of the series (no window copies) and short rows are sorted (numpy's
SIMD sort) rather than partitioned. EWMA and CUSUM scan time in blocks of
:data:`SCAN_BLOCK` samples (:func:`time_blocks`): ``bs`` vectorised steps inside every block
at once, then one carry per block, instead of a scan over 1,440 samples per row.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from analytics import baseline as bl
from analytics.qc import (FAIL, MISSING, NOT_EVALUATED, SUSPECT, Prepared, QcResult, _deliver, _median_last, _prep,
                          _result, _threshold_flags, alternate_inf, rolling_mean, row_median)

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution * 1.4826 = its standard deviation
TAIL_Q, TAIL_TO_SIGMA = 0.9, 1.645  # 90th percentile of |x - median| of a normal distribution = 1.645 sigma
SCAN_BLOCK = 32  # samples per time block of the blocked scans (EWMA, CUSUM)


def _window_median_mad(x: np.ndarray, window: int, hop: int | None):
    """Median and MAD (field units) of windows of ``window`` samples starting every ``hop`` samples.

    Returns (med, mad) shaped (S, B), the window starts (B,), the window length, and
    whether the windows tile the series exactly (then window b covers samples b*w .. b*w+w-1).
    """
    s, t = x.shape
    w = max(min(int(window), t), 1)
    h = max(int(hop or w), 1)
    starts = np.arange(0, t - w + 1, h)
    if starts[-1] != t - w:
        starts = np.append(starts, t - w)
    nb = len(starts)
    tiles = h == w and t % w == 0  # adjacent windows: a reshape, no window copies
    med = np.empty((s, nb), dtype=x.dtype)
    mad = np.empty((s, nb), dtype=x.dtype)
    rows = max((1 << 22) // (nb * w * x.itemsize), 1)  # ~4 MB of window copies at a time
    for i in range(0, s, rows):  # a few dozen blocks, each one vectorised call
        xs = x[i : i + rows]

        def windows() -> np.ndarray:  # (r, B, w): a view when the windows tile, else a copy
            return xs.reshape(len(xs), nb, w) if tiles else sliding_window_view(xs, w, axis=1)[:, starts]
        blk = np.array(windows(), order="C")  # partitioned in place
        nan_pos = np.flatnonzero(np.isnan(blk))
        if len(nan_pos):
            alternate_inf(blk, nan_pos)  # see qc.nanmedian_fast: +/-inf pairs keep the median
        m = _median_last(blk, overwrite=True)
        dev = np.subtract(windows(), m[..., None])
        np.abs(dev, out=dev)
        if len(nan_pos):
            alternate_inf(dev, nan_pos)
        d = _median_last(dev, overwrite=True)
        if len(nan_pos):
            bad = ~np.isfinite(m)  # all NaN, or more NaN than readings
            m[bad] = np.nan
            d[bad | ~np.isfinite(d)] = np.nan
        med[i : i + rows], mad[i : i + rows] = m, d
    return med, mad, starts, w, tiles


def _nearest_window(starts: np.ndarray, w: int, t: int) -> np.ndarray:
    """Samples per window when each sample takes the window centred nearest to it, (B,)."""
    centres = starts + (w - 1) / 2.0
    mids = (centres[:-1] + centres[1:]) / 2.0
    b = np.searchsorted(mids, np.arange(t), side="left")  # the window index never decreases along time
    return np.bincount(b, minlength=len(starts))


def rolling_median_mad(x: np.ndarray, window: int, hop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centred rolling median and MAD (field units), each (S, T), evaluated every ``hop`` samples.

    window: samples per window (clipped to T); hop: samples between evaluated
    windows (default = window: adjacent blocks; 1 = an exact rolling median).
    Each sample takes the statistics of the window centred nearest to it.
    """
    med, mad, starts, w, _ = _window_median_mad(x, window, hop)
    counts = _nearest_window(starts, w, x.shape[1])
    return np.repeat(med, counts, axis=1), np.repeat(mad, counts, axis=1)


def hampel(x: np.ndarray, g0: int, block: int, k_scale: int = 6, suspect_z: float = 4.0, fail_z: float = 8.0,
           floor: float = 0.0, min_blocks: int = 2, recent: int = 0, *, prep: Prepared | None = None,
           out: QcResult | None = None) -> QcResult:
    """Causal Hampel identifier / robust z against the trailing baseline.

    score = |x - median of the previous block| / scale, robust standard deviations; scale =
    1.4826 * the larger of the median of the previous ``k_scale`` blocks' MADs and the MAD of
    their medians (noise within a block, and how much the level moves between blocks); never below
    ``floor`` (field units, e.g. the sensor resolution). Blocks of ``block`` samples are aligned
    to absolute grid time (``g0`` = grid index of column 0; :mod:`analytics.baseline`), so the
    verdict on a sample depends on its past only: a live pass gives what a batch run gives.
    Without a baseline (warm-up, after an outage): 2, not evaluated. ``recent`` > 0: the scale is
    at least the spread of the last ``recent`` steps before the sample.
    """
    pr = _prep(x, prep)
    blocks = bl.Blocks(x.shape[1], g0, block)
    med, mad, _, tail = bl.block_median_mad(blocks, x, tail_q=TAIL_Q)
    level = bl.trailing(med, 1, 1)
    # the scale is the largest of: the noise inside a block (MAD), the width of its tail (a
    # bursty, heavy-tailed series has a small MAD and many large deviations: its 90th
    # percentile of |x - median| / 1.645 is what the MAD would be if it were normal), and how
    # far the block medians move from block to block (a level wandering with the weather is
    # no outlier); never below floor
    moves = bl.trailing(med, k_scale, min_blocks, with_mad=True)[1]
    scale = np.fmax(MAD_TO_SIGMA * bl.trailing(mad, k_scale, min_blocks), MAD_TO_SIGMA * moves)
    scale = np.fmax(scale, bl.trailing(tail, k_scale, min_blocks) / TAIL_TO_SIGMA)
    scale = np.maximum(scale, max(floor, 1e-12))
    res = _result(x, out)
    sc = blocks.expand(scale.astype(x.dtype))
    if recent:
        # at least the noise of the last `recent` steps (sigma of x = sigma of a step / sqrt 2): after
        # a stuck stretch the blocks behind a sample say "no noise", and every normal reading of a
        # sensor back in service would be an outlier
        near = np.empty_like(sc)
        near[:, 0] = np.nan
        near[:, 1:] = rolling_mean(pr.step, recent)[:, :-1]
        near *= 1.2533 / np.sqrt(2.0)
        np.copyto(near, 0.0, where=np.isnan(near))
        np.maximum(sc, near, out=sc)  # NaN (no baseline: warm-up) stays NaN
    np.subtract(x, blocks.expand(level), out=res.score)
    np.abs(res.score, out=res.score)
    np.divide(res.score, sc, out=res.score)
    _threshold_flags(res.flag, res.score, suspect_z, fail_z, pr.missing)  # NaN: missing (9) or no baseline (2)
    return _deliver(res, out)


def standardise(x: np.ndarray, g0: int, block: int, k: int = 6, min_blocks: int = 2,
                floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust z of x against its trailing baseline: (x - level) / (1.4826 * MAD), each from the
    medians of the previous ``k`` blocks' medians / MADs (:mod:`analytics.baseline`).

    Returns (z, evaluated): z (S, T) with missing readings and samples without a baseline set
    to 0 (no evidence), and the (S, T) mask of samples that have a baseline. Shared input of
    :func:`ewma_chart` and :func:`cusum`.
    """
    blocks = bl.Blocks(x.shape[1], g0, block)
    med, mad, _ = bl.block_median_mad(blocks, x)
    lvl, moves = bl.trailing(med, k, min_blocks, with_mad=True)
    # noise within blocks, or how far the level moves between blocks, whichever is larger (see hampel)
    scale = np.fmax(MAD_TO_SIGMA * bl.trailing(mad, k, min_blocks), MAD_TO_SIGMA * moves)
    level = blocks.expand(lvl)
    scale = blocks.expand(np.maximum(scale, max(floor, 1e-12)))
    z = (x - level) / scale
    evaluated = ~np.isnan(level)
    np.copyto(z, 0.0, where=np.isnan(z))
    return z.astype(x.dtype, copy=False), evaluated


def ffill(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Carry the last reading forward over gaps (``fill`` before the first reading)."""
    present = ~np.isnan(x)
    idx = np.maximum.accumulate(np.where(present, np.arange(x.shape[1]), 0), axis=1)
    out = np.take_along_axis(x, idx, axis=1)
    return np.where(np.isnan(out), fill, out)


def time_blocks(a: np.ndarray, bs: int = SCAN_BLOCK, fill: float = 0.0) -> np.ndarray:
    """(S, T) -> (bs, S, B) copy, B = ceil(T / bs): time cut into blocks of ``bs`` samples with the
    position inside the block leading, so a scan along time is ``bs`` steps over contiguous
    (S, B) slices instead of T steps over rows. The end is padded with ``fill``."""
    s, t = a.shape
    nb = -(-t // bs)
    if nb * bs != t:
        padded = np.full((s, nb * bs), fill, dtype=a.dtype)
        padded[:, :t] = a
        a = padded
    out = np.empty((bs, s, nb), dtype=a.dtype)
    np.copyto(out, a.reshape(s, nb, bs).transpose(2, 0, 1))
    return out


def from_time_blocks(b: np.ndarray, t: int, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`time_blocks`: (bs, S, B) -> (S, T) (into ``out`` when given)."""
    bs, s, nb = b.shape
    if out is None:
        out = np.empty((s, t), dtype=b.dtype)
    if nb * bs == t and out.flags.c_contiguous:
        np.copyto(out.reshape(s, nb, bs), b.transpose(1, 2, 0))
    else:
        out[...] = b.transpose(1, 2, 0).reshape(s, nb * bs)[:, :t]
    return out


def _ewma_blocks(zb: np.ndarray, alpha: float, before: np.ndarray) -> np.ndarray:
    """EWMA y_t = alpha * z_t + (1 - alpha) * y_{t-1} over time blocks (see :func:`time_blocks`).

    ``before``: (S,) the state before the first sample. Within each block the recursion
    runs from a zero state (bs vectorised steps); each block then adds the decayed end
    state of the previous one.
    """
    bs, s, nb = zb.shape
    beta = 1.0 - alpha
    y = np.multiply(zb, alpha)
    tmp = np.empty_like(y[0])
    for i in range(1, bs):  # bs steps, each over every series and block at once
        np.multiply(y[i - 1], beta, out=tmp)
        y[i] += tmp
    ends = y[-1]  # (S, B) local end states
    carry = np.empty((s, nb), dtype=y.dtype)  # true state before each block
    state = before.astype(y.dtype)
    decay = beta ** bs
    for k in range(nb):  # B steps over (S,) vectors
        carry[:, k] = state
        state = ends[:, k] + decay * state
    powers = (beta ** np.arange(1, bs + 1)).astype(y.dtype)
    y += powers[:, None, None] * carry  # (bs, 1, 1) * (S, B): contiguous broadcast
    return y


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted moving average along time (gaps hold the last value), (S, T)."""
    xf = ffill(x) if np.isnan(x).any() else x
    first = xf[:, :1]
    zi = (1 - alpha) * first  # start at the first value, not at 0
    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], xf, axis=1, zi=zi)
    return y


def ewma_chart(x: np.ndarray, g0: int, block: int, alpha: float = 0.1, suspect_l: float = 3.0, fail_l: float = 5.0,
               k: int = 6, min_blocks: int = 2, floor: float = 0.0,
               z: tuple[np.ndarray, np.ndarray] | None = None, *, prep: Prepared | None = None,
               out: QcResult | None = None) -> QcResult:
    """EWMA control chart on the trailing-baseline z of x (:func:`standardise`).

    score = |EWMA of z| in units of the EWMA's own spread over the previous ``k`` blocks
    (1.4826 * the median of the blocks' mean |EWMA|; at least the white-noise value
    sqrt(alpha / (2 - alpha)): real residuals are autocorrelated and the white-noise formula
    alone flags everything): > suspect_l -> 3, > fail_l -> 4. Catches small persistent
    shifts (offsets, slow contamination) that a point-wise test misses. The EWMA starts from
    0 at the window's start; its memory (~ 1/alpha samples) is far shorter than the warm-up,
    so a longer window gives the same values within rounding. 2 where there is no baseline.
    ``z``: (z, evaluated) from :func:`standardise` (shared with :func:`cusum`).
    """
    s, t = x.shape
    zz, evaluated = z if z is not None else standardise(x, g0, block, k, min_blocks, floor)
    res = _result(x, out)
    e = from_time_blocks(_ewma_blocks(time_blocks(zz), alpha, np.zeros(s)), t, out=res.score)
    np.abs(e, out=e)
    blocks = bl.Blocks(t, g0, block)
    spread = bl.block_mean(blocks, e)  # |EWMA| is smooth: a block mean summarises it
    spread = np.maximum(MAD_TO_SIGMA * bl.trailing(spread, k, min_blocks), np.sqrt(alpha / (2.0 - alpha)))
    e /= blocks.expand(spread.astype(e.dtype))
    pr = _prep(x, prep)
    e[~evaluated] = np.nan
    e += pr.nan0
    _threshold_flags(res.flag, e, suspect_l, fail_l, pr.missing)
    return _deliver(res, out)


def restarted_cusum(z: np.ndarray, k: float, g0: int, w: int, phases: tuple[int, ...] = (0,)) -> np.ndarray:
    """Two-sided tabular CUSUM max(S+, S-) of ``z`` (S, T) that restarts from 0 every ``w`` samples, (S, T).

    S+_t = max(0, S+_{t-1} + z_t - k), S-_t = max(0, S-_{t-1} - z_t - k), restarted from 0 at
    grid indices (column index + ``g0``) that are multiples of ``w`` (plus each of ``phases``;
    with several phases the largest chart is kept). The chart thus forgets an old shift (once
    the trailing baseline has absorbed it, a confirmed shift stops alarming) and, restarting at
    absolute grid times, gives a live pass over a sliding window what a batch run gives. Inside a restart block the
    recursion is the closed form C_t - min(0, min_{j<=t} C_j) (C: running sum of z - k),
    computed over a (w, S, blocks) layout so each step is one contiguous vector operation.
    """
    s, t = z.shape
    w = max(int(w), 2)
    best: np.ndarray | None = None
    for phase in phases:
        lead = (g0 + phase) % w
        nb = -(-(lead + t) // w)
        pad = np.zeros((s, nb * w), dtype=z.dtype)
        pad[:, lead : lead + t] = z
        a = np.empty((w, s, nb), dtype=z.dtype)
        np.copyto(a, pad.reshape(s, nb, w).transpose(2, 0, 1))
        side: np.ndarray | None = None
        for sign in (1.0, -1.0):
            c = np.multiply(a, sign)
            c -= k
            # w steps over contiguous (S, blocks) slices: ~25x faster than accumulate along axis 0
            for i in range(1, w):
                c[i] += c[i - 1]
            m = c.copy()
            for i in range(1, w):
                np.minimum(m[i], m[i - 1], out=m[i])
            np.minimum(m, 0.0, out=m)
            c -= m
            side = c if side is None else np.maximum(side, c, out=side)
        assert side is not None
        np.copyto(pad.reshape(s, nb, w), side.transpose(1, 2, 0))
        r = pad[:, lead : lead + t]
        best = r.copy() if best is None else np.maximum(best, r, out=best)
    assert best is not None
    return best


def cusum(x: np.ndarray, g0: int, block: int, k: float = 0.5, h: float = 5.0, window: int = 120, kb: int = 6,
          min_blocks: int = 2, floor: float = 0.0, z: tuple[np.ndarray, np.ndarray] | None = None, *,
          prep: Prepared | None = None, out: QcResult | None = None) -> QcResult:
    """Two-sided CUSUM on the trailing-baseline z of x, restarting every ``window`` samples
    (:func:`restarted_cusum`).

    score = max(S+, S-) in standard deviations; > h -> 3 suspect, > 2h -> 4 fail. k = half the
    shift to detect (0.5 = a one-sigma shift). Missing readings add nothing (z = 0); 2 where
    there is no baseline. ``z``: as for :func:`ewma_chart`.
    """
    zz, evaluated = z if z is not None else standardise(x, g0, block, kb, min_blocks, floor)
    res = _result(x, out)
    score = res.score
    score[...] = restarted_cusum(zz, k, g0, window)
    pr = _prep(x, prep)
    score[~evaluated] = np.nan
    score += pr.nan0
    _threshold_flags(res.flag, score, h, 2 * h, pr.missing)
    return _deliver(res, out)


def seasonal_residual(x: np.ndarray, step_s: float, t0_ms: int, suspect_z: float = 4.0, fail_z: float = 8.0,
                      floor: float = 0.0, day_s: int = 86400, *, prep: Prepared | None = None,
                      out: QcResult | None = None) -> QcResult:
    """Residual from each series' time-of-day baseline (the same slot's trimmed mean over the days in the window).

    Needs at least 3 days in the window (a median of 2 is no baseline); otherwise
    every present sample is 2 (not evaluated). score = |residual| / (1.4826 * MAD of
    the residuals), robust standard deviations.
    """
    s, t = x.shape
    pr = _prep(x, prep)
    res = _result(x, out)
    slots = int(round(day_s / step_s))
    if slots < 1 or t < 3 * slots:
        res.score[...] = np.nan
        res.flag[...] = NOT_EVALUATED
        np.copyto(res.flag, MISSING, where=pr.missing)
        return _deliver(res, out)
    first_slot = int(((t0_ms // 1000) % day_s) // step_s)
    days = -(-(first_slot + t) // slots)
    aligned = first_slot == 0 and days * slots == t
    if aligned:
        padded = x
    else:
        padded = np.full((s, days * slots), np.nan, dtype=x.dtype)
        padded[:, first_slot : first_slot + t] = x
    by_day = padded.reshape(s, days, slots)
    # baseline = mean of the slot over the days without the highest and lowest day (a trimmed
    # mean: robust to one odd day, and plain vector arithmetic instead of millions of tiny medians)
    n = np.zeros((s, slots), dtype=np.int32)
    tot = np.zeros((s, slots), dtype=x.dtype)
    hi = by_day[:, 0].copy()
    lo = by_day[:, 0].copy()
    for d in range(days):  # a handful of days, each over every series and slot at once
        v = by_day[:, d]
        ok = ~np.isnan(v)
        n += ok
        np.add(tot, v, out=tot, where=ok)
        np.fmax(hi, v, out=hi)  # fmax/fmin skip NaN
        np.fmin(lo, v, out=lo)
    with np.errstate(invalid="ignore"):
        three = n >= 3
        trim = np.where(three, hi + lo, np.zeros(1, dtype=x.dtype))
        base = (tot - trim) / np.maximum(n - 2 * three, 1).astype(x.dtype)
        base[n == 0] = np.nan
    if aligned and res.score.flags.c_contiguous:
        resid = res.score
        np.subtract(by_day, base[:, None, :], out=resid.reshape(s, days, slots))
    else:
        resid_all = np.subtract(by_day, base[:, None, :]).reshape(s, days * slots)
        resid = res.score
        resid[...] = resid_all[:, first_slot : first_slot + t]
    np.abs(resid, out=resid)
    mad = row_median(resid)[:, None]
    scale = np.maximum(MAD_TO_SIGMA * mad, max(floor, 1e-12)).astype(x.dtype)
    resid /= scale
    _threshold_flags(res.flag, resid, suspect_z, fail_z, pr.missing)  # NaN where x is missing
    return _deliver(res, out)


__all__ = ["hampel", "rolling_median_mad", "ewma", "ewma_chart", "cusum", "seasonal_residual", "ffill",
           "standardise", "time_blocks", "SUSPECT", "FAIL"]
