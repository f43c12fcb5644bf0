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

from kotacerdas import standards as _std

# QARTOD flag values, short names for this module and its users (one home: kotacerdas/standards.py)
GOOD, NOT_EVALUATED, SUSPECT, FAIL, MISSING = (
    _std.QARTOD_GOOD, _std.QARTOD_NOT_EVALUATED, _std.QARTOD_SUSPECT, _std.QARTOD_FAIL, _std.QARTOD_MISSING)

# Names of the QC tests in the `qc` measurement's `test` tag (the statistical detectors add
# analytics.detectors.STAT_TESTS).
TESTS = ("gross_range", "flat_line", "spike", "rate_of_change", "gap", "drift")


class QcResult(NamedTuple):
    flag: np.ndarray  # (S, T) int8 QARTOD flag
    score: np.ndarray  # (S, T) float: test statistic (units documented per test)


class Prepared:
    """Inputs shared by the tests of one (S, T) block, each computed once and reused by every detector.

    ``missing``: isnan(x), (S, T) bool; ``nan0``: NaN where missing, 0 elsewhere (x.dtype;
    adding it masks a score in one cheap pass); ``step``: |x_t - x_{t-1}|, (S, T), field
    units, NaN in the first column; ``absdiff``: its (S, T-1) part without that column.
    """

    __slots__ = ("x", "missing", "_nan0", "_step")

    def __init__(self, x: np.ndarray):
        self.x = x
        self.missing = np.isnan(x)
        self._nan0: np.ndarray | None = None
        self._step: np.ndarray | None = None

    @property
    def nan0(self) -> np.ndarray:
        if self._nan0 is None:
            self._nan0 = np.zeros(self.x.shape, dtype=self.x.dtype)
            np.copyto(self._nan0, np.nan, where=self.missing)
        return self._nan0

    @property
    def step(self) -> np.ndarray:
        if self._step is None:
            d = np.empty(self.x.shape, dtype=self.x.dtype)
            shift(np.subtract, self.x, 1, out=d)
            np.abs(d, out=d)
            d[:, 0] = np.nan
            self._step = d
        return self._step

    @property
    def absdiff(self) -> np.ndarray:
        return self.step[:, 1:]


def shift(op, x: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """out[:, t] = op(x[:, t], x[:, t - k]) for t >= k, over the flattened (contiguous) arrays.

    One long 1-D operation instead of S row slices (several times faster); the first
    ``k`` columns of ``out`` mix in the previous row and are the caller's to overwrite.
    """
    xf = np.ascontiguousarray(x).reshape(-1)
    op(xf[k:], xf[:-k], out=out.reshape(-1)[k:])
    return out


def _prep(x: np.ndarray, prep: Prepared | None) -> Prepared:
    return prep if prep is not None and prep.x is x else Prepared(x)


def _result(x: np.ndarray, out: QcResult | None) -> QcResult:
    """Buffers to compute into: the caller's ``out`` when its score has x's dtype, else new ones."""
    if out is not None and out.score.dtype == x.dtype:
        return out
    return QcResult(np.empty(x.shape, dtype=np.int8), np.empty(x.shape, dtype=x.dtype))


def _deliver(res: QcResult, out: QcResult | None) -> QcResult:
    if out is None or res is out:
        return res
    out.flag[...] = res.flag
    out.score[...] = res.score
    return out


def _col(a: object, s: int, dtype=np.float64) -> np.ndarray | float:
    """Threshold for broadcasting over time: a Python float stays a scalar (computed at the
    array's precision); (S,) or (S,1) -> (S,1) of ``dtype``."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim == 2 and arr.shape[1] > 1:  # per sample (S, T), e.g. a trailing baseline
        return arr.astype(dtype, copy=False)
    return arr.reshape(s, 1).astype(dtype, copy=False)


def _combine(flag: np.ndarray, suspect: np.ndarray, fail: np.ndarray, not_evaluated: np.ndarray | None,
             missing: np.ndarray) -> np.ndarray:
    """flag = 1, 3 where ``suspect``, 4 where ``fail`` (fail implies suspect), 2 where ``not_evaluated``
    (boolean masks, disjoint from suspect; it must include every missing position), 9 where
    ``missing`` (which must be disjoint from suspect).

    Plain int8 arithmetic on the masks instead of masked assignments: several times cheaper.
    """
    i8 = np.int8
    np.add(suspect.view(i8), suspect.view(i8), out=flag)
    flag += fail.view(i8)
    flag += 1
    if not_evaluated is not None:
        flag += not_evaluated.view(i8)  # 1 -> 2
        flag += missing.view(i8) * i8(7)  # missing readings are not evaluated either: 2 -> 9
    else:
        flag += missing.view(i8) * i8(8)  # 1 -> 9
    return flag


def _threshold_flags(flag: np.ndarray, score: np.ndarray, suspect, fail, missing: np.ndarray) -> np.ndarray:
    """QARTOD flags of a score that is NaN where x is missing: > suspect 3, > fail 4, NaN 2, missing 9.

    Thresholds may be per sample (S, T); where one is NaN (no baseline yet) the sample is 2.
    """
    lower = np.minimum(suspect, fail)  # a fail is always also past the suspect threshold
    lower = float(lower) if np.ndim(lower) == 0 else lower  # a Python float compares at the score's precision
    not_eval = np.isnan(score)
    if np.ndim(lower) == 2 and np.shape(lower)[1] > 1:
        not_eval |= np.isnan(lower)
    with np.errstate(invalid="ignore"):
        b = score > fail
        a = score > lower
    return _combine(flag, a, b, not_eval, missing)


def gross_range(x: np.ndarray, fail_lo, fail_hi, suspect_lo, suspect_hi, *, prep: Prepared | None = None,
                out: QcResult | None = None) -> QcResult:
    """QARTOD gross range test.

    Outside [fail_lo, fail_hi] (sensor limits, catalogue ``range``) -> 4 fail;
    outside [suspect_lo, suspect_hi] (catalogue ``expected``) -> 3 suspect.
    score: distance outside the expected span, in units of that span (0 inside).
    ``prep``/``out``: shared block inputs and buffers to write into (see :class:`Prepared`).
    """
    s = x.shape[0]
    pr = _prep(x, prep)
    flo, fhi, slo, shi = (_col(a, s, x.dtype) for a in (fail_lo, fail_hi, suspect_lo, suspect_hi))
    spread = np.maximum(np.subtract(shi, slo), 1e-12)
    span: float | np.ndarray = float(spread) if np.ndim(spread) == 0 else spread.astype(x.dtype)
    res = _result(x, out)
    score = res.score
    with np.errstate(invalid="ignore"):
        np.subtract(slo, x, out=score)
        np.maximum(score, x - shi, out=score)  # NaN (missing) propagates
        np.maximum(score, 0.0, out=score)
        score /= span
        fail = x < flo
        fail |= x > fhi
        # outside the fail span implies outside the expected span: 1 + 2 + 1 = 4
        _combine(res.flag, score > 0, fail, None, pr.missing)
    return _deliver(res, out)


def _run_dtype(t: int):
    return np.int16 if t < np.iinfo(np.int16).max else np.int32


def run_length(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """For boolean (S, T): length of the run of True ending at each position (0 where False).

    Sparse masks (the usual case: missing readings, repeated values) are encoded as runs of
    flat indices, which costs a pass over the True positions only; dense ones use a running
    maximum of the last False position. ``out``: (S, T) integer array to write into.
    """
    s, t = b.shape
    if out is None:
        out = np.empty((s, t), dtype=_run_dtype(t))
    n_true = int(np.count_nonzero(b))
    if n_true > b.size // 8:
        idx = np.arange(1, t + 1, dtype=out.dtype)
        last_false = np.multiply(~b, idx, dtype=out.dtype)  # t + 1 where False, 0 where True
        np.maximum.accumulate(last_false, axis=1, out=last_false)
        return np.subtract(idx, last_false, out=out)
    out[...] = 0
    if n_true == 0:
        return out
    pos = np.flatnonzero(b)  # (row, col) -> row * t + col, increasing
    row, col = np.divmod(pos, t)
    new = np.ones(len(pos), dtype=bool)
    np.not_equal(np.diff(pos), 1, out=new[1:])
    new[1:] |= col[1:] == 0  # a run never continues into the next row
    first = np.flatnonzero(new)
    length = np.diff(first, append=len(pos))
    within = np.arange(1, len(pos) + 1) - np.repeat(first, length)
    out[row, col] = within
    return out


def flat_line(x: np.ndarray, tolerance, suspect_n: int, fail_n: int, *, g0: int | None = None,
              block: int = 60, k: int = 6, factor: float = 3.0, max_repeat: float = 0.9,
              prep: Prepared | None = None, out: QcResult | None = None) -> QcResult:
    """QARTOD flat line test: a stuck sensor repeats the same value.

    tolerance: field units; consecutive readings closer than this count as "same".
    suspect_n / fail_n: number of consecutive unchanged steps (grid samples) after
    which the reading is suspect / fail. A missing sample breaks the run.
    score: length of the current unchanged run, in samples.

    With ``g0`` (grid index of column 0) the suspect length adapts to the series' own past
    (:mod:`analytics.baseline`, blocks of ``block`` samples): ``factor`` times the median over
    the previous ``k`` blocks of each block's longest unchanged run, never below ``suspect_n``;
    fail at twice that, never below ``fail_n``. A series that repeats its value at
    ``max_repeat`` of its steps or more in those blocks (a zero-inflated or saturated one: clear
    water at 0 NTU) holds no flat-line information and is not flagged. The threshold is the one
    in force where the run began, so a long run is one alarm, not cut where the threshold moves;
    a run that began before any baseline (warm-up, a window's start) takes ``suspect_n``.
    """
    s, t = x.shape
    pr = _prep(x, prep)
    tol = _col(tolerance, s, x.dtype)
    with np.errstate(invalid="ignore"):
        same = pr.step <= tol  # NaN compares False: a gap breaks the run (and the first sample has no step)
    run = run_length(same)
    res = _result(x, out)
    if g0 is None:
        _combine(res.flag, run >= min(suspect_n, fail_n), run >= fail_n, None, pr.missing)  # a missing sample has run 0
    else:
        sus_n, fail_at = _flat_threshold(pr, same, run, g0, block, k, suspect_n, factor, max_repeat)
        np.maximum(fail_at, float(fail_n), out=fail_at)
        _combine(res.flag, run >= sus_n, run >= fail_at, None, pr.missing)
    np.add(run, pr.nan0, out=res.score)
    return _deliver(res, out)


def _flat_threshold(pr: Prepared, same: np.ndarray, run: np.ndarray, g0: int, block: int, k: int, floor_n: int,
                    factor: float, max_repeat: float) -> tuple[np.ndarray, np.ndarray]:
    """(suspect, fail) run lengths (S, T) of :func:`flat_line`'s adaptive mode, taken where each run began."""
    from analytics import baseline as bl

    s, t = same.shape
    blocks = bl.Blocks(t, g0, block)
    samef = same.astype(pr.x.dtype)
    np.copyto(samef, np.nan, where=np.isnan(pr.step))
    frac = bl.block_mean(blocks, samef)  # share of steps that repeat the value
    pos = (np.arange(t) + blocks.lead) % blocks.b + 1
    inner = np.minimum(run, pos[None, :].astype(run.dtype)).astype(pr.x.dtype)  # runs restarted at each block
    np.copyto(inner, np.nan, where=np.isnan(samef))
    longest = np.fmax.reduce(blocks.tiles(inner), axis=2)
    longest[np.isnan(frac)] = np.nan  # unusable block
    thr = np.maximum(factor * bl.trailing(longest, k, 1), float(floor_n))  # NaN stays NaN: no baseline
    thr[bl.trailing(frac, k, 1) >= max_repeat] = np.inf
    thr_t = blocks.expand(thr.astype(np.float32))
    start = np.arange(t)[None, :] - run  # column where the run's first value sits
    np.maximum(start, 0, out=start)
    at = np.take_along_axis(thr_t, start, axis=1)
    np.copyto(at, np.float32(floor_n), where=np.isnan(at))
    return at, 2.0 * at


def step_scale(x: np.ndarray, g0: int, block: int, floor, k: int = 6, min_blocks: int = 1, recent: int = 0, *,
               prep: Prepared | None = None) -> np.ndarray:
    """Robust spread of one-step changes from the trailing baseline, (S, T), field units.

    Per block the larger of 1.4826 * the median |diff| and the 90th percentile of |diff| / 1.645
    (both the sigma of a normal step): a series that repeats its value at most steps (quantised,
    zero-inflated, saturated at a limit) has a median step of 0 but a tail that says how far it
    moves when it moves. Then the median of that over the previous ``k`` blocks
    (:mod:`analytics.baseline`: a sample's scale comes from its past only), never below
    ``floor`` (e.g. twice the sensor resolution). NaN where there is no baseline yet (warm-up).
    ``recent`` > 0: at least the spread of the last ``recent`` steps before the sample (a baseline
    of its own where the blocks have none).
    """
    from analytics import baseline as bl

    pr = _prep(x, prep)
    blocks = bl.Blocks(x.shape[1], g0, block)
    med, q90 = bl.block_quantiles(blocks, pr.step, (0.5, 0.9))
    sig = np.fmax(1.4826 * med, q90 / 1.645)
    sc = blocks.expand(bl.trailing(sig, k, min_blocks).astype(x.dtype))
    if recent:
        # the last `recent` steps before each sample (mean |diff| * 1.2533 = sigma of a normal step):
        # a series that was stuck or quiet in the past blocks and is noisy again (a sensor back from
        # a fault) is judged by its noise now, and the first hour of a series has a scale at all
        near = np.empty_like(sc)
        near[:, 0] = np.nan
        near[:, 1:] = rolling_mean(pr.step, recent)[:, :-1]
        near *= 1.2533
        np.copyto(near, np.nan, where=np.isnan(near) | (np.arange(x.shape[1]) < recent)[None, :])
        _need_full_recent(near, sc, pr.step, recent)
        np.fmax(sc, near, out=sc)
    return np.maximum(sc, _col(floor, x.shape[0], x.dtype))


def _need_full_recent(near: np.ndarray, sc: np.ndarray, step: np.ndarray, recent: int) -> None:
    """Where there is no block baseline (``sc`` NaN: a series' first hour, after an outage), keep
    ``near`` (S, T) only where all ``recent`` steps before the sample are present, else NaN (not
    evaluated): the spread of one or two steps says nothing (the hard scenario's first-hour false
    alarms, docs/analytics.md). Only the columns up to the last one without a baseline are
    counted: in a long record that is its first blocks."""
    cols = np.nonzero(np.isnan(sc).any(axis=0))[0]
    if cols.size == 0:
        return
    hi = int(cols[-1]) + 1
    lo = max(int(cols[0]) - recent, 0)
    gaps = np.isnan(step[:, lo:hi]).astype(np.float32)
    any_gap = np.empty((sc.shape[0], hi - lo), dtype=bool)
    any_gap[:, 0] = True
    any_gap[:, 1:] = rolling_mean(gaps, recent)[:, :-1] > 0  # a missing step among the last `recent`
    np.copyto(near[:, lo:hi], np.float32(np.nan), where=any_gap & np.isnan(sc[:, lo:hi]))


def spike(x: np.ndarray, suspect, fail, *, prep: Prepared | None = None, out: QcResult | None = None) -> QcResult:
    """QARTOD spike test.

    score = |x_i - (x_{i-1} + x_{i+1})/2| - |x_{i+1} - x_{i-1}|/2, field units (how
    far x_i sticks out of the line through its two neighbours on the grid).
    score > suspect -> 3, > fail -> 4 (thresholds in field units, e.g. k *
    :func:`step_scale`). Samples without both neighbours (series ends,
    gap borders: the gap test covers those) are 2, not evaluated.
    """
    s = x.shape[0]
    pr = _prep(x, prep)
    res = _result(x, out)
    score = res.score
    # over the flattened block: the two end columns mix neighbouring rows and are set to NaN after
    score = score if score.flags.c_contiguous else np.empty(x.shape, dtype=x.dtype)
    xf, inner = np.ascontiguousarray(x).reshape(-1), score.reshape(-1)[1:-1]
    a, b, c = xf[:-2], xf[1:-1], xf[2:]
    np.add(a, c, out=inner)
    inner *= 0.5
    np.subtract(b, inner, out=inner)
    np.abs(inner, out=inner)
    half = np.subtract(c, a)
    np.abs(half, out=half)
    half *= 0.5
    inner -= half
    score[:, 0] = score[:, -1] = np.nan
    if score is not res.score:
        res.score[...] = score
    _threshold_flags(res.flag, score, _col(suspect, s, x.dtype), _col(fail, s, x.dtype), pr.missing)
    return _deliver(res, out)


def rate_of_change(x: np.ndarray, step_s: float, suspect_rate, fail_rate, *, prep: Prepared | None = None,
                   out: QcResult | None = None) -> QcResult:
    """QARTOD rate-of-change test: |x_i - x_{i-1}| / step between grid neighbours.

    step_s: grid step in seconds. Rates in field units per second.
    score: the absolute rate (units/s); 2 (not evaluated) after a gap.
    """
    s = x.shape[0]
    pr = _prep(x, prep)
    res = _result(x, out)
    np.multiply(pr.step, 1.0 / float(step_s), out=res.score)  # NaN in the first column
    _threshold_flags(res.flag, res.score, _col(suspect_rate, s, x.dtype), _col(fail_rate, s, x.dtype), pr.missing)
    return _deliver(res, out)


def gap(x: np.ndarray, suspect_n: int = 1, fail_n: int = 5, *, prep: Prepared | None = None,
        out: QcResult | None = None) -> QcResult:
    """QARTOD time-gap test on the grid.

    Missing bins are flagged 9; the first reading after a gap of at least
    ``suspect_n`` / ``fail_n`` missing bins is flagged 3 / 4 (the device was
    silent, its clock or buffer may be off). score: missing bins before each
    sample (for missing bins: the length of the gap so far).
    """
    s, t = x.shape
    missing = _prep(x, prep).missing
    before = np.empty(x.shape, dtype=_run_dtype(t))  # missing bins right before each sample
    before[:, 0] = 0
    run_length(missing[:, :-1], out=before[:, 1:])
    res = _result(x, out)
    # a missing bin's own gap so far is one more than the run before it
    np.add(before, missing, out=res.score)
    # Only a silence *between* readings is a gap: the leading run before a series'
    # first reading in the window is the window edge (or a device that just joined).
    present = ~missing
    first = np.where(present.any(axis=1), np.argmax(present, axis=1), t)
    after_gap = present & (np.arange(t)[None, :] > first[:, None])
    fail = before >= fail_n
    fail &= after_gap
    sus = before >= min(suspect_n, fail_n)
    sus &= after_gap
    _combine(res.flag, sus, fail, None, missing)
    return _deliver(res, out)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing NaN-aware mean over ``window`` samples (NaN where the window is empty), (S, T).

    Short windows (float32) add shifted copies; long ones (or float64 input) difference
    float64 running sums.
    """
    present = ~np.isnan(x)
    s, t = x.shape
    w = max(min(int(window), t), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if w <= 64 and x.dtype == np.float32:
            # window sums from sums over 1, 2, 4, ... samples (log2(w) shifted adds, each one
            # long 1-D operation over rows padded with w-1 zeros in front, so that a shift
            # never reaches into the previous row)
            x0 = np.zeros((s, w - 1 + t), dtype=x.dtype)
            np.copyto(x0[:, w - 1 :], x, where=present)
            n0 = np.zeros((s, w - 1 + t), dtype=np.int8)
            n0[:, w - 1 :] = present
            tot, cnt = _window_sum(x0, w), _window_sum(n0, w)
            return tot[:, w - 1 :] / cnt[:, w - 1 :]
        c = np.zeros((s, t + 1))
        np.cumsum(np.where(present, x, 0.0), axis=1, out=c[:, 1:])
        n = np.zeros((s, t + 1), dtype=np.int32)
        np.cumsum(present, axis=1, out=n[:, 1:])
        tot = np.empty((s, t))
        cnt = np.empty((s, t), dtype=np.int32)
        tot[:, :w] = c[:, 1 : w + 1]
        cnt[:, :w] = n[:, 1 : w + 1]
        tot[:, w:] = c[:, w + 1 :] - c[:, 1 : -w]
        cnt[:, w:] = n[:, w + 1 :] - n[:, 1 : -w]
        return tot / cnt


def _window_sum(a: np.ndarray, w: int) -> np.ndarray:
    """Trailing sums over ``w`` (>= 1) samples along the flattened rows of ``a`` (see :func:`rolling_mean`):
    sums over the last 1, 2, 4, ... samples, combined by the bits of ``w``."""
    power = a.reshape(-1).copy()  # sums over the last `span` samples
    acc: np.ndarray | None = None  # sums over the last `covered` samples
    span, covered = 1, 0
    while span <= w:
        if w & span:
            if acc is None:
                acc = power.copy()
            else:
                acc[covered:] += power[:-covered]
            covered += span
        if span * 2 <= w:
            power[span:] += power[:-span].copy()  # the copy: source and target overlap
        span *= 2
    assert acc is not None
    return acc.reshape(a.shape)


def _median_last(a: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Median over the last axis by sorting short rows / partitioning long ones (np.median's
    NaN bookkeeping costs ~10x here). ``overwrite``: reorder ``a`` in place instead of a copy.
    """
    n = a.shape[-1]
    k = n // 2
    p = a if overwrite else a.copy()
    lower: np.ndarray | None
    if n <= 512:  # numpy's SIMD sort beats a partition plus the max of its lower half on short rows
        p.sort(axis=-1)
        lower = p[..., k - 1] if n > 1 else p[..., 0]
    else:
        p.partition(k, axis=-1)  # one kth: a second one costs ~4x on short rows
        lower = p[..., :k].max(axis=-1) if n % 2 == 0 else None  # all left of k are <= p[k]: max = statistic k-1
    if n % 2:
        return p[..., k].copy()
    with np.errstate(invalid="ignore"):
        return 0.5 * (lower + p[..., k])


def alternate_inf(a: np.ndarray, nan_pos: np.ndarray) -> None:
    """Replace the NaN at flat positions ``nan_pos`` (sorted) of ``a`` (..., n) by +inf, -inf, +inf, ...
    in order along each last-axis slice, in place.

    Adding equally many values below and above the readings leaves their median where it
    was (exactly for an even number of NaNs in a slice, within half a rank for an odd number).
    """
    n = a.shape[-1]
    sl = nan_pos // n
    rank = np.arange(len(nan_pos)) - np.searchsorted(sl, sl, side="left")
    a.reshape(-1)[nan_pos] = np.where(rank & 1, -np.inf, np.inf)


def nanmedian_fast(a: np.ndarray, axis: int, chunk_bytes: int = 1 << 23) -> np.ndarray:
    """Median ignoring NaN, via partition (several times faster than np.nanmedian).

    Each NaN is replaced by +inf or -inf alternately (:func:`alternate_inf`).
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
        blk = np.array(a[i : i + rows], order="C")  # a contiguous copy: partitioned in place below
        nan_pos = np.flatnonzero(np.isnan(blk))
        if len(nan_pos):
            alternate_inf(blk, nan_pos)
            med = _median_last(blk, overwrite=True)
            med[~np.isfinite(med)] = np.nan  # all NaN (or more NaN than readings): no median
        else:
            med = _median_last(blk, overwrite=True)
        out[i : i + rows] = med
    return out


MAX_REFERENCE_SERIES = 512


def neighbour_reference(x: np.ndarray) -> np.ndarray:
    """The median of the series at each time, (T,): what all neighbours share.

    With more than :data:`MAX_REFERENCE_SERIES` series the median is taken over an
    evenly strided subset: 512 neighbours define "normal" as well as 10,000 do.
    """
    step = -(-x.shape[0] // MAX_REFERENCE_SERIES)
    return nanmedian_fast(x[::step], axis=0)


def neighbour_residual(x: np.ndarray) -> np.ndarray:
    """x minus the median of the series at the same time (S, T): what the neighbours do not share."""
    return x - neighbour_reference(x)[None, :]


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN, (S, n) -> (S,); NaN for an all-NaN row (no warning)."""
    out = np.full(a.shape[0], np.nan)
    ok = ~np.isnan(a).all(axis=1)
    if ok.any():
        out[ok] = np.nanmedian(a[ok], axis=1)
    return out


def row_median(a: np.ndarray, max_n: int = 256) -> np.ndarray:
    """Median of each row (S,) from an evenly strided sample of at most ~``max_n`` columns.

    For the *scale and level estimates* of the tests (not for flagging single
    readings) a systematic sample of a few hundred readings is as good as all
    1,440 and costs a fraction of the partition work.
    """
    step = max(a.shape[1] // max_n, 1)
    return nanmedian_fast(a[:, ::step], axis=1)


def drift(x: np.ndarray, g0: int, block: int, window: int, suspect_z: float = 4.0, fail_z: float = 8.0, floor=0.0,
          k: int = 12, min_blocks: int = 3, residual: np.ndarray | None = None, min_series: int = 3, *,
          prep: Prepared | None = None, out: QcResult | None = None) -> QcResult:
    """Drift against neighbours: a sensor slowly leaving its fellow sensors of the same kind.

    Every series is compared with the median of all series at the same time
    (neighbours: pass only stations of one kind/area). The residual is smoothed
    with a trailing mean over ``window`` samples and compared with its own trailing
    baseline (:mod:`analytics.baseline`): the median of the previous ``k`` blocks' means,
    so a station with a steady local offset is not flagged, one that moves away over time is.
    score: change of the smoothed residual in units of the spread of those block means
    (1.4826 * their MAD; never below ``floor``, field units). 2 (not evaluated) without a
    baseline (warm-up) and with fewer than ``min_series`` series.
    ``residual``: :func:`neighbour_residual` of x when the caller has it already.
    """
    from analytics import baseline as bl

    s, t = x.shape
    pr = _prep(x, prep)
    res = _result(x, out)
    if s < min_series:
        res.score[...] = np.nan
        res.flag[...] = NOT_EVALUATED
        np.copyto(res.flag, MISSING, where=pr.missing)
        return _deliver(res, out)
    r = neighbour_residual(x) if residual is None else residual
    sm = rolling_mean(r, window)
    blocks = bl.Blocks(t, g0, block)
    med = bl.block_mean(blocks, sm)  # sm is a moving average already: a block mean summarises it
    # every other block of the previous k: a long baseline at half the sorting cost
    level, spread = bl.trailing(med, -(-k // 2), -(-min_blocks // 2), with_mad=True, stride=2)
    scale = np.maximum(1.4826 * spread, np.asarray(floor, dtype=np.float64).reshape(-1, 1))
    score = res.score
    np.subtract(sm, blocks.expand(level.astype(sm.dtype)), out=score)
    np.abs(score, out=score)
    score /= blocks.expand(np.maximum(scale, 1e-12).astype(sm.dtype))
    score += pr.nan0
    _threshold_flags(res.flag, score, suspect_z, fail_z, pr.missing)
    return _deliver(res, out)


def worst(*flags: np.ndarray) -> np.ndarray:
    """Aggregate QARTOD flags: the most severe wins (4 > 3 > 1 > 2; 9 only if all say missing)."""
    rank = np.array([0, 2, 1, 3, 4, 0, 0, 0, 0, 0], dtype=np.int8)  # 9 (missing) ranks lowest
    f = np.stack(flags)
    best = np.take_along_axis(f, np.argmax(rank[f], axis=0)[None], axis=0)[0]
    return np.where((f == MISSING).all(axis=0), MISSING, best).astype(np.int8)
