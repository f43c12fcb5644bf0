"""Pure detector cores: shapes, NaN handling, QARTOD flags, agreement with per-series pandas references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics import qc, stats
from analytics.detectors import QcParams, StatParams, params_for, run_all
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
    r = qc.drift(x, 30, suspect_z=6, fail_z=12, floor=0.01)
    assert (r.flag[4, 450:] >= qc.SUSPECT).mean() > 0.9
    assert (r.flag[[0, 1, 2, 3, 5], :] >= qc.SUSPECT).mean() < 0.01
    assert qc.drift(x[:2], 30).flag[0, 5] == qc.NOT_EVALUATED  # needs neighbours


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
    r = stats.hampel(x, 60, suspect_z=5, fail_z=10)
    assert r.flag[1, 150] == qc.FAIL and (r.flag >= qc.SUSPECT).sum() < 5
    assert r.flag.shape == x.shape


def test_cusum_closed_form_equals_recursion_and_detects_shift():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 400))
    x[:2, 250:] += 2.0
    r = stats.cusum(x, k=0.5, h=5.0)
    z = stats._robust_standardise(x, 0.0, slice(0, 200))
    hi = lo = np.zeros(4)
    ref = []
    for i in range(400):
        hi = np.maximum(0, hi + z[:, i] - 0.5)
        lo = np.maximum(0, lo - z[:, i] - 0.5)
        ref.append(np.maximum(hi, lo))
    assert np.allclose(np.array(ref).T, r.score)
    assert (r.flag[:2, 280:] >= qc.SUSPECT).all() and (r.flag[2:, :] == qc.FAIL).mean() < 0.02


def test_ewma_matches_pandas_and_chart_flags_offset():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 500))
    e = stats.ewma(x, 0.2)
    ref = pd.DataFrame(x.T).ewm(alpha=0.2, adjust=False).mean().T.values
    assert np.allclose(e, ref)
    x[0, 300:] += 3.0
    r = stats.ewma_chart(x, 0.1, 4.0, 8.0)
    assert (r.flag[0, 330:] >= qc.SUSPECT).all() and (r.flag[1] >= qc.SUSPECT).mean() < 0.05


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
