"""The detectors' statistics on hard cases: each improved test catches its fault and leaves a
clean look-alike alone (docs/analytics.md, "Tuning")."""

from __future__ import annotations

import numpy as np

from analytics import qc
from analytics.detectors import QcParams, StatParams, params_for, run_all, run_qc
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()
STEP = 60.0


def _runs(mask: np.ndarray) -> int:
    return int((mask & ~np.concatenate([[False], mask[:-1]])).sum())


def _noisy(s: int, t: int, sd: float, res: float, level: float = 30.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round((level + rng.normal(0, sd, (s, t))) / res) * res


def test_flat_line_catches_a_stuck_sensor_once_and_not_a_slow_field_standing_still():
    p = QcParams(0, 100, 0, 60, 1.0, STEP)
    x = _noisy(2, 900, 3.0, 1.0)
    x[0, 400:700] = 31.0  # stuck for 5 h
    res = run_qc(x, p, 0)["flat_line"]
    flagged = res.flag[0] >= qc.SUSPECT
    assert flagged[400 + p.flat_n[0] : 700].all() and not flagged[:400].any()
    assert _runs(flagged) == 1  # one alarm, however the trailing threshold moves during the run
    # a slow, quantised field (water temperature at 0.0625 C) whose true value stands still for 90 min
    t = QcParams(-10, 85, 15, 40, 0.0625, STEP)
    y = _noisy(1, 900, 0.08, 0.0625, level=27.0, seed=2)
    y[0, 400:490] = 27.0
    assert not (run_qc(y, t, 0)["flat_line"].flag >= qc.SUSPECT).any()


def test_flat_line_threshold_grows_with_the_series_own_runs():
    """A series that often repeats its value for a while gets a longer threshold than the floor."""
    p = QcParams(0, 100, 0, 60, 1.0, STEP, flat_suspect_s=600.0)  # floor 10 readings
    x = _noisy(1, 900, 3.0, 1.0)
    for c in range(0, 900, 60):  # 12 unchanged readings in every hour: normal for this series
        x[0, c + 10 : c + 22] = x[0, c + 10]
    res = run_qc(x, p, 0)["flat_line"]
    assert not (res.flag[0, 400:] >= qc.SUSPECT).any()
    fixed = qc.flat_line(x, 0.5, *p.flat_n)  # the old fixed threshold flags every hour
    assert (fixed.flag[0, 400:] >= qc.SUSPECT).any()


def test_flat_line_leaves_a_series_that_mostly_repeats_alone():
    x = np.zeros((1, 900))
    x[0, ::23] = 10.0  # clear water at 0 NTU with the odd 10 NTU step: 90 % of the steps repeat
    x[0, 500:800] = 0.0
    res = qc.flat_line(x, 5.0, 20, 40, g0=0, block=60)
    assert not (res.flag[0, 560:] >= qc.SUSPECT).any()
    assert (qc.flat_line(x, 5.0, 20, 40).flag[0, 560:800] >= qc.SUSPECT).all()  # without the adaptive mode


def test_flat_line_off_where_the_typical_value_is_below_the_resolution():
    water = CAT["water"]
    assert not params_for(water, water.field("turbidity")).flat_enabled  # 2 NTU typical, 10 NTU steps
    assert params_for(water, water.field("ph")).flat_enabled


def test_step_scale_survives_zero_inflation():
    """Mostly repeated readings (median |step| 0) still give the scale of the steps that happen."""
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(30, 0.3, (1, 600)))  # 1-unit resolution: most steps are 0, some +/-1
    x[0, ::7] += rng.choice([-6.0, 6.0], size=x[0, ::7].shape)
    sc = qc.step_scale(x, 0, 60, 0.0, 6, 1)
    assert np.nanmin(sc[0, 120:]) > 1.0
    assert np.median(np.abs(np.diff(x[0]))) == 0.0


def test_spike_pegged_at_the_range_limit_and_not_a_series_living_there():
    p = QcParams(0, 1000, 0, 500, 1.0, STEP)
    x = _noisy(2, 600, 3.0, 1.0, level=25.0)
    x[0, 400] = 0.0  # a negative spike clipped at the sensor's floor: only ~8 step scales high
    x[1] = 0.0
    x[1, ::13] = 1.0  # clean air at the floor, the odd 1 ug/m3
    res = run_qc(x, p, 0)["spike"]
    assert res.flag[0, 400] >= qc.SUSPECT
    assert not (res.flag[1] >= qc.SUSPECT).any()
    plain = run_qc(x, p.__class__(**{**p.__dict__, "spike_pegged_k": 1e9}), 0)["spike"]
    assert plain.flag[0, 400] < qc.SUSPECT  # the rule is what catches it


def test_spike_judges_a_sensor_back_from_a_fault_by_its_noise_now():
    p = QcParams(0, 10000, 0, 5000, 10.0, STEP)
    x = _noisy(1, 900, 120.0, 10.0, level=1300.0)
    x[0, :500] = 0.0  # stuck at 0 for hours, then back with its normal noise
    x[0, 700] = 4000.0  # a real spike later on
    res = run_qc(x, p, 0)["spike"]
    assert not (res.flag[0, 510:700] >= qc.SUSPECT).any()
    assert res.flag[0, 700] >= qc.SUSPECT
    old = run_qc(x, p.__class__(**{**p.__dict__, "recent_steps": 0}), 0)["spike"]
    assert (old.flag[0, 510:560] >= qc.SUSPECT).any()  # the stuck hours' scale alone flags the noise


def test_spike_catches_a_spike_in_the_first_hour():
    p = QcParams(0, 100, 0, 60, 0.1, STEP)
    x = _noisy(1, 300, 1.0, 0.1)
    x[0, 30] += 40.0
    assert run_qc(x, p, 0)["spike"].flag[0, 30] >= qc.SUSPECT  # no block baseline yet: the recent steps


def test_a_resetting_field_is_judged_by_spike_range_flat_and_gap_only():
    """A bin's fill saws up and drops at each collection: no level, step or neighbour test fires on that."""
    fill = CAT["waste_bin"].field("fill")
    assert fill.resets
    p = params_for(CAT["waste_bin"], fill, 900)
    t = 400
    rng = np.random.default_rng(9)
    phase = rng.integers(0, 60, (12, 1))
    x = np.round(((np.arange(t)[None, :] + phase) % 60) * 1.5 + rng.normal(0, 0.5, (12, t)), 1)
    x[3, 200] = 95.0  # a spike
    res = run_all(x, p, 0, StatParams(), dtype=np.float64, score_dtype=np.float64)
    for k in ("hampel", "ewma", "cusum"):
        assert ((res[k].flag == qc.NOT_EVALUATED) | (res[k].flag == qc.MISSING)).all(), k
    assert "rate_of_change" not in res and "drift" not in res
    assert res["spike"].flag[3, 200] >= qc.SUSPECT
    assert np.argwhere(res["spike"].flag >= qc.SUSPECT).tolist() == [[3, 200]]  # collections are no spikes


def test_evaluate_keeps_resetting_fields_out_of_the_stateful_charts():
    """The stateful EWMA/CUSUM/seasonal charts (as the service runs them) say nothing on a bin's fill."""
    from analytics.evaluate import evaluate

    rng = np.random.default_rng(5)
    t0 = 1_795_400_000_000
    data = {}
    for d in range(8):
        phase = int(rng.integers(0, 40))
        data[("waste_bin", f"b{d}")] = [
            (t0 + i * 900_000, {"fill": round(((i + phase) % 40) * 2.4 + float(rng.normal(0, 0.3)), 1),
                                "distance": 150.0 + float(rng.normal(0, 0.5)), "tilt": 0.0,
                                "temperature": round(30 + float(rng.normal(0, 0.5)), 1)})
            for i in range(4 * 96)]
    rows = {r.type: r for r in evaluate(data, [], CAT)}
    assert rows["drift"].false_runs == 0
    forced = {r.type: r for r in evaluate(data, [], CAT, qc_overrides={"level_enabled": True})}
    assert forced["drift"].false_runs > 0  # the collections, charted as shifts


def test_hampel_judges_a_sensor_back_from_a_fault_by_its_noise_now():
    from analytics import stats

    x = _noisy(1, 900, 120.0, 10.0, level=1300.0)
    x[0, :500] = 0.0  # stuck at 0 for hours: the blocks behind the return say "no noise"
    x[0, 880] = 1300.0 + 120.0 * 90  # a real outlier once the blocks behind it are normal again
    got = stats.hampel(x, 0, 60, 6, 60.0, 120.0, floor=10.0, recent=8)
    assert not (got.flag[0, 505:880] >= qc.SUSPECT).any()
    assert got.flag[0, 880] >= qc.SUSPECT
    old = stats.hampel(x, 0, 60, 6, 60.0, 120.0, floor=10.0)
    assert (old.flag[0, 505:560] >= qc.SUSPECT).any()


def test_spike_waits_for_a_full_set_of_recent_steps_where_there_is_no_baseline():
    """A series' first readings: one or two small steps are no scale (hard scenario's first-hour
    false alarms); once `recent` steps are in, a spike in the first hour is judged."""
    p = QcParams(0, 100, 0, 60, 0.01, STEP)
    x = _noisy(1, 300, 0.5, 0.01)
    x[0, :4] = [30.15, 30.19, 30.23, 30.27]  # three tiny steps, then its normal noise
    x[0, 4] = 31.6
    res = run_qc(x, p, 0)["spike"]
    assert (res.flag[0, : p.recent_steps + 1] == qc.NOT_EVALUATED).all()
    x[0, 30] += 20.0
    assert run_qc(x, p, 0)["spike"].flag[0, 30] >= qc.SUSPECT
    gap = x.copy()
    gap[0, 100:160] = np.nan  # after an outage the block behind has a baseline: judged at once
    gap[0, 162] += 20.0
    assert run_qc(gap, p, 0)["spike"].flag[0, 162] >= qc.SUSPECT


def test_spike_on_a_still_quantised_series_and_not_its_ordinary_steps():
    """Turbidity reads 0 NTU for hours at 10 NTU resolution: a 240 NTU reading is a spike (the
    step scale's floor is one resolution, not two); steps of a few resolutions are not."""
    p = QcParams(0, 4000, 0, 500, 10.0, STEP)
    x = np.zeros((2, 600))
    x[0, 400] = 240.0
    rng = np.random.default_rng(5)
    x[1, ::17] = 10.0 * rng.integers(1, 4, size=x[1, ::17].shape)  # the odd 10-30 NTU reading
    res = run_qc(x, p, 0)["spike"]
    assert res.flag[0, 400] >= qc.SUSPECT
    assert not (res.flag[1, 120:] >= qc.SUSPECT).any()


def test_pegged_rule_leaves_a_full_bin_at_its_limit_alone():
    bins = CAT["waste_bin"]
    p = params_for(bins, bins.field("fill"))
    x = np.full((2, 400), 100.0)
    x[:, ::20] = 99.9  # a full bin reads 100 % and, now and then, just under it
    x[0, 289], x[0, 291] = 99.3, 99.3  # its 100 % between two such readings is no zeroed read
    x[1, 300] = 0.0  # a zeroed read between two full ones is still caught
    res = run_qc(x, p, 0)["spike"]
    assert not (res.flag[0] >= qc.SUSPECT).any()
    assert res.flag[1, 300] >= qc.SUSPECT
