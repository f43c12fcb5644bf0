"""The trend test (analytics/trend.py): a slow drift against a frozen long baseline is caught, normal
behaviour that looks like one is not, and passes with restarts give the flags of one run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analytics import qc
from analytics.trend import TrendParams, TrendState, TrendStore, reference, run_record, update

HOUR = 60  # 1-min grid
TP = TrendParams(block=HOUR, floor=0.1, span_floor=0.0)


def _city(s: int = 12, hours: int = 72, seed: int = 3) -> np.ndarray:
    """A pollutant-like field (S, T): a shared daily cycle and weekday/weekend level, each station at
    its own level (so its own daily swing: multiplicative), noise, quantised to 0.1."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours * HOUR) / HOUR  # hours
    day = 1.0 + 0.6 * np.sin(2 * np.pi * (t - 7.0) / 24.0)
    week = np.where((t // 24) % 7 >= 5, 0.8, 1.0)  # a weekend in the record
    level = rng.uniform(0.6, 1.6, s)[:, None]
    x = 40.0 * level * day * week * (1.0 + 0.05 * rng.standard_normal((s, t.size)))
    return np.round(x, 1)


def _alarms(res: qc.QcResult) -> np.ndarray:
    return (res.flag == qc.SUSPECT) | (res.flag == qc.FAIL)


def test_a_slow_drift_is_caught_and_the_alarm_ends_with_it():
    x = _city()
    t0, t1 = 20 * HOUR, 40 * HOUR
    x[4, t0:t1] += np.linspace(0.0, 15.0, t1 - t0)  # 15 units over 20 h: ~0.75 per hour, under the noise per reading
    res = run_record(x, 0, TP)
    hits = np.flatnonzero(_alarms(res)[4])
    assert hits.size and t0 < hits[0] < t0 + 12 * HOUR  # seen within 12 h of its start
    assert hits[-1] <= t1 + 2 * HOUR  # the baseline was frozen: back at it, the alarm stops
    assert not _alarms(res)[4, t1 + 2 * HOUR :].any()
    clean = np.delete(np.arange(x.shape[0]), 4)
    assert not _alarms(res)[clean].any()  # the drifting station does not move the others' verdicts


def test_the_alarm_ends_within_the_hour_the_fault_ended_in_not_an_hour_after():
    # the verdict of an hour flags the next one, and its test value is a median over two hours: a
    # fault that ended 40 min into an hour flagged all of the next hour too (a false alarm after the
    # fault); the end of the closing hour and the start of the next are looked at again
    x = _city()
    t0, t1 = 20 * HOUR, 40 * HOUR + 40
    x[4, t0:t1] += np.linspace(0.0, 15.0, t1 - t0)
    res = run_record(x, 0, TP)
    al = _alarms(res)[4]
    assert al[t0 : t1].any()
    assert not al[t1 + HOUR // 3 :].any()
    old = _alarms(run_record(x, 0, replace(TP, recheck=0.0)))[4]  # without: the clean hour after is flagged
    assert old[41 * HOUR : 42 * HOUR].all()
    # a fault that ends 10 min into an hour: the first quarter of that hour is looked at once
    x = _city()
    t1 = 40 * HOUR + 10
    x[4, t0:t1] += np.linspace(0.0, 15.0, t1 - t0)
    al = _alarms(run_record(x, 0, TP))[4]
    assert al[t0:t1].any() and not al[41 * HOUR :].any()


def test_a_drift_from_the_first_hours_is_held_against_the_level_before_it():
    x = _city()
    t0 = 4 * HOUR
    x[2, t0:] += np.linspace(0.0, 20.0, x.shape[1] - t0)
    res = run_record(x, 0, TP)
    assert _alarms(res)[2].any()



def test_the_end_of_a_fault_learnt_in_the_warm_up_raises_nothing_however_far_it_moves():
    # a station stepped far off its neighbours through the first 12 h (a correlated board fault):
    # its baseline holds the faulty level; the move back towards the neighbours is no drift, at any
    # size: a fail-sized move must not slip past the check a suspect-sized one gets (it did: every
    # hour past fail_z was flagged 4 for the rest of the record)
    x = _city(hours=48)
    x[3, 30 : 12 * HOUR] += 120.0
    res = run_record(x, 0, replace(TP, step_hours=0))  # the check on its own: the baseline stays
    assert np.nanmax(res.score[3, 13 * HOUR :]) > TP.fail_z  # far past fail_z against its baseline ...
    assert not _alarms(res)[3, 13 * HOUR :].any()  # ... and no alarm of either level
    assert not _alarms(run_record(x, 0, TP))[3, 13 * HOUR :].any()  # by default: a step, the baseline moves


def test_a_ramp_from_the_first_hour_that_joined_its_baseline_is_caught_by_its_walk():
    # a smooth series whose scale is its floor (as a span floor does): a ramp from the first hour joins
    # the baseline hour by hour, each hour within join_z of a baseline that holds the ramp before it
    tp = replace(TP, floor=1.0)
    for seed in (3, 4):
        x = _city(hours=48, seed=seed)
        x[5] = np.round(x[5] + np.linspace(0.0, 12.0, x.shape[1]), 1)
        assert not _alarms(run_record(x, 0, replace(tp, slope_hours=0)))[5].any()  # the level alone: missed
        al = _alarms(run_record(x, 0, tp))
        assert al[5].any()
        assert not al[np.arange(x.shape[0]) != 5].any()


def test_a_residual_that_wanders_away_and_back_is_no_walk():
    # the look-alike: a station with a daily swing and a 40 h wave of its own (a residual that moves
    # for hours one way, then back), as large as the ramp above
    tp = replace(TP, floor=1.0)
    x = _city(hours=96)
    t = np.arange(x.shape[1]) / HOUR
    x[5] = np.round(x[5] + 3.0 * np.sin(2 * np.pi * (t - 3.0) / 24.0) + 3.0 * np.sin(2 * np.pi * t / 40.0), 1)
    assert not _alarms(run_record(x, 0, tp)).any()

def test_daily_and_weekly_cycles_bursts_and_quantised_stretches_raise_nothing():
    x = _city(hours=96)
    rng = np.random.default_rng(9)
    for s in range(x.shape[0]):  # bursts: 2-8 readings at 2-5x the level, a few a day per station
        for start in rng.integers(0, x.shape[1] - 10, 6):
            x[s, start : start + rng.integers(2, 9)] *= rng.uniform(2.0, 5.0)
    x[7, 30 * HOUR : 31 * HOUR + 30] = x[7, 30 * HOUR]  # a quantised flat stretch of 90 min
    x[1, 50 * HOUR : 52 * HOUR] = np.nan  # an outage
    res = run_record(x, 0, TP)
    assert not _alarms(res).any()
    assert (res.flag[1, 50 * HOUR : 52 * HOUR] == qc.MISSING).all()


def test_a_bin_temperature_following_its_fill_is_no_drift():
    """A bin's temperature warms by ~2 C as it fills and drops back when emptied (a reset of the fill):
    the span floor keeps that saw-tooth below an alarm; a fouled sensor walking 8 C is not."""
    rng = np.random.default_rng(5)
    s, t = 10, 72 * 4  # 15-min grid: blocks of 4
    hours = np.arange(t) / 4.0
    fill = (hours[None, :] * rng.uniform(2.0, 6.0, (s, 1))) % 100.0  # % per hour, emptied when full
    x = 30.0 + 4.0 * np.cos(2 * np.pi * (hours - 14.0) / 24.0) + 2.0 * fill / 100.0 + 0.3 * rng.standard_normal((s, t))
    tp = TrendParams(block=4, floor=0.1, span_floor=0.005 * 40.0)  # expected span 40 C
    x[3, 100:200] += np.linspace(0.0, 8.0, 100)
    res = run_record(np.round(x, 1), 0, tp)
    assert not _alarms(res)[np.arange(s) != 3].any()
    assert _alarms(res)[3, 100:204].any()


def test_warm_up_and_missing_say_so():
    x = _city(hours=12)
    res = run_record(x, 0, TP)
    # no verdict before min_hours complete baseline hours have closed (the first hour is one of them)
    first = (TP.min_hours + 1) * HOUR
    assert (res.flag[:, :first] == qc.NOT_EVALUATED).all()
    assert (res.flag[:, first:] == qc.GOOD).all()


def test_a_lasting_new_level_is_learnt_again():
    x = _city(hours=72)
    x[5, 10 * HOUR : 20 * HOUR] += np.linspace(0.0, 30.0, 10 * HOUR)  # a walk to a new level that stays
    x[5, 20 * HOUR :] += 30.0
    tp = replace(TP, rebase_hours=12)
    al = _alarms(run_record(x, 0, tp))[5]
    hits = np.flatnonzero(al)
    assert hits.size and hits[0] < 20 * HOUR
    assert not al[48 * HOUR :].any()  # re-based, warmed up again, quiet


def test_a_step_is_not_judged_the_baseline_moves_to_it_and_a_drift_from_there_is_caught():
    # a step (the end of a fault learnt in the warm-up, an offset, a re-mounted sensor) leaves the
    # baseline at once and stands still: which side is the fault the level cannot tell, the shift test
    # flags the step; the trend test holds its verdict for step_hours, then moves its baseline there
    x = _city(hours=72)
    x[5, 10 * HOUR + 20 :] -= 30.0
    res = run_record(x, 0, TP)
    assert not _alarms(res)[5].any()
    held = np.flatnonzero(res.flag[5, 11 * HOUR :] == qc.NOT_EVALUATED)
    assert held.size and held[-1] < (TP.step_hours + 2) * HOUR  # held, then judged again
    assert (res.flag[5, 16 * HOUR :] == qc.GOOD).all()
    x[5, 30 * HOUR :] += np.linspace(0.0, 20.0, 42 * HOUR)  # a walk from the new level
    al = _alarms(run_record(x, 0, TP))[5]
    assert al.any() and np.flatnonzero(al)[0] > 30 * HOUR
    # off: the step is an alarm that lasts (until the baseline is learnt again after rebase_hours)
    assert _alarms(run_record(x, 0, replace(TP, step_hours=0)))[5, 12 * HOUR : 30 * HOUR].all()


def test_passes_with_restarts_equal_one_run(tmp_path):
    x = _city(s=6, hours=30)
    x[2, 10 * HOUR :] += np.linspace(0.0, 30.0, x.shape[1] - 10 * HOUR)
    devs = [f"d{i}" for i in range(x.shape[0])]
    g0 = 500 * HOUR  # block-aligned
    whole = run_record(x, g0, TP, devs)
    got = np.full(x.shape, -1, dtype=np.int8)
    end = 0
    for cut in (37, 300, 301, 650, 1200, x.shape[1]):  # passes of uneven length, saved and re-loaded
        store = TrendStore(tmp_path / "trend")
        st = store.get("air", "pm25", TP)
        lo = max(end - 50, 0)  # windows overlap what was processed before
        w = x[:, lo:cut]
        res = update(st, st.rows_for(devs), w, reference(w), g0 + lo, TP)
        got[:, end:cut] = res.flag[:, end - lo :]
        assert (res.flag[:, : end - lo] == qc.NOT_EVALUATED).all()  # processed once only
        store.save("air", "pm25")
        end = cut
    np.testing.assert_array_equal(got, whole.flag)
    assert _alarms(whole)[2].any()


def test_a_state_of_another_layout_is_ignored(tmp_path):
    st = TrendState(["a", "b"], TP)
    st.save(tmp_path / "s.npz")
    assert TrendState.load(tmp_path / "s.npz", replace(TP, block=30)) is None
    back = TrendState.load(tmp_path / "s.npz", TP)
    assert back is not None and back.devices == ["a", "b"] and back.g_next is None


def _bins(s: int = 12, hours: int = 72, seed: int = 8) -> np.ndarray:
    """Bin fill % on a 15-min grid (S, T): each bin fills at its own pace, is emptied every 24-84 h
    (a reset), sits pegged at 100 % when full before its round, noise 0.7 %, quantised to 0.1."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours * 4) / 4.0
    rate = rng.uniform(0.3, 5.0, (s, 1))  # % per hour
    period = rng.choice([24.0, 48.0, 84.0], (s, 1))
    since = (t[None, :] + rng.uniform(0, 24, (s, 1))) % period
    fill = np.clip(3.0 + rate * since, 0.0, 100.0) + 0.7 * rng.standard_normal((s, t.size))
    return np.round(np.clip(fill, 0.0, 100.0), 1)


PACE = TrendParams(block=4, floor=0.5, pace=True, lo=0.0, hi=100.0, span=100.0, min_hours=6, join_z=3.0,
                   suspect_z=7.0, fail_z=14.0)


def test_pace_mode_collections_and_full_bins_raise_nothing():
    res = run_record(_bins(), 0, PACE)
    assert not _alarms(res).any()
    assert (res.flag[:, : 7 * 4] == qc.NOT_EVALUATED).all()  # warm-up: the pace needs hours of changes


def test_pace_mode_catches_a_drifting_fill_sensor():
    x = _bins(seed=9)
    a, b = 14 * 4, 40 * 4
    quiet = [r for r in range(x.shape[0]) if np.diff(x[r, a:b]).min() > -10 and x[r, a:b].max() < 75]
    assert quiet  # bins with no collection and not full in the stretch
    row = quiet[0]
    t0, t1 = 20 * 4, 30 * 4
    x[row, t0:t1] = np.clip(x[row, t0:t1] + np.linspace(0.0, 40.0, t1 - t0), 0.0, 100.0)  # 4 % per hour for 10 h
    al = _alarms(run_record(x, 0, PACE))
    assert al[row, t0 : t1 + 4].any()
    assert not al[row, t1 + (PACE.pace_hours + 1) * 4 :].any()  # the pace is back: the alarm ends with the drift
    assert not al[np.arange(x.shape[0]) != row].any()


FILL = replace(PACE, side=-1)  # a fill %: a collection takes it down


def test_pace_mode_catches_a_fill_sensor_walking_toward_empty_from_its_first_hours():
    x = _bins(seed=9)
    quiet = [r for r in range(x.shape[0]) if np.diff(x[r, : 30 * 4]).min() > -10 and 60 < x[r, 0] < 80]
    assert quiet
    row = quiet[0]
    t0, t1 = 2 * 4, 12 * 4  # in the warm-up: the pace learnt there is the fault's
    x[row, t0:] -= np.concatenate([np.linspace(0.0, 50.0, t1 - t0), np.full(x.shape[1] - t1, 50.0)])
    x[row] = np.clip(x[row], 0.0, 100.0)
    assert not _alarms(run_record(x, 0, PACE))[row, t0:t1].any()  # without the side: learnt as its pace
    al = _alarms(run_record(x, 0, FILL))
    assert al[row, t0 : t1 + 4].any()
    assert not al[np.arange(x.shape[0]) != row].any()


def test_pace_mode_with_a_side_collections_slow_bins_and_noise_raise_nothing():
    x = _bins(seed=8)
    x[0] = np.round(np.clip(40.0 + 1.5 * np.random.default_rng(1).standard_normal(x.shape[1]), 0, 100), 1)  # a still, noisy bin
    assert not _alarms(run_record(x, 0, FILL)).any()
    assert not _alarms(run_record(100.0 - x, 0, replace(FILL, side=1))).any()  # its distance-like mirror


def test_pace_mode_a_slower_fill_than_learnt_raises_nothing():
    # a fill sensor drifting toward full through the warm-up: its fast pace is learnt; when the drift
    # ends the bin fills at its own, slower pace again (as on a quieter day): not a fault
    x = _bins(seed=9)
    quiet = [r for r in range(x.shape[0]) if np.diff(x[r, : 30 * 4]).min() > -10 and x[r, : 30 * 4].max() < 50]
    assert quiet
    row = quiet[0]
    t1 = 12 * 4
    x[row] = np.clip(x[row] + np.concatenate([np.linspace(0.0, 48.0, t1), np.full(x.shape[1] - t1, 48.0)]), 0, 100)
    for tp in (FILL, replace(FILL, side=0)):
        al = _alarms(run_record(x, 0, tp))[row]
        assert al[t1:].any() == (tp.side == 0)  # without a side the slower pace after it is flagged


def test_hours_clipped_at_the_range_limit_are_no_baseline():
    # a negative offset that pins a station at 0 through its first 20 h, while its neighbours read on:
    # learnt as its baseline, the readings after it read as a drift (a multiplicative station's
    # residual swings with the day, so it is no step either); hours at the limit do not join
    x = _city(hours=48)
    x[3, 30 : 20 * HOUR] = 0.0
    tp = replace(TP, lo=0.0, hi=1000.0)
    al = _alarms(run_record(x, 0, tp))[3]
    assert not al[21 * HOUR :].any()
    assert _alarms(run_record(x, 0, replace(tp, lo=-np.inf)))[3, 21 * HOUR :].any()  # learnt without the limit
