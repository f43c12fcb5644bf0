"""Statistical change and outlier detectors over arrays shaped (series, time).

Robust rolling z-score / Hampel (median and MAD), EWMA and CUSUM control charts,
and time-of-day (seasonal) baseline residuals. All NaN-aware; all return
:class:`analytics.qc.QcResult` (QARTOD flags 1/2/3/4/9 plus a score in robust
standard deviations) with the input's shape.

Speed: a median filter evaluated at every sample is the expensive part (scipy's
runs at ~1.4 M points/s here). The Hampel filter below takes medians over
windows that advance by a *hop* (default a whole window: adjacent blocks) and assigns each
sample the statistics of the window centred nearest to it: the median of a
60-sample window barely moves in 15 samples, and the cost drops by the hop.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from analytics.qc import FAIL, NOT_EVALUATED, SUSPECT, QcResult, _finish, _median_last, row_median

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution * 1.4826 = its standard deviation


def _flags(score: np.ndarray, suspect: float, fail: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        flag = (score > suspect).astype(np.int8) * 2 + 1
        np.copyto(flag, FAIL, where=score > fail)
    np.copyto(flag, NOT_EVALUATED, where=np.isnan(score))
    return flag


def rolling_median_mad(x: np.ndarray, window: int, hop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centred rolling median and MAD (field units), each (S, T), evaluated every ``hop`` samples.

    window: samples per window (clipped to T); hop: samples between evaluated
    windows (default = window: adjacent blocks; 1 = an exact rolling median).
    """
    s, t = x.shape
    w = max(min(int(window), t), 1)
    h = max(int(hop or w), 1)
    starts = np.arange(0, t - w + 1, h)
    if starts[-1] != t - w:
        starts = np.append(starts, t - w)
    nb = len(starts)
    med = np.empty((s, nb))
    mad = np.empty((s, nb))
    rows = max((1 << 22) // (nb * w * 8), 1)  # ~4 MB of window copies at a time
    for i in range(0, s, rows):  # a few dozen blocks, each one vectorised call
        blk = sliding_window_view(x[i : i + rows], w, axis=1)[:, starts]  # (r, B, w) copy of a small block
        nan = np.isnan(blk)
        if nan.any():
            odd = (np.cumsum(nan, axis=-1, dtype=np.int32) & 1).astype(bool)
            sign = np.where(odd, np.inf, -np.inf)  # see qc.nanmedian_fast: +/-inf pairs keep the median
            m = _median_last(np.where(nan, sign, blk))
            dev = np.where(nan, sign, np.abs(blk - m[..., None]))
            d = _median_last(dev)
            bad = nan.all(axis=-1) | ~np.isfinite(m)
            m[bad] = np.nan
            d[bad | ~np.isfinite(d)] = np.nan
        else:
            m = _median_last(blk)
            d = _median_last(np.abs(blk - m[..., None]))
        med[i : i + rows], mad[i : i + rows] = m, d
    # each sample takes the window centred nearest to it; the window index never decreases along time
    centres = starts + (w - 1) / 2.0
    mids = (centres[:-1] + centres[1:]) / 2.0
    b = np.searchsorted(mids, np.arange(t), side="left")
    counts = np.bincount(b, minlength=nb)
    return np.repeat(med, counts, axis=1), np.repeat(mad, counts, axis=1)


def hampel(x: np.ndarray, window: int = 60, hop: int | None = None, suspect_z: float = 4.0,
           fail_z: float = 8.0, floor: float = 0.0) -> QcResult:
    """Hampel identifier / robust rolling z-score.

    score = |x - rolling median| / (1.4826 * rolling MAD), robust standard
    deviations; the scale never goes below ``floor`` (field units, e.g. the
    sensor resolution) so a quantised, constant signal does not explode.
    """
    med, mad = rolling_median_mad(x, window, hop)
    scale = np.maximum(MAD_TO_SIGMA * mad, max(floor, 1e-12))
    with np.errstate(invalid="ignore"):
        score = np.abs(x - med) / scale
    return _finish(_flags(score, suspect_z, fail_z), score, x)


def _robust_standardise(x: np.ndarray, floor: float, reference: slice | None = None) -> np.ndarray:
    """(x - median) / (1.4826 * MAD) per series, over the reference part of the window."""
    ref = x if reference is None else x[:, reference]
    med = row_median(ref)[:, None]
    mad = row_median(np.abs(ref - med))[:, None]
    scale = np.maximum(MAD_TO_SIGMA * mad, max(floor, 1e-12))
    return (x - med) / scale


def standardise(x: np.ndarray, floor: float = 0.0, reference_frac: float = 0.5) -> np.ndarray:
    """Robust z of x against its first ``reference_frac``; missing readings -> 0 (no evidence).

    Shared input of :func:`ewma_chart` and :func:`cusum` (pass it as ``z=`` to both).
    """
    n_ref = max(int(x.shape[1] * reference_frac), 2)
    z = _robust_standardise(x, floor, slice(0, n_ref))
    return np.where(np.isnan(z), 0.0, z)


def ffill(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Carry the last reading forward over gaps (``fill`` before the first reading)."""
    present = ~np.isnan(x)
    idx = np.maximum.accumulate(np.where(present, np.arange(x.shape[1]), 0), axis=1)
    out = np.take_along_axis(x, idx, axis=1)
    return np.where(np.isnan(out), fill, out)


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted moving average along time (gaps hold the last value), (S, T)."""
    xf = ffill(x) if np.isnan(x).any() else x
    first = xf[:, :1]
    zi = (1 - alpha) * first  # start at the first value, not at 0
    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], xf, axis=1, zi=zi)
    return y


def ewma_chart(x: np.ndarray, alpha: float = 0.1, suspect_l: float = 3.0, fail_l: float = 5.0,
               floor: float = 0.0, reference_frac: float = 0.5, z: np.ndarray | None = None) -> QcResult:
    """EWMA control chart on robustly standardised readings.

    Baseline median/MAD from the first ``reference_frac`` of the window. score =
    distance of the EWMA of z from its reference level, in units of the EWMA's own
    robust spread in the reference period (at least the white-noise value
    sqrt(alpha / (2 - alpha))): > suspect_l -> 3, > fail_l -> 4. Catches small persistent
    shifts (offsets, slow contamination) that a point-wise test misses.
    """
    n_ref = max(int(x.shape[1] * reference_frac), 2)
    if z is None:
        z = standardise(x, floor, reference_frac)
    e = ewma(z, alpha)
    # calibrate against the EWMA's own spread in the reference period: real residuals are
    # autocorrelated, and the white-noise formula sqrt(alpha/(2-alpha)) underestimates it
    e0 = row_median(e[:, :n_ref])[:, None]
    spread = MAD_TO_SIGMA * row_median(np.abs(e[:, :n_ref] - e0))[:, None]
    spread = np.maximum(spread, np.sqrt(alpha / (2.0 - alpha)))
    score = np.abs(e - e0) / spread
    return _finish(_flags(score, suspect_l, fail_l), score, x)


def cusum(x: np.ndarray, k: float = 0.5, h: float = 5.0, floor: float = 0.0,
          reference_frac: float = 0.5, z: np.ndarray | None = None) -> QcResult:
    """Two-sided tabular CUSUM on robustly standardised readings.

    S+ = max(0, S+ + z - k), S- = max(0, S- - z - k); score = max(S+, S-) in
    standard deviations; > h -> 3 suspect, > 2h -> 4 fail. k = half the shift to
    detect (0.5 = a one-sigma shift). Missing readings add nothing (z = 0).
    """
    if z is None:
        z = standardise(x, floor, reference_frac)
    # Lindley's recursion S_t = max(0, S_{t-1} + u_t) has the closed form
    # S_t = C_t - min(0, min_{j<=t} C_j) with C the running sum of u: no loop over time.
    c = np.cumsum(z - k, axis=1)
    hi = c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0)
    np.cumsum(-z - k, axis=1, out=c)
    lo = c - np.minimum(np.minimum.accumulate(c, axis=1), 0.0)
    score = np.maximum(hi, lo)
    return _finish(_flags(score, h, 2 * h), score, x)


def seasonal_residual(x: np.ndarray, step_s: float, t0_ms: int, suspect_z: float = 4.0, fail_z: float = 8.0,
                      floor: float = 0.0, day_s: int = 86400) -> QcResult:
    """Residual from each series' time-of-day baseline (the same slot's trimmed mean over the days in the window).

    Needs at least 3 days in the window (a median of 2 is no baseline); otherwise
    every present sample is 2 (not evaluated). score = |residual| / (1.4826 * MAD of
    the residuals), robust standard deviations.
    """
    s, t = x.shape
    slots = int(round(day_s / step_s))
    if slots < 1 or t < 3 * slots:
        flag = np.full(x.shape, NOT_EVALUATED, dtype=np.int8)
        return _finish(flag, np.full(x.shape, np.nan), x)
    first_slot = int(((t0_ms // 1000) % day_s) // step_s)
    days = -(-(first_slot + t) // slots)
    padded = np.full((s, days * slots), np.nan, dtype=x.dtype)
    padded[:, first_slot : first_slot + t] = x
    by_day = padded.reshape(s, days, slots)
    # baseline = mean of the slot over the days without the highest and lowest day (a trimmed
    # mean: robust to one odd day, and plain vector arithmetic instead of millions of tiny medians)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.sum(~np.isnan(by_day), axis=1)
        tot = np.nansum(by_day, axis=1)
        trim = np.where(n >= 3, np.nanmax(by_day, axis=1) + np.nanmin(by_day, axis=1), 0.0)
        base = np.where(n >= 1, (tot - trim) / np.maximum(np.where(n >= 3, n - 2, n), 1), np.nan)
    slot_of = (first_slot + np.arange(t)) % slots
    resid = x - base[:, slot_of]
    mad = row_median(np.abs(resid))[:, None]
    scale = np.maximum(MAD_TO_SIGMA * mad, max(floor, 1e-12))
    score = np.abs(resid) / scale
    return _finish(_flags(score, suspect_z, fail_z), score, x)


__all__ = ["hampel", "rolling_median_mad", "ewma", "ewma_chart", "cusum", "seasonal_residual", "ffill",
           "SUSPECT", "FAIL"]
