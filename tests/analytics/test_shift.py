"""Level-shift test (analytics/shift.py): a shift caught once, its end not a second alarm, clean
look-alikes (daily cycle, bursts, quantised steps) quiet, passes with restarts = one run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analytics import qc
from analytics.shift import ShiftParams, ShiftState, ShiftStore, run_record, update

SP = ShiftParams(window=60, block=60, stride=5, floor=0.1 * 4 / 20, memory=2880)
DAY = 1440  # samples of a 1-min grid


def _alarm_runs(flag: np.ndarray) -> list[int]:
    """Start columns of runs of suspect/fail in one series."""
    m = (flag == qc.SUSPECT) | (flag == qc.FAIL)
    return np.flatnonzero(m & ~np.concatenate([[False], m[:-1]])).tolist()


def _noise(s: int, t: int, seed: int = 3, sd: float = 1.0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(0.0, sd, (s, t)), 1)


def test_a_shift_is_one_alarm_near_its_onset():
    x = _noise(4, DAY)
    x[1, 700:] += 12.0  # a re-mounted sensor: the new level stays (12 noise sigmas; 10 is the least)
    res = run_record(x, 0, SP)
    runs = _alarm_runs(res.flag[1])
    # crossed within a window of its onset, confirmed half a window later
    assert len(runs) == 1 and 700 <= runs[0] <= 700 + SP.window + SP.confirm
    assert np.nanmax(res.score[1, 700:760]) > SP.suspect_k
    for s in (0, 2, 3):
        assert _alarm_runs(res.flag[s]) == []


def test_the_return_to_the_level_before_is_the_end_of_the_same_episode():
    x = _noise(3, DAY, seed=4)
    x[0, 500:900] -= 12.0  # an offset, removed at 900
    res = run_record(x, 0, SP)
    runs = _alarm_runs(res.flag[0])
    assert len(runs) == 1 and 500 <= runs[0] <= 500 + SP.window + SP.confirm  # the onset only, not the way back
    assert not ((res.flag[0, 900:] == qc.SUSPECT) | (res.flag[0, 900:] == qc.FAIL)).any()
    # the onset forgotten (memory 0): the way back is still no alarm, it returns to a level held before
    forgetful = run_record(x, 0, replace(SP, memory=0))
    assert len(_alarm_runs(forgetful.flag[0])) == 1
    # ... without either rule the way back is a second alarm: what the episode logic removes
    naive = run_record(x, 0, replace(SP, memory=0, known=0.0))
    assert len(_alarm_runs(naive.flag[0])) == 2


def test_clean_look_alikes_stay_quiet():
    t = np.arange(3 * DAY)
    rng = np.random.default_rng(9)
    cycle = 10.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0.0, 0.5, t.size)  # a strong daily cycle
    bursty = rng.normal(30.0, 1.0, t.size)
    for start in range(200, t.size - 10, 170):  # a 2-8 sample burst at 2-5x the level every ~3 h
        n = int(rng.integers(2, 9))
        bursty[start : start + n] *= rng.uniform(2.0, 5.0)
    staircase = np.round(20.0 + 0.8 * t / t.size, 1)  # a slow rise in 0.1 steps (quantised)
    flicker = 7.0 + 0.1 * (rng.random(t.size) < 0.3)  # a quiet series between two quantised values
    x = np.stack([cycle, bursty, staircase, flicker])
    res = run_record(x, 0, SP)
    for s in range(x.shape[0]):
        assert _alarm_runs(res.flag[s]) == [], s


def test_warm_up_and_missing_readings_say_so():
    x = _noise(2, 400)
    x[0, 250:260] = np.nan
    res = run_record(x, 0, SP)
    first_warm = 2 * SP.window + SP.block  # two windows for a D, then one block of them for the scale
    assert (res.flag[:, : 2 * SP.window] == qc.NOT_EVALUATED).all()
    assert (res.flag[1, first_warm + 1 :] == qc.GOOD).all()
    assert (res.flag[0, 250:260] == qc.MISSING).all()


def test_passes_with_restarts_equal_one_run(tmp_path):
    x = _noise(5, DAY, seed=7)
    x[2, 600:900] += 12.0
    x[3, 300:330] = np.nan
    devs = [f"d{i}" for i in range(x.shape[0])]
    g0 = 50 * DAY + 7  # not aligned to a block or a stride
    whole = run_record(x, g0, SP, devs)
    got = np.full(x.shape, -1, dtype=np.int8)
    end = 0
    for cut in (37, 300, 301, 650, 905, 1200, x.shape[1]):  # uneven passes, state saved and re-loaded
        store = ShiftStore(tmp_path / "shift")  # a fresh service: nothing in memory
        st = store.get("water", "ph", SP)
        lo = max(end - 50, 0)  # windows overlap what was processed before
        res = update(st, st.rows_for(devs), x[:, lo:cut], g0 + lo, SP)
        got[:, end:cut] = res.flag[:, end - lo :]
        assert (res.flag[:, : end - lo] == qc.NOT_EVALUATED).all()  # processed once only
        store.save("water", "ph")
        end = cut
    np.testing.assert_array_equal(got, whole.flag)
    assert len(_alarm_runs(whole.flag[2])) == 1


def test_state_file_round_trip_and_other_layouts(tmp_path):
    st = ShiftState(["a", "b"], SP)
    rows = st.rows_for(["b", "c", "a"])
    assert rows.tolist() == [1, 2, 0] and st.devices == ["a", "b", "c"]
    update(st, rows, _noise(3, 300), 0, SP)
    st.save(tmp_path / "s.npz")
    back = ShiftState.load(tmp_path / "s.npz", SP)
    assert back is not None and back.g_next == 300 and back.devices == st.devices
    np.testing.assert_array_equal(back.ring, st.ring)
    assert ShiftState.load(tmp_path / "s.npz", ShiftParams(window=30, block=60)) is None


def test_a_second_fault_to_the_same_level_is_a_new_alarm():
    x = _noise(3, 2 * DAY, seed=6)
    x[0, 400:700] -= 12.0  # a fault, removed at 700 ...
    x[0, 1500:] -= 12.0  # ... and the same fault again: the first one's level is no "known" level
    res = run_record(x, 0, SP)
    runs = _alarm_runs(res.flag[0])
    assert len(runs) == 2 and 400 <= runs[0] <= 500 and 1500 <= runs[1] <= 1600
