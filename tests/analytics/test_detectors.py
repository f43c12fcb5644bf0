"""Pure detector cores: shapes, NaN handling, QARTOD flags, agreement with per-series pandas references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics import qc, stats
from analytics.detectors import cusum_window_n, QcParams, StatParams, params_for, run_all, run_qc
from analytics.grid import Grid, stack_series, to_grid
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()


def test_grid_mean_last_and_out_of_window():
    g = Grid.covering(1_000, 10_000, 1_000)
    assert g.t0_ms == 1_000 and g.n == 10
    idx = np.array([0, 0, 0, 1, 1, 0])
    t = np.array([1_100, 1_900, 3_500, 2_000, 99_000, 500])  # 99 s and 0.5 s fall outside the grid
    v = np.array([1.0, 3.0, 7.0, 5.0, 9.0, 4.0])
    m = to_grid(idx, t, v, 2, g, "mean")
    assert m.shape == (2, 10) and m[0, 0] == 2.0 and m[0, 2] == 7.0 and m[1, 1] == 5.0
    assert np.isnan(m[0, 1]) and np.isnan(m[1]).sum() == 9
    last = to_grid(idx[::-1], t[::-1], v[::-1], 2, g, "last")  # arrival order must not matter
    assert last[0, 0] == 3.0
    s = stack_series([(t[:2], v[:2]), (np.array([5_000]), np.array([np.nan]))], g)
    assert s[0, 0] == 2.0 and np.isnan(s[1]).all()


def test_gross_range_flags_from_catalogue():
    f = CAT["water"].field("ph")
    x = np.array([[7.0, 4.0, 10.0, 15.0, np.nan]])
    r = qc.gross_range(x, f.lo, f.hi, f.expected_lo, f.expected_hi)
    assert r.flag.tolist() == [[1, 3, 3, 4, 9]] and r.flag.shape == x.shape
    assert r.score[0, 0] == 0 and r.score[0, 1] == pytest.approx(1.0 / 4.5)


def test_flat_line_run_lengths():
    x = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, np.nan, 2.0]])
    r = qc.flat_line(x, 0.01, suspect_n=2, fail_n=4)
    assert r.score[0, :7].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert r.flag.tolist() == [[1, 1, 3, 3, 4, 1, 1, 9, 1]]  # a gap breaks the run


def test_spike_and_rate_of_change():
    x = np.array([[10.0, 10.0, 50.0, 10.0, 10.0, 30.0, 30.0, 30.0]])
    r = qc.spike(x, 5.0, 20.0)
    assert r.score[0, 2] == pytest.approx(40.0) and r.flag[0, 2] == qc.FAIL
    assert r.flag[0, 5] == qc.GOOD and r.score[0, 5] == 0  # a step is not a spike (the ROC test sees it)
    assert r.flag[0, 0] == qc.NOT_EVALUATED and r.flag[0, -1] == qc.NOT_EVALUATED
    roc = qc.rate_of_change(x, 60.0, 0.1, 0.5)
    assert roc.score[0, 2] == pytest.approx(40 / 60) and roc.flag[0, 2] == qc.FAIL
    assert roc.flag[0, 5] == qc.SUSPECT  # a 20-unit step in 60 s = 0.33/s


def test_gap_flags_first_reading_after_silence():
    x = np.array([[1.0, np.nan, 1.0, np.nan, np.nan, np.nan, 1.0]])
    r = qc.gap(x, suspect_n=1, fail_n=3)
    assert r.flag.tolist() == [[1, 9, 3, 9, 9, 9, 4]] and r.score[0, 6] == 3


def test_drift_against_neighbours():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    common = 20 + 5 * np.sin(t / 50)  # weather every station sees
    x = common + rng.normal(0, 0.2, (6, 600))
    x[1] += 3.0  # a steady local offset is not drift
    x[4, 300:] += np.linspace(0, 8, 300)  # a slow drift
    r = qc.drift(x, 0, 30, 30, suspect_z=10, fail_z=20, floor=0.01, k=6, min_blocks=3)
    flagged = (r.flag == qc.SUSPECT) | (r.flag == qc.FAIL)
    assert flagged[4, 300:400].any()  # found while its baseline is still the clean past
    assert not flagged[4, :300].any() and flagged[[0, 1, 2, 3, 5], :].mean() < 0.01
    assert (r.flag[:, :90] == qc.NOT_EVALUATED).all()  # warm-up: three blocks of baseline first
    assert qc.drift(x[:2], 0, 30, 30).flag[0, 5] == qc.NOT_EVALUATED  # needs neighbours


def test_nanmedian_fast_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 61))
    assert np.allclose(qc.nanmedian_fast(a, 1), np.median(a, 1))
    assert np.allclose(qc.nanmedian_fast(a[:, :60], 1), np.median(a[:, :60], 1))
    b = a.copy()
    b[:, ::6] = np.nan  # 11 NaN per row... plus one more = even count: exact
    b[:, 1] = np.nan
    assert np.allclose(qc.nanmedian_fast(b, 1), np.nanmedian(b, 1))
    assert np.isnan(qc.nanmedian_fast(np.full((2, 5), np.nan), 1)).all()


def test_rolling_mean_matches_pandas():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 100))
    x[rng.random(x.shape) < 0.2] = np.nan
    ref = pd.DataFrame(x.T).rolling(7, min_periods=1).mean().T.values
    assert np.allclose(qc.rolling_mean(x, 7), ref, equal_nan=True)


def test_hampel_hop1_equals_pandas_rolling_median_and_flags_outlier():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 300))
    med, _ = stats.rolling_median_mad(x, 11, hop=1)
    ref = pd.DataFrame(x.T).rolling(11, center=True).median().T.values
    assert np.allclose(med[:, 5:-5], ref[:, 5:-5])
    x[1, 150] = 25.0
    r = stats.hampel(x, 0, 30, suspect_z=5, fail_z=10)
    assert r.flag[1, 150] == qc.FAIL and (r.flag >= qc.SUSPECT).sum() < 5
    assert r.flag.shape == x.shape and (r.flag[:, :60] == qc.NOT_EVALUATED).all()  # two blocks of warm-up


def test_cusum_and_ewma_find_a_shift_against_the_trailing_baseline():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 900))
    x[:2, 400:] += 3.0
    z = stats.standardise(x, 0, 50)
    c = stats.cusum(x, 0, 50, k=0.5, h=8.0, window=60, z=z)
    e = stats.ewma_chart(x, 0, 50, 0.1, 4.0, 8.0, z=z)
    for r in (c, e):
        flagged = (r.flag == qc.SUSPECT) | (r.flag == qc.FAIL)
        assert flagged[:2, 410:440].mean() > 0.8 and flagged[2:].mean() < 0.01  # (the CUSUM restarts at 420)
        assert (r.flag[:, :100] == qc.NOT_EVALUATED).all()  # warm-up: two blocks
    # once the baseline has absorbed the shift the alarm ends (re-baselined)
    assert not ((c.flag[:2, -50:] == qc.SUSPECT) | (c.flag[:2, -50:] == qc.FAIL)).any()


@pytest.mark.parametrize("w,g0", [(2, 0), (10, 3), (60, 17), (700, 5)])
def test_restarted_cusum_matches_the_recursion(w, g0):
    """The plain recursion, restarted at grid indices that are multiples of w (and w/2 past them)."""
    z = np.random.default_rng(5).standard_normal((3, 150))
    k = 0.3
    got = stats.restarted_cusum(z, k, g0, w, (0, w // 2))
    assert np.allclose(stats.restarted_cusum(z, k, g0, w, (w // 2, 0)), got)
    ref = np.zeros_like(z)
    for phase in (0, w // 2):
        hi = lo = np.zeros(3)
        for t in range(z.shape[1]):
            if (g0 + t + phase) % w == 0:
                hi = lo = np.zeros(3)
            hi = np.maximum(0, hi + z[:, t] - k)
            lo = np.maximum(0, lo - z[:, t] - k)
            ref[:, t] = np.maximum(ref[:, t], np.maximum(hi, lo))
    assert np.allclose(got, ref)


def test_ewma_matches_pandas():
    x = np.random.default_rng(5).standard_normal((2, 500))
    ref = pd.DataFrame(x.T).ewm(alpha=0.2, adjust=False).mean().T.values
    assert np.allclose(stats.ewma(x, 0.2), ref)


def test_seasonal_residual_needs_days_and_finds_off_cycle_values():
    step = 3600
    t = np.arange(24 * 5)
    x = np.vstack([10 + 5 * np.sin(2 * np.pi * t / 24)] * 3) + np.random.default_rng(6).normal(0, 0.1, (3, 120))
    x[2, 60] += 5.0  # normal value for another hour, not for this one
    r = stats.seasonal_residual(x, step, 0, suspect_z=5, fail_z=10)
    assert r.flag[2, 60] >= qc.SUSPECT and (r.flag[:2] >= qc.SUSPECT).sum() <= 2
    short = stats.seasonal_residual(x[:, :48], step, 0)
    assert (short.flag == qc.NOT_EVALUATED).all()


def test_worst_flag_aggregation():
    a = np.array([1, 3, 9, 2, 9], dtype=np.int8)
    b = np.array([4, 1, 9, 1, 1], dtype=np.int8)
    assert qc.worst(a, b).tolist() == [4, 3, 9, 1, 1]


def test_run_all_shapes_and_disabled_tests():
    x = np.random.default_rng(7).normal(50, 5, (20, 300))
    x[3, 100:150] = np.nan
    p = params_for(CAT["waste_bin"], CAT["waste_bin"].field("fill"), 900)
    res = run_all(x, p, 0, StatParams(), chunk=8)
    assert "rate_of_change" not in res and "drift" not in res  # collections are steps, bins are independent
    assert all(r.flag.shape == x.shape and r.score.shape == x.shape for r in res.values())
    assert (res["gross_range"].flag[3, 100:150] == qc.MISSING).all()
    tilt = params_for(CAT["waste_bin"], CAT["waste_bin"].field("tilt"))
    assert not tilt.flat_enabled  # a switch that is always 0 is not stuck
    q = QcParams(0, 100, 0, 100, 1.0, 60.0)
    assert set(run_all(x, q, 0)) == {"gross_range", "flat_line", "spike", "rate_of_change", "gap", "hampel",
                                     "ewma", "cusum", "seasonal", "drift"}


def test_gap_ignores_the_leading_edge_of_the_window():
    """A series whose first reading comes late in the window has no gap before it."""
    x = np.full((2, 10), np.nan)
    x[0, 6:] = 1.0  # joined late: no flag on its first reading
    x[1, [0, 1, 7, 8]] = 1.0  # a real 5-bin silence between readings
    r = qc.gap(x, suspect_n=1, fail_n=5)
    assert r.flag[0, 6] == qc.GOOD and (r.flag[0, :6] == qc.MISSING).all()
    assert r.flag[1, 7] == qc.FAIL and r.flag[1, 8] == qc.GOOD


# ---------------------------------------------------------------- fast formulations against straightforward references

def _gappy(shape, seed, nan_frac=0.05, dtype=np.float64):
    """Random readings with scattered NaN and a few long gaps (whole stretches missing)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(20.0, 3.0, shape)
    x[rng.random(shape) < nan_frac] = np.nan
    x[0, 10:40] = np.nan
    x[-1, :] = np.nan
    return x.astype(dtype)


def _run_length_reference(b):
    out = np.zeros(b.shape, dtype=int)
    for i, row in enumerate(b):
        n = 0
        for j, v in enumerate(row):
            n = n + 1 if v else 0
            out[i, j] = n
    return out


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5, 1.0])  # sparse (run encoding) and dense (running max) paths
def test_run_length_matches_loop(density):
    b = np.random.default_rng(8).random((7, 203)) < density
    b[2, -5:] = True  # runs touching a row's end must not continue into the next row
    b[3, :4] = True
    assert (qc.run_length(b) == _run_length_reference(b)).all()


def test_spike_and_step_work_row_by_row():
    x = _gappy((6, 80), 9, dtype=np.float32)
    s = qc.spike(x, 1.0, 2.0).score
    a, b, c = x[:, :-2], x[:, 1:-1], x[:, 2:]
    ref = np.abs(b - (a + c) / 2) - np.abs(c - a) / 2
    assert np.isnan(s[:, [0, -1]]).all() and np.allclose(s[:, 1:-1], ref, equal_nan=True)
    roc = qc.rate_of_change(x, 60.0, 1.0, 2.0).score
    assert np.isnan(roc[:, 0]).all() and np.allclose(roc[:, 1:], np.abs(np.diff(x, axis=1)) / 60, equal_nan=True)


@pytest.mark.parametrize("window", [1, 5, 12, 32, 40])
def test_rolling_mean_float32_matches_pandas(window):
    x = _gappy((5, 150), 10, nan_frac=0.3, dtype=np.float32)
    ref = pd.DataFrame(x.T.astype(np.float64)).rolling(window, min_periods=1).mean().T.values
    out = qc.rolling_mean(x, window)
    assert np.allclose(out, ref, rtol=1e-5, equal_nan=True) and np.isnan(out[-1]).all()


def _alternate_inf_median(v):
    """The documented NaN rule spelled out: NaNs become +inf, -inf, +inf, ... in order, then the median."""
    v = v.astype(np.float64).copy()
    nan = np.flatnonzero(np.isnan(v))
    v[nan] = np.where(np.arange(len(nan)) % 2 == 0, np.inf, -np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf in the middle of an all-NaN row
        m = np.median(v)
    return m if np.isfinite(m) else np.nan


@pytest.mark.parametrize("n", [7, 60, 600])  # odd and even lengths; sorted (short) and partitioned (long) rows
def test_nanmedian_fast_follows_the_alternating_inf_rule(n):
    a = _gappy((9, n), 11, nan_frac=0.2)
    a[4, : n // 2 + 1] = np.nan  # more NaN than readings: no median
    ref = np.array([_alternate_inf_median(r) for r in a])
    assert np.allclose(qc.nanmedian_fast(a, 1), ref, equal_nan=True)
    assert np.allclose(qc.nanmedian_fast(a.astype(np.float32), 1), ref, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("t,hop", [(240, None), (250, None), (240, 20)])  # tiled windows, a ragged end, overlapping
def test_hampel_windows_match_reference(t, hop):
    x = _gappy((4, t), 12, nan_frac=0.1, dtype=np.float32)
    x[1, 100] = 80.0
    w = 60
    med, mad = stats.rolling_median_mad(x, w, hop)
    h = hop or w
    starts = list(range(0, t - w + 1, h))
    starts += [t - w] if starts[-1] != t - w else []
    centres = np.array(starts) + (w - 1) / 2
    for i in range(x.shape[0]):
        for j in range(t):
            k = int(np.argmin(np.abs(centres - j)))  # nearest centre (ties: the earlier window)
            win = x[i, starts[k] : starts[k] + w]
            m = _alternate_inf_median(win)
            d = _alternate_inf_median(np.abs(win - m)) if np.isfinite(m) else np.nan
            assert np.allclose([med[i, j], mad[i, j]], [m, d], rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("t", [1440, 1000, 7])  # whole scan blocks, a padded last block, less than one block
def test_blocked_ewma_matches_the_recursion(t):
    z = np.random.default_rng(13).standard_normal((5, t))
    e = stats.from_time_blocks(stats._ewma_blocks(stats.time_blocks(z), 0.1, z[:, 0]), t)
    assert np.allclose(e, stats.ewma(z, 0.1))  # scipy's lfilter with the same start


@pytest.mark.parametrize("t0_ms", [0, 7 * 3600_000 + 1_500_000])  # window starting at midnight, and mid-day
def test_seasonal_baseline_matches_reference(t0_ms):
    step, slots = 1800, 48
    x = _gappy((3, 48 * 4 + 13), 14, nan_frac=0.2)
    r = stats.seasonal_residual(x, step, t0_ms, 4.0, 8.0, floor=0.01)
    first = (t0_ms // 1000 % 86400) // step
    slot = (first + np.arange(x.shape[1])) % slots
    resid = np.full(x.shape, np.nan)
    for i in range(x.shape[0]):
        for s_ in range(slots):
            v = np.sort(x[i, slot == s_][~np.isnan(x[i, slot == s_])])
            base = v[1:-1].mean() if len(v) >= 3 else (v.mean() if len(v) else np.nan)  # trimmed mean
            resid[i, slot == s_] = x[i, slot == s_] - base
    # the scale is a median over a strided sample of the residuals, as in qc.row_median
    scale = np.array([max(1.4826 * qc.nanmedian_fast(np.abs(row)[None, :: max(len(row) // 256, 1)], 1)[0], 0.01)
                      for row in resid])
    assert np.allclose(r.score, np.abs(resid) / scale[:, None], rtol=1e-6, equal_nan=True)
    assert ((r.flag == qc.MISSING) == np.isnan(x)).all()


def test_run_all_equals_each_detector_on_its_own():
    """The blocked run (shared inputs, outputs written in place, threads) gives what each public detector gives."""
    x = _gappy((70, 600), 15, nan_frac=0.05)
    x[5, 199:202] = [20.0, 220.0, 20.0]  # a spike
    x[9, 300:] += 6  # an offset
    x[12, 100:200] = 25.0  # a flat line
    p = QcParams(0, 100, 5, 35, 0.1, 600.0)
    sp = StatParams()
    got = run_all(x, p, 0, sp, chunk=16, dtype=np.float64, score_dtype=np.float64, workers=2)
    ref = dict(run_qc(x, p))  # whole-array QC (drift over every series at once)
    g0, b = 0, p.block
    ref["hampel"] = stats.hampel(x, g0, b, p.baseline_blocks, sp.hampel_suspect_z, sp.hampel_fail_z,
                                 floor=p.resolution, min_blocks=p.min_blocks, recent=p.recent_steps)
    r = qc.neighbour_residual(x)
    z = stats.standardise(r, g0, b, p.baseline_blocks, p.min_blocks, p.resolution)
    ref["ewma"] = stats.ewma_chart(r, g0, b, sp.ewma_alpha, sp.ewma_suspect_l, sp.ewma_fail_l, p.baseline_blocks,
                                   p.min_blocks, floor=p.resolution, z=z)
    ref["cusum"] = stats.cusum(r, g0, b, sp.cusum_k, sp.cusum_h, cusum_window_n(sp, p.step_s),
                               p.baseline_blocks, p.min_blocks, floor=p.resolution, z=z)
    ref["seasonal"] = stats.seasonal_residual(x, p.step_s, 0, sp.seasonal_suspect_z, sp.seasonal_fail_z,
                                              floor=p.resolution)
    assert set(got) == set(ref)
    for k in ref:
        assert (got[k].flag == ref[k].flag).all(), k
        assert np.allclose(got[k].score, ref[k].score, equal_nan=True), k
    assert (got["spike"].flag[5, 200] >= qc.SUSPECT) and (got["flat_line"].flag[12, 150:200] >= qc.SUSPECT).all()
