"""Multivariate residuals per station (analytics/multivariate.py): a broken relationship between
co-located fields that every univariate detector misses."""

from __future__ import annotations

import numpy as np

from analytics import qc
from analytics.detectors import params_for, run_all
from analytics.multivariate import PERSIST, fit_score, multivariate, run_fields, scan, station_test
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()
B = 60  # 1-min bins, hourly blocks
T = 30 * B
FAULT = slice(24 * B, 26 * B)  # two hours on station 1


def _stations(s: int = 4, seed: int = 11) -> np.ndarray:
    """(S, 3, T): PM2.5, PM10 and CO of each station follow its own slowly varying pollution level
    (a random walk, so neighbours do not share it) with small independent noise."""
    rng = np.random.default_rng(seed)
    level = 30 + np.cumsum(rng.normal(0, 0.6, (s, T)), axis=1)
    level = np.abs(level - 30) + 10  # ug/m3, positive
    pm25 = level + rng.normal(0, 0.5, (s, T))
    pm10 = 1.6 * level + rng.normal(0, 0.8, (s, T))
    co = 50.0 * level + rng.normal(0, 20.0, (s, T))  # ug/m3
    x = np.stack([pm25, pm10, co], axis=1)
    # the fault (a correlated multi-sensor one: the optical PM sensor's airflow clogs, say): station
    # 1's PM2.5 and PM10 rise together by up to 10 and 16 ug/m3 over 30 min and stay there 90 min,
    # while its CO follows the air as before; each field alone stays well inside its usual range
    ramp = np.minimum(np.arange(FAULT.stop - FAULT.start) / 30.0, 1.0) * 10.0
    x[1, 0, FAULT] += ramp
    x[1, 1, FAULT] += 1.6 * ramp
    x[:, 2] = np.round(x[:, 2], -1)  # the catalogue's 10 ug/m3 steps
    x[:, :2] = np.round(x[:, :2], 1)
    return x


def test_a_broken_relationship_is_found_that_univariate_tests_miss():
    x = _stations()
    res = multivariate(x, 0, B, floor=np.array([0.1, 0.1, 10.0]))
    bad = res.flag >= qc.SUSPECT
    # flagged from ~20 min into the 30-min ramp (plus PERSIST samples) to its end: flagged samples
    # are not learnt, so the model does not absorb the fault after its first hour
    assert bad[1, FAULT.start : FAULT.start + 30].any()
    assert bad[1, FAULT.start + 30 : FAULT.stop].all()
    assert not bad[1, FAULT.stop + 2 : FAULT.stop + 4 * B].any()  # its end is no new fault
    clean = bad.copy()
    clean[1, FAULT.start : FAULT.stop + B] = False
    assert clean.sum() <= 3  # clean stretches: next to nothing
    # the univariate set on each field sees nothing in the fault stretch
    for i, name in enumerate(("pm25", "pm10", "co")):
        p = params_for(CAT["air"], CAT["air"].field(name), 60.0)
        flags = run_all(x[:, i], p, 0, dtype=np.float64)
        hit = {k for k, r in flags.items() if k != "gross_range" and (r.flag[1, FAULT] >= qc.SUSPECT).any()}
        assert not hit, (name, hit)


def test_model_follows_drift_and_warm_up_is_not_evaluated():
    x = _stations()
    x[:, :, 10 * B :] *= 1.5  # every field of every station 50 % higher from hour 10: the relationship holds
    t2, q, ev = fit_score(x, 0, B, 0.01)
    assert not ev[:, : 6 * B].any() and ev[:, 7 * B :].all()  # six training blocks first
    res = multivariate(x, 0, B, floor=0.01)
    assert (res.flag[:, : 6 * B] == qc.NOT_EVALUATED).all()
    clean = res.flag >= qc.SUSPECT
    clean[1, FAULT.start : FAULT.stop + B] = False
    assert clean.sum() <= 3
    y = x.copy()
    y[2, 0, 200] = np.nan
    assert multivariate(y, 0, B, floor=0.01).flag[2, 200] == qc.NOT_EVALUATED
    y[2, :, 201] = np.nan
    assert multivariate(y, 0, B, floor=0.01).flag[2, 201] == qc.MISSING


def test_window_verdicts_equal_batch_verdicts():
    x = _stations()
    whole = multivariate(x, 0, B, floor=0.01).flag
    lo = 10 * B + 17  # a live window starting mid-block: its first whole block is 11
    win = multivariate(x[:, :, lo:], lo, B, floor=0.01).flag
    # from the block whose 12 training blocks all lie inside the window, the same verdicts
    np.testing.assert_array_equal(win[:, 23 * B - lo :], whole[:, 23 * B :])


def test_learning_the_fault_is_what_the_exclusion_prevents():
    x = _stations()
    fl = np.array([0.1, 0.1, 10.0])
    learnt = scan(x, 0, B, fl, exclude=None)["qn"]  # the model re-fits on the fault
    kept = scan(x, 0, B, fl)["qn"]
    late = slice(FAULT.start + B + 10, FAULT.stop)  # the fault's second hour
    assert np.nanmedian(learnt[1, late]) < 20.0 < np.nanmedian(kept[1, late])


def test_a_relationship_broken_for_good_becomes_the_new_normal():
    x = _stations()
    x[1, 1, 20 * B :] *= 0.7  # PM10 re-calibrated from hour 20 on: flagged, then re-baselined
    res = multivariate(x, 0, B, floor=np.array([0.1, 0.1, 10.0]))
    bad = res.flag[1] >= qc.SUSPECT
    assert bad[20 * B + PERSIST : 21 * B].all()
    assert not bad[28 * B :].any()


def test_a_short_burst_of_one_field_is_no_station_fault_and_the_verdict_names_its_fields():
    x = _stations()
    fl = np.array([0.1, 0.1, 10.0])
    x[2, 0, 15 * B : 15 * B + 6] *= 4.0  # a burst of PM2.5 (a truck idling): 6 samples
    res, fields = station_test(x, 0, B, fl)
    assert not (res.flag[2] >= qc.SUSPECT).any()
    assert (scan(x, 0, B, fl)["qn"][2, 15 * B : 15 * B + 6] > 20.0).all()  # it is far off the model
    y = _stations()
    y[3, 1, 20 * B : 22 * B] *= 0.5  # PM10 alone loses half its reading (its inlet half blocked)
    res, fields = station_test(y, 0, B, fl)
    bad = res.flag[3] >= qc.SUSPECT
    assert bad[20 * B + PERSIST : 22 * B].mean() > 0.9
    assert fields[3, 1, bad].all() and not fields[3, 2, bad].any()  # PM10, not CO
    assert not fields[:, :, ~(res.flag >= qc.SUSPECT).any(axis=0)].any()


def _run_fields_loop(share: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Plain reference of run_fields: the mean share since the run's first sample, sample by sample."""
    s, f, t = share.shape
    out = np.zeros(share.shape, dtype=bool)
    for i in range(s):
        start = None
        for j in range(t):
            if not on[i, j]:
                start = None
                continue
            start = j if start is None else start
            out[i, :, j] = share[i, :, start : j + 1].mean(axis=1) >= 1.0 / f
    return out


def test_a_station_alarm_is_one_run_on_each_field_it_names():
    rng = np.random.default_rng(3)
    share = rng.dirichlet(np.ones(3), size=(2, 200)).transpose(0, 2, 1)  # (S, F, T), wandering around 1/3
    share[0, 0, 50:150] = 0.45  # field 0 carries most of this alarm ...
    share[0, 1, 50:150] = 0.35 + rng.normal(0, 0.05, 100)  # ... field 1 hovers just above 1/3 ...
    share[0, 2, 50:150] = 1.0 - share[0, 0, 50:150] - share[0, 1, 50:150]  # ... field 2 below
    on = np.zeros((2, 200), dtype=bool)
    on[0, 50:150] = on[1, 20:30] = on[1, 31:60] = True
    got = run_fields(share, on)
    np.testing.assert_array_equal(got, _run_fields_loop(share, on))
    assert not got[~np.broadcast_to(on[:, None, :], got.shape)].any()
    per_sample = (share >= 1 / 3) & on[:, None, :]
    starts = lambda m: int((m[1:] & ~m[:-1]).sum() + m[0])  # noqa: E731
    assert starts(per_sample[0, 1]) > 5  # sample by sample field 1 flickers in and out ...
    assert starts(got[0, 0]) == starts(got[0, 1]) == 1 and not got[0, 2, 60:].any()  # ... per run: once


def test_a_field_that_stood_still_through_training_is_no_fault_when_it_moves_again():
    x = _stations()
    fl = np.array([0.1, 0.1, 10.0])
    x[2, 2, : 14 * B] = 500.0  # CO of station 2 read one value for 14 h (stuck, or clamped at a floor) ...
    res = multivariate(x, 0, B, floor=fl)  # ... then its usual 20 ug/m3 noise: no station fault
    assert not (res.flag[2, 14 * B : 20 * B] >= qc.SUSPECT).any()
    y = x.copy()
    y[2, 1, 16 * B : 18 * B] *= 0.5  # its PM10 halved meanwhile: still a broken PM pair
    res, fields = station_test(y, 0, B, fl)
    bad = res.flag[2] >= qc.SUSPECT
    assert bad[16 * B + PERSIST : 18 * B].mean() > 0.9 and fields[2, 1, bad].all()
