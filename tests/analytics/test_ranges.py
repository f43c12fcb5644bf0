"""Expected ranges per deployment (analytics/ranges.py): a cold river is not "suspect" all year."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import qc
from analytics.ranges import LearnParams, RangesConfig, RangesError, RangeState, bounds, expected, learn, load
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()
WT = CAT["water"].field("temperature")  # catalogue expected 15-40 C: a tropical city
STEP = 900_000
DAY = 96


def _cold_river(days: int, s: int = 3, seed: int = 7) -> np.ndarray:
    """2-10 C: a daily swing of 3 C around a slow seasonal rise, 15-min bins."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    x = 5.0 + 1.5 * np.sin(2 * np.pi * t / DAY) + 2.0 * t / t.size + rng.normal(0, 0.2, (s, t.size))
    return np.round(x / WT.resolution) * WT.resolution


def test_catalogue_span_flags_a_cold_river_learned_span_does_not():
    x = _cold_river(21)
    tropical = qc.gross_range(x, WT.lo, WT.hi, WT.expected_lo, WT.expected_hi)
    assert (tropical.flag == qc.SUSPECT).mean() > 0.99  # the finding: 99 % of a cold river flagged
    lp = LearnParams(WT.lo, WT.hi, STEP, days=14, catalogue_lo=WT.expected_lo, catalogue_hi=WT.expected_hi)
    st = RangeState([])
    lo, hi = expected(RangesConfig(), st, "water", "temperature", ["r0", "r1", "r2"], x, 0, x.shape[1], lp)
    got = qc.gross_range(x, WT.lo, WT.hi, lo, hi)
    assert not (got.flag >= qc.SUSPECT).any()
    assert np.isnan(lo[:, : 14 * DAY]).all() and np.isfinite(lo[:, 14 * DAY :]).all()  # learning, then bounds
    assert (lo[:, -1] > WT.lo).all() and (hi[:, -1] < 15.0).all()  # a span of this river, not of the sensor
    # a tropical reading is what is odd for this river
    y = x.copy()
    y[1, -5] = 27.0
    bad = qc.gross_range(y, WT.lo, WT.hi, lo, hi)
    assert bad.flag[1, -5] == qc.SUSPECT and (bad.flag >= qc.SUSPECT).sum() == 1


def test_learning_in_passes_equals_one_pass(tmp_path):
    x = _cold_river(16, s=2)
    lp = LearnParams(WT.lo, WT.hi, STEP, days=14, catalogue_lo=WT.expected_lo, catalogue_hi=WT.expected_hi)
    one = RangeState([])
    learn(one, one.rows_for(["a", "b"]), x, 10, lp)
    end = 0
    for cut in (50, 700, 1343, 1344, 1345, x.shape[1]):
        path = tmp_path / "r.npz"
        st = RangeState.load(path) or RangeState([])
        lo = max(end - 30, 0)
        learn(st, st.rows_for(["a", "b"]), x[:, lo:cut], 10 + lo, lp)
        st.save(path)
        end = cut
    back = RangeState.load(tmp_path / "r.npz")
    assert back is not None
    np.testing.assert_array_equal(back.lo, one.lo)
    np.testing.assert_array_equal(back.learned_g, one.learned_g)
    np.testing.assert_array_equal(bounds(back, np.arange(2), 0, x.shape[1], lp)[0],
                                  bounds(one, np.arange(2), 0, x.shape[1], lp)[0])


def test_ranges_file_is_validated(tmp_path):
    good = tmp_path / "ranges.yaml"
    good.write_text("learn: {enabled: false}\nranges:\n  - {kind: water, field: temperature, lo: 0, hi: 18, "
                    "devices: ['river-*']}\n")
    cfg = load(good, CAT)
    st = RangeState([])
    lp = LearnParams(WT.lo, WT.hi, STEP, catalogue_lo=WT.expected_lo, catalogue_hi=WT.expected_hi)
    x = _cold_river(1, s=2)
    lo, hi = expected(cfg, st, "water", "temperature", ["river-1", "tap-1"], x, 0, x.shape[1], lp)
    assert (lo[0] == 0.0).all() and (hi[0] == 18.0).all()  # configured
    assert (lo[1] == WT.expected_lo).all()  # learning off: the catalogue's
    bad = tmp_path / "bad.yaml"
    bad.write_text("ranges:\n  - {kind: water, field: colour, lo: 0, hi: 1}\n  - {kind: river, field: t, lo: 0, "
                   "hi: 1}\n  - {kind: water, field: temperature, lo: 5, hi: 2}\n"
                   "  - {kind: water, field: ph, lo: -3, hi: 9}\n")
    with pytest.raises(RangesError) as e:
        load(bad, CAT)
    for words in ("no field 'colour'", "unknown kind", "lo 5.0 must be below hi 2.0", "leaves the sensor range"):
        assert words in str(e.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("learn: {dayz: 3}\n")
    with pytest.raises(RangesError, match="dayz"):
        load(typo, CAT)


def test_a_tropical_series_is_checked_against_the_catalogue_while_it_learns():
    rng = np.random.default_rng(2)
    x = np.round(27.0 + rng.normal(0, 0.5, (2, 3 * DAY)), 2)
    x[0, 2 * DAY] = 55.0  # a hot reading on day 2, long before the 14 days are over
    lp = LearnParams(WT.lo, WT.hi, STEP, days=14, catalogue_lo=WT.expected_lo, catalogue_hi=WT.expected_hi)
    lo, hi = expected(RangesConfig(), RangeState([]), "water", "temperature", ["a", "b"], x, 0, x.shape[1], lp)
    assert np.isnan(lo[:, :4]).all() and (lo[:, 4:] == WT.expected_lo).all()  # from the second hour on
    got = qc.gross_range(x, WT.lo, WT.hi, lo, hi)
    assert np.argwhere(got.flag >= qc.SUSPECT).tolist() == [[0, 2 * DAY]]
