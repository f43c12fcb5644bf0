"""The empty-level test (analytics/emptylevel.py): a bin's ultrasonic offset shows as a floor that is
not the bin's floor; clean bins (collected at any level, half-emptied, never collected, fast or slow
filling) never alarm."""

from __future__ import annotations

import numpy as np

from analytics import emptylevel, qc
from analytics.detectors import params_for
from kotacerdas.catalogue import load_catalogue
from kotacerdas.derived import fill_from_distance

KIND = load_catalogue()["waste_bin"]
EP = emptylevel.EmptyParams.from_detectors(params_for(KIND, KIND.field("distance")))
DEPTH, FULL = 130.0, 20.0  # cm from the sensor: floor and fill line
N = 4 * 96  # four days of 15-min readings


def _bin(rate_per_day: float, collect_at: list[int], to: float = 0.0, seed: int = 0) -> np.ndarray:
    """Distance (N,) of a bin filling at ``rate_per_day`` % and emptied (down to ``to`` %) at the indices
    ``collect_at``."""
    rng = np.random.default_rng(seed)
    fill = np.empty(N)
    f = 3.0
    for i in range(N):
        if i in collect_at:
            f = max(to, 3.0) if to else 3.0
        fill[i] = min(f, 100.0)
        f += rate_per_day / 96.0
    d = DEPTH - fill / 100.0 * (DEPTH - FULL) + 0.8 * rng.standard_normal(N)
    return np.round(d, 1)


def _flags(dist: np.ndarray, with_fill: bool = True) -> np.ndarray:
    x = np.atleast_2d(dist)
    fill = np.round(fill_from_distance(x, DEPTH, FULL), 1) if with_fill else None
    return emptylevel.run_record(x, 0, EP, derived=fill).flag


def _alarms(flags: np.ndarray) -> int:
    return int(((flags == qc.SUSPECT) | (flags == qc.FAIL)).sum())


def test_side_of_empty_comes_from_the_catalogue():
    assert params_for(KIND, KIND.field("distance")).empty_side == 1  # an empty bin is a long echo
    assert params_for(KIND, KIND.field("fill")).empty_source == "distance"
    assert params_for(KIND, KIND.field("temperature")).empty_side == 0


def test_clean_look_alikes_never_alarm():
    clean = np.stack([
        _bin(100.0, [90, 190, 290]),                    # market bin, collected daily (full for hours first)
        _bin(8.0, []),                                   # household bin never collected in 4 days
        _bin(55.0, [40, 200], seed=1),                   # communal bin collected at different fill levels
        _bin(55.0, [100, 250], to=45.0, seed=2),         # half-emptied, then emptied
        _bin(150.0, [60, 150, 240, 330], seed=3),        # the fastest market bin
    ])
    for with_fill in (True, False):
        assert _alarms(_flags(clean, with_fill)) == 0


def test_sensor_moved_up_shows_beyond_the_floor():
    # the mount slipped 30 cm up at sample 150: every echo is 30 cm longer; after the collection at 200 the
    # bin reads emptier than empty
    d = _bin(55.0, [100, 200])
    d[150:] += 30.0
    f = _flags(d)
    assert _alarms(f[:, :150]) == 0
    assert _alarms(f[:, 200:]) > 20
    # without the fill readings the floor is learned from the first collection: the same verdict
    assert _alarms(_flags(d, with_fill=False)[:, 200:]) > 20


def test_offset_on_a_slow_bin_is_seen_from_its_calibration_before_any_collection():
    d = _bin(8.0, [])
    d[100:] += 40.0  # beyond the floor at once for a nearly empty household bin
    f = _flags(d)
    assert _alarms(f[:, 100:110]) > 0
    # without its fill, a bin never collected has no known floor: the step is taken for its first
    # collection (the limit docs/analytics.md states), judged from there, never flagged
    f2 = _flags(d, with_fill=False)
    assert _alarms(f2) == 0 and (f2[0, :100] == qc.NOT_EVALUATED).all()


def test_a_single_wild_echo_is_no_level():
    d = _bin(55.0, [100, 200])
    d[150] = 600.0  # one echo past the floor (the spike test's)
    d[250] = 1115.0  # a value the gateway refuses, in a dry run
    assert _alarms(_flags(d)) == 0


def test_passes_resumed_from_saved_state_give_the_flags_of_one_run(tmp_path):
    d = np.stack([_bin(55.0, [100, 200]), _bin(100.0, [90, 190, 290], seed=4)])
    d[0, 150:] += 30.0
    fill = np.round(fill_from_distance(d, DEPTH, FULL), 1)
    whole = emptylevel.run_record(d, 0, EP, derived=fill).flag
    store = emptylevel.EmptyStore(tmp_path)
    devs = ["a", "b"]
    got = []
    for a in range(0, N, 50):
        st = emptylevel.EmptyStore(tmp_path).get("waste_bin", "distance") if a else store.get("waste_bin", "distance")
        got.append(emptylevel.update(st, st.rows_for(devs), d[:, a:a + 50], a, EP, fill[:, a:a + 50]).flag)
        st.save(store.path("waste_bin", "distance"))
    assert np.array_equal(np.concatenate(got, axis=1), whole)


def test_offset_toward_full_is_seen_on_its_way_back():
    # something in the beam 15 cm under the sensor from 120 to 170: the bin only looks fuller (no floor
    # is crossed), but the level comes back by the same step with no collection between
    d = _bin(55.0, [100, 250])
    d[120:171] -= 15.0
    f = _flags(d)
    assert _alarms(f[:, :171]) == 0  # the onset alone is what a bag dropped in shows
    assert _alarms(f[:, 171:174]) == 1  # the way back, within a reading of the 3-median's lag
    assert _alarms(f[:, 174:]) == 0


def test_shift_toward_full_is_seen_at_the_next_collection():
    # the mount sagged 15 cm at 120 for good: the collection at 200 lands 15 cm short of the floor
    d = _bin(55.0, [100, 200])
    d[120:] -= 15.0
    f = _flags(d)
    assert _alarms(f[:, :200]) == 0
    assert _alarms(f[:, 200:203]) == 1
    assert _alarms(f[:, 203:]) == 0
    # a nearly empty bin's collection is a small drop (less than a collection's 10 % of the span):
    # where it lands tells all the same
    d = _bin(55.0, [100, 135])
    d[120:] -= 15.0
    f = _flags(d)
    assert _alarms(f[:, :135]) == 0 and _alarms(f[:, 135:138]) == 1


def test_a_bag_dropped_in_is_no_excursion():
    # a bag adds 15 cm at 120 (a jump that stays), the next collection lands on the floor; a reading
    # stuck for 7.5 h then released jumps by the fill it missed; a half-emptied collection lands short
    # with no jump before it
    bag, stuck, half = (_bin(55.0, [100, 200, 300], seed=5 + i) for i in range(3))
    bag[120:200] -= 15.0
    stuck[230:260] = stuck[230]
    half[300:] = np.round(DEPTH - 45.0 / 100.0 * (DEPTH - FULL) - np.arange(N - 300) * 0.55 / 96 * 110, 1)
    assert _alarms(_flags(np.stack([bag, stuck, half]))) == 0
