"""The stateful tests chained as the service runs them (analytics/stateful.py): passes over a sliding
window with the states carried give the flags of one call over the whole record (the evaluation's),
on records with a fault the chain catches."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pytest

from analytics import alarmset, qc
from analytics.detectors import StatParams, params_for
from analytics.stateful import Source, States, advance
from kotacerdas.catalogue import load_catalogue
from kotacerdas.derived import fill_from_distance

pytestmark = pytest.mark.unit

CAT = load_catalogue()
SP = StatParams()
STEP_S = 1800.0  # a coarse grid: a week of history for the seasonal test in few bins
DAY = int(86400 / STEP_S)
ONSET = 8 * DAY + 10


def _air(days: int = 9, s: int = 6, seed: int = 4) -> np.ndarray:
    """pm25 (S, T): a shared daily cycle, sensor noise; series 2 steps up 15 ug/m3 on day 8 (a week of
    history behind it: the seasonal test judges it too)."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    x = 20.0 + 6.0 * np.sin(2 * np.pi * t / DAY)[None, :] + rng.normal(0, 0.8, (s, t.size))
    x[rng.random(x.shape) < 0.01] = np.nan
    x[2, ONSET:] += 15.0
    return np.round(x, 1)


def _bins(days: int = 4, s: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(distance, fill) (S, T): bins filling 55 %/day, collected every 1.5 days; bin 0's sensor moves 30 cm
    up on day 2 (every echo longer: emptier than empty after its next collection)."""
    rng = np.random.default_rng(1)
    i = np.arange(days * DAY)[None, :] + rng.integers(0, DAY, (s, 1))
    fill = 3.0 + (i % (3 * DAY // 2)) * 55.0 / DAY
    d = np.round(130.0 - fill / 100.0 * 110.0 + rng.normal(0, 0.8, fill.shape), 1)
    d[0, 2 * DAY :] += 30.0
    return d, np.round(fill_from_distance(d, 130.0, 20.0), 1)


def _in_passes(x: np.ndarray, g0: int, make: Callable[[], States], src: Source | None, window: int, every: int,
               carry: bool = True) -> dict[str, np.ndarray]:
    """Flags as the live loop writes them: a pass every ``every`` bins over the last ``window``, the newest
    bin held back (``n`` = the window less one), states from ``make()`` (once, or each pass: not carried)."""
    assert window > every  # each pass sees the bin the last one held back
    devices = [f"d{i}" for i in range(x.shape[0])]
    t = x.shape[1]
    out: dict[str, np.ndarray] = {}
    done, st = 0, make()
    for b in list(range(every, t, every)) + [t]:
        a = max(b - window, 0)
        s = src and replace(src, x=src.x[:, a:b], fill=None if src.fill is None else src.fill[:, a:b])
        got = advance(st if carry else make(), devices, x[:, a:b], g0 + a, src=s, n=b - a - 1)
        for k, r in got.items():
            flags = out.setdefault(k, np.full(x.shape, qc.NOT_EVALUATED, dtype=np.int8))
            flags[:, done : b - 1] = r.flag[:, done - a : b - 1 - a]
        done = b - 1
    return out


def _whole(x: np.ndarray, g0: int, st: States, src: Source | None) -> dict[str, np.ndarray]:
    return {k: r.flag for k, r in advance(st, [f"d{i}" for i in range(x.shape[0])], x, g0, src=src).items()}


def _alarms(flag: np.ndarray) -> np.ndarray:
    return (flag == qc.SUSPECT) | (flag == qc.FAIL)


def test_passes_with_states_carried_give_the_flags_of_one_run_over_the_record():
    kind = CAT["air"]
    x = _air()
    p = params_for(kind, kind.field("pm25"), STEP_S)
    g0 = p.g0(1_795_400_000_000)
    tests = alarmset.written(["ewma", "cusum"])
    def make() -> States:
        return States.fresh(p, SP, tests, False)

    whole = _whole(x, g0, make(), None)
    assert set(whole) == {"shift", "seasonal", "trend", "ewma", "cusum"}
    passes = _in_passes(x, g0, make, None, window=DAY, every=12)
    t = x.shape[1]
    for k, flag in whole.items():
        assert (flag[:, -1] == qc.NOT_EVALUATED).all(), k  # the newest bin waits for its successor
        np.testing.assert_array_equal(passes[k][:, : t - 1], flag[:, : t - 1], err_msg=k)
    # the record holds what the chain is for: the step is caught, and the neighbours stay quiet
    for k in ("shift", "seasonal"):
        assert _alarms(whole[k][2, ONSET : ONSET + DAY // 2]).any(), k
        assert not _alarms(np.delete(whole[k], 2, axis=0)).any(), k
    # ... and carrying the states is what makes the passes equal: fresh ones each pass see no week behind
    forgetful = _in_passes(x, g0, make, None, window=DAY + 1, every=DAY, carry=False)
    assert not _alarms(forgetful["seasonal"]).any()


def test_a_resetting_field_in_passes_keeps_trend_and_the_empty_level_test_only():
    kind = CAT["waste_bin"]
    d, fill = _bins()
    fields = {"distance": d, "fill": fill}
    p = params_for(kind, kind.field("fill"), kind.report_interval_s)
    src = Source.of(kind, fields, p, kind.report_interval_s)
    assert src is not None and src.x is d and src.fill is fill
    g0 = p.g0(1_795_400_000_000)
    def make() -> States:
        return States.fresh(p, SP, alarmset.ALL, True)

    whole = _whole(fill, g0, make(), src)
    passes = _in_passes(fill, g0, make, src, window=DAY // 2, every=7)
    t = fill.shape[1]
    for k, flag in whole.items():
        np.testing.assert_array_equal(passes[k][:, : t - 1], flag[:, : t - 1], err_msg=k)
    for k in ("seasonal", "ewma", "cusum"):  # no level to hold against its past
        assert (whole[k] == qc.NOT_EVALUATED).all(), k
    # the shift test's place: the sensor that moved reads beyond its floor after its next collection
    assert _alarms(whole["shift"][0]).sum() > 10
    assert not _alarms(whole["shift"][1:]).any()
    assert Source.of(kind, fields, params_for(kind, kind.field("temperature"), 900.0), 900.0) is None
