"""Bin fill-rate, time-to-full and collection order."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import waste


def test_forecast_after_emptying_and_priorities():
    t = np.arange(96)  # 24 h of 15-min readings
    a = np.where(t < 40, 10 + t * 1.0, (t - 40) * 0.5)  # emptied at sample 40, then 0.5 % per 15 min
    b = np.full(96, 95.0)  # full already
    c = np.full(96, np.nan)  # silent bin
    d = 20 + t * 0.6  # 2.4 %/h, at 77 %: full in 23/2.4 h
    d[50:60] = np.nan  # gaps do not break the fit
    e = np.full(96, 30.0)  # not filling
    fc = waste.forecast(np.stack([a, b, c, d, e]), 900)
    assert fc.fill_rate[0] == pytest.approx(2.0) and fc.fill[0] == pytest.approx(27.5)
    assert fc.hours_to_full[0] == pytest.approx((100 - 27.5) / 2.0)
    assert fc.hours_to_full[1] == 0 and fc.full_by_horizon[1]
    assert np.isnan(fc.fill[2]) and not fc.full_by_horizon[2]
    assert fc.fill_rate[3] == pytest.approx(2.4) and fc.hours_to_full[3] == pytest.approx(23 / 2.4)
    assert np.isinf(fc.hours_to_full[4]) and not fc.full_by_horizon[4]
    assert fc.priority.tolist() == [3, 1, 5, 2, 4]
    rounds = waste.collection_list(["a", "b", "c", "d", "e"], fc)
    assert [r["device"] for r in rounds] == ["b", "d"]  # a is full in 36 h: not tomorrow


def test_drop_across_a_gap_still_counts_as_emptying():
    x = np.array([[80.0, 85.0, np.nan, np.nan, 5.0, 7.0, 9.0]])
    fc = waste.forecast(x, 3600)
    assert fc.fill_rate[0] == pytest.approx(2.0)  # fitted on 5, 7, 9 only
