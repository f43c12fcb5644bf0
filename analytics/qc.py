"""QARTOD-style data-quality tests over arrays shaped (series, time).

Flag values follow QARTOD (US IOOS, "Manual for Real-Time Quality Control", as
implemented in ioos_qc): 1 good, 2 not evaluated, 3 suspect, 4 fail, 9 missing.
Test names follow QARTOD too (gross range, flat line, spike, rate of change,
time gap); "drift" compares a sensor with its neighbours of the same kind (the
idea of SaQC's flagDriftFromNorm).

Thresholds of the gross-range test come from the sensor catalogue: ``range``
(the physical limits -> fail) and ``expected`` (plausible span -> suspect).

Every test takes ``x`` shaped (S, T), float, NaN = no reading on the regular
grid (see :mod:`analytics.grid`), and returns a :class:`QcResult` whose ``flag``
(int8) and ``score`` (float) arrays have the same shape. Per-series thresholds
may be scalars or arrays shaped (S,) / (S, 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GOOD, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9

# Names written into the `qc` measurement's `test` tag.
TESTS = ("gross_range", "flat_line", "spike", "rate_of_change", "gap", "drift")


class QcResult(NamedTuple):
    flag: np.ndarray  # (S, T) int8 QARTOD flag
    score: np.ndarray  # (S, T) float: test statistic (units documented per test)


def _col(a: object, s: int) -> np.ndarray:
    """Scalar or (S,) or (S,1) -> (S,1) float for broadcasting over time."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return np.full((s, 1), float(arr))
    return arr.reshape(s, 1)


def _finish(flag: np.ndarray, score: np.ndarray, x: np.ndarray) -> QcResult:
    missing = np.isnan(x)
    # copyto(where=) is several times faster than boolean-index assignment on big arrays
    np.copyto(flag, MISSING, where=missing)
    np.copyto(score, np.nan, where=missing)
    return QcResult(flag, score)


def gross_range(x: np.ndarray, fail_lo, fail_hi, suspect_lo, suspect_hi) -> QcResult:
    """QARTOD gross range test.

    Outside [fail_lo, fail_hi] (sensor limits, catalogue ``range``) -> 4 fail;
    outside [suspect_lo, suspect_hi] (catalogue ``expected``) -> 3 suspect.
    score: distance outside the expected span, in units of that span (0 inside).
    """
    s = x.shape[0]
    flo, fhi, slo, shi = (_col(a, s) for a in (fail_lo, fail_hi, suspect_lo, suspect_hi))
    span = np.maximum(shi - slo, 1e-12)
    with np.errstate(invalid="ignore"):
        score = np.maximum(np.maximum(slo - x, x - shi), 0.0) / span
        # outside the fail span implies outside the expected span: 1 + 2 + 1 = 4
        flag = (1 + 2 * (score > 0) + ((x < flo) | (x > fhi))).astype(np.int8)
    return _finish(flag, score, x)


def run_length(b: np.ndarray) -> np.ndarray:
    """For boolean (S, T): length of the run of True ending at each position (0 where False)."""
    t = np.arange(b.shape[1], dtype=np.int32)
    last_false = np.maximum.accumulate(np.where(b, np.int32(-1), t), axis=1)
    return t - last_false


def flat_line(x: np.ndarray, tolerance, suspect_n: int, fail_n: int) -> QcResult:
    """QARTOD flat line test: a stuck sensor repeats the same value.

    tolerance: field units; consecutive readings closer than this count as "same".
    suspect_n / fail_n: number of consecutive unchanged steps (grid samples) after
    which the reading is suspect / fail. A missing sample breaks the run.
    score: length of the current unchanged run, in samples.
    """
    s = x.shape[0]
    tol = _col(tolerance, s)
    with np.errstate(invalid="ignore"):
        same = np.abs(np.diff(x, axis=1)) <= tol  # NaN compares False: a gap breaks the run
    run = np.zeros(x.shape, dtype=np.int32)
    run[:, 1:] = run_length(same)
    flag = np.full(x.shape, GOOD, dtype=np.int8)
    flag[run >= suspect_n] = SUSPECT
    flag[run >= fail_n] = FAIL
    return _finish(flag, run.astype(x.dtype), x)


def robust_step_scale(x: np.ndarray, floor) -> np.ndarray:
    """Per-series robust spread of one-step changes, shape (S, 1), field units.

    1.4826 * median(|diff|) (normal-consistent MAD of differences around 0), never
    below ``floor`` (e.g. the sensor resolution) so quantised, quiet signals do not
    turn every step into an outlier.
    """
    med = row_median(np.abs(np.diff(x, axis=1)))
    med = np.where(np.isnan(med), 0.0, med)
    return np.maximum(1.4826 * med, np.asarray(floor, dtype=np.float64).reshape(-1))[:, None]


def spike(x: np.ndarray, suspect, fail) -> QcResult:
    """QARTOD spike test.

    score = |x_i - (x_{i-1} + x_{i+1})/2| - |x_{i+1} - x_{i-1}|/2, field units (how
    far x_i sticks out of the line through its two neighbours on the grid).
    score > suspect -> 3, > fail -> 4 (thresholds in field units, e.g. k *
    :func:`robust_step_scale`). Samples without both neighbours (series ends,
    gap borders: the gap test covers those) are 2, not evaluated.
    """
    s = x.shape[0]
    score = np.full(x.shape, np.nan, dtype=x.dtype)
    a, b, c = x[:, :-2], x[:, 1:-1], x[:, 2:]
    score[:, 1:-1] = np.abs(b - (a + c) * 0.5) - np.abs(c - a) * 0.5
    flag = _thresholds(score, _col(suspect, s), _col(fail, s))
    return _finish(flag, score, x)


def _thresholds(score: np.ndarray, suspect: np.ndarray, fail: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        flag = (score > suspect).astype(np.int8) * 2 + 1  # 1 good / 3 suspect
        np.copyto(flag, FAIL, where=score > fail)
    np.copyto(flag, NOT_EVALUATED, where=np.isnan(score))
    return flag


def rate_of_change(x: np.ndarray, step_s: float, suspect_rate, fail_rate) -> QcResult:
    """QARTOD rate-of-change test: |x_i - x_{i-1}| / step between grid neighbours.

    step_s: grid step in seconds. Rates in field units per second.
    score: the absolute rate (units/s); 2 (not evaluated) after a gap.
    """
    s = x.shape[0]
    score = np.full(x.shape, np.nan, dtype=x.dtype)
    score[:, 1:] = np.abs(np.diff(x, axis=1)) * (1.0 / float(step_s))
    flag = _thresholds(score, _col(suspect_rate, s), _col(fail_rate, s))
    return _finish(flag, score, x)


def gap(x: np.ndarray, suspect_n: int = 1, fail_n: int = 5) -> QcResult:
    """QARTOD time-gap test on the grid.

    Missing bins are flagged 9; the first reading after a gap of at least
    ``suspect_n`` / ``fail_n`` missing bins is flagged 3 / 4 (the device was
    silent, its clock or buffer may be off). score: missing bins before each
    sample (for missing bins: the length of the gap so far).
    """
    missing = np.isnan(x)
    run = run_length(missing)  # missing run ending at t
    before = np.zeros(x.shape, dtype=np.int32)
    before[:, 1:] = run[:, :-1]
    score = np.where(missing, run, before).astype(x.dtype)
    # Only a silence *between* readings is a gap: the leading run before a series'
    # first reading in the window is the window edge (or a device that just joined).
    seen_before = np.zeros(x.shape, dtype=bool)
    seen_before[:, 1:] = np.maximum.accumulate(~missing, axis=1)[:, :-1]
    after_gap = ~missing & seen_before
    flag = np.full(x.shape, GOOD, dtype=np.int8)
    flag[(before >= suspect_n) & after_gap] = SUSPECT
    flag[(before >= fail_n) & after_gap] = FAIL
    flag[missing] = MISSING
    return QcResult(flag, score)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing NaN-aware mean over ``window`` samples (NaN where the window is empty)."""
    present = ~np.isnan(x)
    s = x.shape[0]
    c = np.zeros((s, x.shape[1] + 1))
    np.cumsum(np.where(present, x, 0.0), axis=1, out=c[:, 1:])
    n = np.zeros((s, x.shape[1] + 1), dtype=np.int32)
    np.cumsum(present, axis=1, out=n[:, 1:])
    w = min(window, x.shape[1])
    tot = np.empty((s, x.shape[1]))
    cnt = np.empty((s, x.shape[1]), dtype=np.int32)
    tot[:, :w] = c[:, 1 : w + 1]
    cnt[:, :w] = n[:, 1 : w + 1]
    tot[:, w:] = c[:, w + 1 :] - c[:, 1 : -w]
    cnt[:, w:] = n[:, w + 1 :] - n[:, 1 : -w]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = tot / cnt
    return out


def _median_last(a: np.ndarray) -> np.ndarray:
    """Median over the last axis with np.partition (np.median's NaN bookkeeping costs ~10x here)."""
    n = a.shape[-1]
    k = n // 2
    p = np.partition(a, k, axis=-1)  # one kth: a second one costs ~4x on short rows
    if n % 2:
        return p[..., k]
    lower = p[..., :k].max(axis=-1)  # everything left of k is <= p[k]: its max is order statistic k-1
    with np.errstate(invalid="ignore"):
        return 0.5 * (lower + p[..., k])


def nanmedian_fast(a: np.ndarray, axis: int, chunk_bytes: int = 1 << 23) -> np.ndarray:
    """Median ignoring NaN, via partition (several times faster than np.nanmedian).

    Each NaN is replaced by -inf or +inf alternately: adding equally many values
    below and above the readings leaves their median where it was (exactly for an
    even number of NaNs in a slice, within half a rank for an odd number).
    All-NaN slices give NaN. Works through the leading axis in blocks of about
    ``chunk_bytes`` so temporaries stay in cache.
    """
    a = np.moveaxis(np.asarray(a), axis, -1)
    if a.ndim == 1:
        a = a[None]
        return nanmedian_fast(a, -1, chunk_bytes)[0]
    out = np.empty(a.shape[:-1], dtype=np.result_type(a.dtype, np.float32))
    rows = max(int(chunk_bytes // max(a[0].nbytes, 1)), 1)
    for i in range(0, a.shape[0], rows):  # a few blocks; each is one vectorised call
        blk = a[i : i + rows]
        nan = np.isnan(blk)
        if nan.any():
            odd = np.cumsum(nan, axis=-1, dtype=np.int32) & 1
            blk = np.where(nan, np.where(odd == 1, np.inf, -np.inf), blk)
            med = _median_last(blk)
            allnan = nan.all(axis=-1)
            med[allnan | ~np.isfinite(med)] = np.nan
        else:
            med = _median_last(blk)
        out[i : i + rows] = med
    return out


MAX_REFERENCE_SERIES = 512


def neighbour_residual(x: np.ndarray) -> np.ndarray:
    """x minus the median of the series at the same time (S, T): what the neighbours do not share.

    With more than :data:`MAX_REFERENCE_SERIES` series the median is taken over an
    evenly strided subset: 512 neighbours define "normal" as well as 10,000 do.
    """
    step = -(-x.shape[0] // MAX_REFERENCE_SERIES)
    return x - nanmedian_fast(x[::step], axis=0)[None, :]


def row_median(a: np.ndarray, max_n: int = 256) -> np.ndarray:
    """Median of each row (S,) from an evenly strided sample of at most ~``max_n`` columns.

    For the *scale and level estimates* of the tests (not for flagging single
    readings) a systematic sample of a few hundred readings is as good as all
    1,440 and costs a fraction of the partition work.
    """
    step = max(a.shape[1] // max_n, 1)
    return nanmedian_fast(a[:, ::step], axis=1)


def drift(x: np.ndarray, window: int, suspect_z: float = 4.0, fail_z: float = 8.0, floor=0.0,
          reference_frac: float = 1 / 3, residual: np.ndarray | None = None, min_series: int = 3) -> QcResult:
    """Drift against neighbours: a sensor slowly leaving its fellow sensors of the same kind.

    Every series is compared with the median of all series at the same time
    (neighbours: pass only stations of one kind/area). The residual is smoothed
    with a trailing mean over ``window`` samples and compared with its own level in
    the reference period (the first ``reference_frac`` of the window), so a station
    with a steady local offset is not flagged, one that moves away over time is.
    score: change of the smoothed residual in units of the residual's robust
    spread (of the smoothed residual) in the reference period (never below
    ``floor``, field units).
    Needs at least 3 series; otherwise every present sample is 2 (not evaluated).
    ``residual``: :func:`neighbour_residual` of x when the caller has it already.
    """
    s, t = x.shape
    flag = np.full(x.shape, GOOD, dtype=np.int8)
    if s < min_series:
        flag[:] = NOT_EVALUATED
        return _finish(flag, np.full(x.shape, np.nan), x)
    r = neighbour_residual(x) if residual is None else residual
    sm = rolling_mean(r, window)
    n_ref = max(int(t * reference_frac), 2)
    # level and spread of the *smoothed* residual in the reference period: smoothing an
    # autocorrelated residual does not shrink its spread by sqrt(window)
    base = row_median(sm[:, :n_ref])[:, None]
    mad = row_median(np.abs(sm[:, :n_ref] - base))[:, None]
    scale = np.maximum(1.4826 * mad, _col(floor, s))
    scale = np.where(np.isnan(scale), np.inf, np.maximum(scale, 1e-12))
    with np.errstate(invalid="ignore"):
        score = np.abs(sm - base) / scale
        flag[score > suspect_z] = SUSPECT
        flag[score > fail_z] = FAIL
        flag[np.isnan(score)] = NOT_EVALUATED
    return _finish(flag, score, x)


def worst(*flags: np.ndarray) -> np.ndarray:
    """Aggregate QARTOD flags: the most severe wins (4 > 3 > 1 > 2; 9 only if all say missing)."""
    rank = np.array([0, 2, 1, 3, 4, 0, 0, 0, 0, 0], dtype=np.int8)  # 9 (missing) ranks lowest
    f = np.stack(flags)
    best = np.take_along_axis(f, np.argmax(rank[f], axis=0)[None], axis=0)[0]
    return np.where((f == MISSING).all(axis=0), MISSING, best).astype(np.int8)
