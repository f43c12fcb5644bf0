"""Seasonal baselines from persisted history (analytics/seasonal.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analytics import qc
from analytics.seasonal import SeasonParams, SeasonStore, baseline, run_record, update

STEP = 900_000  # 15-min bins: 4 per hour, 96 per day
DAY = 96
SP = SeasonParams(step_ms=STEP, min_days=7, floor=0.01)


def _days(n_days: int, s: int = 4, seed: int = 3) -> np.ndarray:
    """A strong daily cycle (amplitude 10) plus noise 0.3; (s, n_days * 96)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days * DAY)
    return 20 + 10 * np.sin(2 * np.pi * t / DAY)[None, :] + rng.normal(0, 0.3, (s, t.size))


def test_warm_up_then_the_cycle_is_normal_and_an_off_cycle_value_is_not():
    x = _days(10)
    x[1, 9 * DAY + 24] = 20 + 10 * np.sin(2 * np.pi * 48 / DAY)  # a value of 12:00 at 06:00 on day 9
    x[2, 9 * DAY + 72 : 9 * DAY + 76] += 4.0  # an hour 4 too high at the trough, well inside the day's range
    res = run_record(x, 0, SP)
    # nothing evaluated before seven earlier days hold the hour
    assert np.isin(res.flag[:, : 7 * DAY], (qc.NOT_EVALUATED,)).all()
    assert (res.flag[:, 7 * DAY :] != qc.NOT_EVALUATED).all()
    flagged = res.flag >= qc.SUSPECT
    assert flagged[1, 9 * DAY + 24] and flagged[2, 9 * DAY + 72 : 9 * DAY + 76].all()
    # the daily cycle itself (amplitude 33 noise sigmas) raises nothing elsewhere
    flagged[1, 9 * DAY + 24] = False
    flagged[2, 9 * DAY + 72 : 9 * DAY + 76] = False
    assert flagged.sum() <= 2


def test_leave_one_out_today_is_not_in_its_own_baseline():
    x = _days(9)
    x[0, 8 * DAY :] += 50.0  # the whole last day is off: its own hours must not move its baseline
    st_res = run_record(x, 0, SP)
    assert (st_res.flag[0, 8 * DAY :] == qc.FAIL).all()


def test_hour_of_week_baseline_after_two_weeks(tmp_path):
    x = _days(22, s=3)
    weekend = (np.arange(22 * DAY) // DAY) % 7 >= 5
    x[:, weekend] -= 8.0  # weekends run lower: normal, once two earlier weeks show it
    store = SeasonStore(tmp_path)
    st = store.get("water", "temperature", STEP)
    rows = st.rows_for(["a", "b", "c"])
    res = update(st, rows, x, 0, SP)
    store.save("water", "temperature")
    third_weekend = (np.arange(22 * DAY) >= 19 * DAY) & (np.arange(22 * DAY) < 21 * DAY)
    assert (res.flag[:, third_weekend] < qc.SUSPECT).mean() > 0.98
    # the saved history gives a restarted service the same baseline
    again = SeasonStore(tmp_path).get("water", "temperature", STEP)
    b1, s1 = baseline(st, 22 * 24, SP)
    b2, s2 = baseline(again, 22 * 24, SP)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(s1, s2)


def test_passes_with_restarts_equal_one_run(tmp_path):
    x = _days(9, s=3)
    x[1, 200:230] = np.nan
    whole = run_record(x, 5, SP)
    got = np.full(x.shape, -1, dtype=np.int8)
    end = 0
    for cut in (10, 97, 300, 301, 700, x.shape[1]):
        store = SeasonStore(tmp_path)
        st = store.get("air", "pm25", STEP)
        lo = max(end - 7, 0)
        r = update(st, st.rows_for(["0", "1", "2"]), x[:, lo:cut], 5 + lo, SP)
        got[:, end:cut] = r.flag[:, end - lo :]
        store.save("air", "pm25")
        end = cut
    np.testing.assert_array_equal(got, whole.flag)


def test_a_city_wide_deviation_is_weather_one_stations_is_not():
    x = _days(10, s=6)
    x[:, 9 * DAY + 60 : 9 * DAY + 68] -= 4.0  # a shower cools every station for two hours
    x[3, 9 * DAY + 20 : 9 * DAY + 24] += 4.0  # one station's hour off by as much, alone
    res = run_record(x, 0, SP)
    flagged = res.flag >= qc.SUSPECT
    assert not flagged[:, 9 * DAY + 60 : 9 * DAY + 68].any()
    assert flagged[3, 9 * DAY + 20 : 9 * DAY + 24].all()
    # without the common-mode step (fewer peers than min_peers) the shower is flagged everywhere
    alone = run_record(x, 0, SeasonParams(step_ms=STEP, min_days=7, floor=0.01, min_peers=7))
    assert (alone.flag[:, 9 * DAY + 60 : 9 * DAY + 68] >= qc.SUSPECT).all()


def test_the_scale_allows_for_weather_on_a_few_days_in_ten():
    x = _days(20, s=2)
    for d in (2, 6, 9, 13, 16):  # a shower at the same hour on a quarter of the days, 3 units deep
        x[:, d * DAY + 60 : d * DAY + 64] -= 3.0
    x[:, 19 * DAY + 60 : 19 * DAY + 64] -= 3.0
    res = run_record(x, 0, SeasonParams(step_ms=STEP, min_days=7, floor=0.01, min_peers=5))
    assert not (res.flag[:, 19 * DAY + 60 : 19 * DAY + 64] >= qc.SUSPECT).any()
    # a median-only scale (the 90th-percentile term off) calls the same shower an anomaly
    med = run_record(x, 0, SeasonParams(step_ms=STEP, min_days=7, floor=0.01, spread_q=0.5, spread_z=1e9))
    assert (med.flag[:, 19 * DAY + 60 : 19 * DAY + 64] >= qc.SUSPECT).any()


def _shift_flags(x: np.ndarray) -> np.ndarray:
    """The level-shift test's flags over ``x`` (S, T), run as the service runs it (15-min grid)."""
    from analytics import chartstate, shift

    sp = shift.ShiftParams(window=8, block=8, stride=1, floor=0.01, memory=2 * DAY)
    return shift.run_record(chartstate.residual(x), 0, sp).flag


def test_a_kept_level_shift_is_re_based_after_the_watch():
    x = _days(14, s=6)
    x[0, 10 * DAY + 40 :] += 8.0  # re-mounted on day 10 at 10:00: 8 units (27 noise sigmas) higher for good
    sf = _shift_flags(x)
    assert (sf[0, 10 * DAY + 40 : 10 * DAY + 56] >= qc.SUSPECT).any()  # the shift test confirms the step
    res = run_record(x, 0, SP, sf)
    # watched (not evaluated) for 24 h from the onset, then judged against the re-based history: no alarm
    onset = 10 * DAY + 40 + int(np.argmax(sf[0, 10 * DAY + 40 :] >= qc.SUSPECT))
    assert (res.flag[0, onset : onset + 23 * 4] == qc.NOT_EVALUATED).all()
    after = res.flag[0, onset + 26 * 4 :]
    assert (after != qc.NOT_EVALUATED).all() and not (after >= qc.SUSPECT).any()
    # without the shift flags the new level is off-season for days (until the 90th-percentile scale term
    # sees it on a tenth of the days)
    assert (run_record(x, 0, SP).flag[0, onset + 26 * 4 : onset + 2 * DAY] >= qc.SUSPECT).mean() > 0.9
    # the other series are judged as before
    assert (res.flag[1:, 10 * DAY :] >= qc.SUSPECT).sum() <= 2


def test_a_night_at_day_level_is_still_caught_and_leaves_the_history_alone():
    x = _days(14, s=6)
    night = slice(10 * DAY + 64, 10 * DAY + 92)  # 16:00-23:00 (the cycle's trough) at the level of 12 h earlier
    x[2, night] = x[2, 10 * DAY + 16 : 10 * DAY + 44]
    sf = _shift_flags(x)
    res = run_record(x, 0, SP, sf)
    assert (res.flag[2, night] >= qc.SUSPECT).any()
    # the shift test confirms the fault's step (a watch opens); the next day the normal cycle is judged
    # normal (the history was not moved to the fault's level)
    later = res.flag[2, 11 * DAY :]
    # ... and the watch ends within two hours of the fault's end (the level is back), not a day after
    assert (res.flag[2, 10 * DAY + 100 : 11 * DAY] != qc.NOT_EVALUATED).all()
    assert (later != qc.NOT_EVALUATED).all() and (later >= qc.SUSPECT).sum() <= 1


def test_the_re_base_survives_restarts(tmp_path):
    x = _days(13, s=6)
    x[0, 10 * DAY + 40 :] += 8.0
    sf = _shift_flags(x)
    whole = run_record(x, 0, SP, sf)
    got = np.full(x.shape, -1, dtype=np.int8)
    end = 0
    # passes cut inside the watch, inside an hour and at the onset's bin; each from a freshly loaded store
    for cut in (9 * DAY, 10 * DAY + 45, 10 * DAY + 46, 10 * DAY + 90, 11 * DAY + 51, x.shape[1]):
        store = SeasonStore(tmp_path)
        st = store.get("water", "ph", STEP)
        lo = max(end - 5, 0)
        r = update(st, st.rows_for([str(i) for i in range(6)]), x[:, lo:cut], lo, SP, sf[:, lo:cut])
        got[:, end:cut] = r.flag[:, end - lo :]
        store.save("water", "ph")
        end = cut
    np.testing.assert_array_equal(got, whole.flag)
    assert (whole.flag[0, 12 * DAY :] < qc.SUSPECT).all()


# the day-level test: a day of one station off its past days (a weekend without its dip)
WEEKEND = (5, 6, 12, 13, 19, 20)  # day 0 is a Monday


def _city(n_days: int = 21, s: int = 8, seed: int = 5, weekend: bool = True, noise: float = 0.08) -> np.ndarray:
    """A pollutant: each station its own level (x0.6-1.6), a daily cycle, ``noise`` (8 %) per reading,
    weekends x0.85 at every station; (s, n_days * 96)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days * DAY)
    level = 30 * rng.uniform(0.6, 1.6, s)[:, None]
    wk = np.where(np.isin(t // DAY, WEEKEND) & weekend, 0.85, 1.0)
    return level * (1 + 0.4 * np.sin(2 * np.pi * t / DAY)) * wk * (1 + noise * rng.standard_normal((s, t.size)))


SPD = SeasonParams(step_ms=STEP, min_days=7, floor=1.0)


def test_a_station_without_its_weekend_dip_is_flagged_the_city_wide_dip_is_not():
    x = _city(noise=0.03)  # an hour of 4 readings at 3 %: as steady as an hour of 60 at 12 %
    day = slice(19 * DAY, 20 * DAY)
    x[3, day] /= 0.85  # station 3's Saturday at the weekday level: each reading inside its usual range
    res = run_record(x, 0, SPD)
    flagged = res.flag >= qc.SUSPECT
    # one run, from about half a day in to the hour after the day's (the verdict at an hour's close
    # judges the next hour)
    on = np.flatnonzero(flagged[3])
    assert on.size >= DAY // 3 and np.ptp(on) + 1 == on.size
    assert 19 * DAY + DAY // 3 <= on.min() <= 19 * DAY + DAY * 2 // 3 and 20 * DAY - 4 <= on.max() < 20 * DAY + 4
    # the weekend dip every station shows, against an hour-of-day baseline (days 12-13) or an
    # hour-of-week one (day 20), is not a fault; nor is station 3's Sunday
    others = np.delete(flagged, 3, axis=0)
    assert others.sum() <= 2
    assert not flagged[3, 20 * DAY + 4 :].any()
    # the per-reading test alone does not see it (x 1.18 is inside the hour's day-to-day spread)
    single = run_record(x, 0, replace(SPD, day_suspect_z=1e9, day_fail_z=1e9))
    assert (single.flag[3, day] >= qc.SUSPECT).sum() < DAY // 10


def test_a_rainy_day_at_every_station_is_not_a_fault():
    x = _city(weekend=False)
    x[:, 19 * DAY : 20 * DAY] *= 0.6  # a day of rain washes 40 % out at every station
    off = replace(SPD, day_suspect_z=1e9, day_fail_z=1e9)
    # the day-level test adds no flag to the per-reading test's
    np.testing.assert_array_equal(run_record(x, 0, SPD).flag, run_record(x, 0, off).flag)
    # without the common-mode step (fewer series than min_peers) the same day is off at every station
    alone = run_record(x, 0, SeasonParams(step_ms=STEP, min_days=7, floor=1.0, min_peers=9))
    assert (alone.flag[:, 20 * DAY - 8 : 20 * DAY] >= qc.SUSPECT).all()


def test_a_bursty_day_at_one_station_is_not_a_day_off():
    x = _city()
    rng = np.random.default_rng(9)
    bursts = np.zeros(x.shape[1], dtype=bool)
    for b0 in 19 * DAY + rng.choice(DAY - 2, 10, replace=False):  # ten bursts of 1-2 bins at 3x in a day
        bursts[b0 : b0 + int(rng.integers(1, 3))] = True
    x[2, bursts] *= 3.0
    res = run_record(x, 0, SPD)
    flagged = res.flag >= qc.SUSPECT
    # the bursts themselves may be off their hour; the day around them is not
    assert not flagged[2, 19 * DAY :][~bursts[19 * DAY :]].any()
    # the day's mean is as far above the same day a week before as a day without its dip (the day
    # statistic is the median of the hours, which ten short bursts do not move)
    assert np.nanmean(x[2, 19 * DAY : 20 * DAY]) / np.nanmean(x[2, 12 * DAY : 13 * DAY]) - 1 > 0.15


def test_the_day_level_history_survives_restarts_and_a_format_2_file_is_kept(tmp_path):
    from analytics import seasonal, statefile

    x = _city(s=6)
    x[1, 19 * DAY : 20 * DAY] /= 0.85
    whole = run_record(x, 0, SPD)
    got = np.full(x.shape, -1, dtype=np.int8)
    end = 0
    for cut in (15 * DAY + 7, 19 * DAY + 50, 19 * DAY + 51, x.shape[1]):
        store = SeasonStore(tmp_path)
        st = store.get("air", "no2", STEP)
        lo = max(end - 3, 0)
        r = update(st, st.rows_for([str(i) for i in range(6)]), x[:, lo:cut], lo, SPD)
        got[:, end:cut] = r.flag[:, end - lo :]
        store.save("air", "no2")
        end = cut
    np.testing.assert_array_equal(got, whole.flag)
    assert (whole.flag[1, 19 * DAY : 20 * DAY] >= qc.SUSPECT).any()
    # a format-2 file (no day-level arrays): the hourly history is kept, the day-level test starts empty
    st = SeasonStore(tmp_path).get("air", "no2", STEP)
    path = tmp_path / "v2.npz"
    statefile.save(path, st.devices, [2, st.per_hour, st.g_next],
                   {**{n: getattr(st, n) for n in seasonal._ARRAYS_V2}, "hour_of": st.hour_of})
    old = seasonal.SeasonState.load(path, st.per_hour)
    assert old is not None and old.g_next == st.g_next
    np.testing.assert_array_equal(old.mean, st.mean)
    assert np.isnan(old.dday).all() and old.dday.shape == st.dday.shape
