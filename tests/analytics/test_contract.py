"""One contract every detector keeps (river's idea of a check suite run over all estimators):
shapes, dtypes, NaN, all-missing, constant and tiny inputs, for each detector the service runs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analytics import emptylevel, qc, shift, stats, trend
from analytics.detectors import QcParams, StatParams, batch_run, cusum_window_n

P = QcParams(0, 100, 5, 60, 0.1, 60.0, block_s=600.0)  # 10-sample blocks: short inputs still get baselines
SP = StatParams()
B = P.block


def _z(x):
    return stats.standardise(x, 0, B, P.baseline_blocks, P.min_blocks, P.resolution)


DETECTORS = {
    "gross_range": lambda x: qc.gross_range(x, P.fail_lo, P.fail_hi, P.suspect_lo, P.suspect_hi),
    "flat_line": lambda x: qc.flat_line(x, P.resolution / 2, *P.flat_n),
    "spike": lambda x: qc.spike(x, *(k * qc.step_scale(x, 0, B, 2 * P.resolution) for k in (12, 24))),
    "rate_of_change": lambda x: qc.rate_of_change(x, P.step_s, 0.1, 0.2),
    "gap": lambda x: qc.gap(x, 2, 10),
    "drift": lambda x: qc.drift(x, 0, B, 5, 10, 20, floor=P.resolution, k=6, min_blocks=3),
    "hampel": lambda x: stats.hampel(x, 0, B, 6, SP.hampel_suspect_z, SP.hampel_fail_z, floor=P.resolution),
    "ewma": lambda x: stats.ewma_chart(x, 0, B, 0.1, 4.0, 8.0, floor=P.resolution),
    "cusum": lambda x: stats.cusum(x, 0, B, 0.5, 8.0, cusum_window_n(SP, P.step_s), floor=P.resolution),
    "seasonal": lambda x: stats.seasonal_residual(x, 3600.0, 0, 4.0, 8.0, floor=P.resolution),
    "shift": lambda x: shift.run_record(x, 0, shift.ShiftParams(window=8, block=B, stride=2, floor=P.resolution)),
    "trend": lambda x: trend.run_record(x, 0, trend.TrendParams(block=B, floor=P.resolution, min_hours=2)),
    "emptylevel": lambda x: emptylevel.run_record(x, 0, emptylevel.EmptyParams(side=1, reset_step=10.0,
                                                                                 resolution=P.resolution),
                                                  derived=100.0 - x),
    "trend_pace": lambda x: trend.run_record(x, 0, trend.TrendParams(block=B, floor=P.resolution, min_hours=2,
                                                                     pace=True, lo=0, hi=100, span=55)),
}
FLAGS = {qc.GOOD, qc.NOT_EVALUATED, qc.SUSPECT, qc.FAIL, qc.MISSING}


def _inputs(dtype):
    rng = np.random.default_rng(21)
    noisy = np.round(rng.normal(30, 2, (4, 120)), 1)
    gappy = noisy.copy()
    gappy[rng.random(gappy.shape) < 0.3] = np.nan
    gappy[1] = np.nan  # one series never reports
    return {
        "noisy": noisy, "gappy": gappy, "all_missing": np.full((3, 50), np.nan), "constant": np.full((3, 120), 30.0),
        "one_sample": np.array([[30.0]]), "one_series": noisy[:1], "two_samples": noisy[:2, :2],
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_contract(name, dtype):
    for case, x in _inputs(dtype).items():
        x = x.astype(dtype)
        before = x.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning from NaN/empty slices either
            r = DETECTORS[name](x)
        assert r.flag.shape == x.shape and r.score.shape == x.shape, (case, name)
        assert r.flag.dtype == np.int8 and np.issubdtype(r.score.dtype, np.floating), (case, name)
        assert set(np.unique(r.flag).tolist()) <= FLAGS, (case, name)
        assert np.array_equal(x, before, equal_nan=True), (case, name)  # inputs are never modified
        missing = np.isnan(x)
        assert (r.flag[missing] == qc.MISSING).all(), (case, name)  # a missing reading is 9, nothing else
        assert (r.flag[~missing] != qc.MISSING).all(), (case, name)
        if case == "constant" and name != "flat_line":
            assert not ((r.flag == qc.SUSPECT) | (r.flag == qc.FAIL)).any(), (case, name)
        if case == "all_missing":
            assert (r.flag == qc.MISSING).all(), (case, name)


def test_batch_run_contract_over_the_whole_set():
    for case, x in _inputs(np.float32).items():
        res = batch_run(x.astype(np.float32), P, 0, SP)
        for name, r in res.items():
            assert r.flag.shape == x.shape and set(np.unique(r.flag).tolist()) <= FLAGS, (case, name)
