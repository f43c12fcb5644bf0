"""Sharding the detectors by city over processes gives exactly the one-process answer."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.detectors import params_for, run_all
from analytics.shard import run_by_group
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()


def _city_grids(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Three cities with different daily cycles, interleaved rows, spikes, a flat line and gaps: (S, T) pm25."""
    rng = np.random.default_rng(seed)
    t = np.arange(288)
    rows, groups = [], []
    for city, base in (("depok", 30.0), ("bogor", 55.0), ("bekasi", 80.0)):
        cycle = base + 15 * np.sin(2 * np.pi * t / 288 + base)
        for _ in range(40):
            rows.append(cycle + rng.normal(0, 2, t.size))
            groups.append(city)
    x = np.array(rows)
    order = rng.permutation(len(x))  # cities interleaved, as a query returns them
    x, g = x[order], np.array(groups)[order]
    x[3, 100] += 400.0
    x[50, 150:200] = x[50, 150]
    x[rng.random(x.shape) < 0.01] = np.nan
    return x, g


@pytest.mark.io  # worker processes
def test_processes_give_the_one_process_result_bit_for_bit() -> None:
    x, g = _city_grids()
    p = params_for(CAT["air"], CAT["air"].field("pm25"), step_s=300)
    one = run_by_group(x, g, p, 0, processes=1, dtype=np.float64, score_dtype=np.float64)
    two = run_by_group(x, g, p, 0, processes=2, dtype=np.float64, score_dtype=np.float64)
    assert one["spike"].score.dtype == np.float64
    assert one.keys() == two.keys()
    for name in one:
        assert np.array_equal(one[name].flag, two[name].flag), name
        assert np.array_equal(one[name].score, two[name].score, equal_nan=True), name


def test_each_city_is_judged_against_its_own_neighbours() -> None:
    x, g = _city_grids()
    p = params_for(CAT["air"], CAT["air"].field("pm25"), step_s=300)
    res = run_by_group(x, g, p, 0)
    bogor = np.flatnonzero(g == "bogor")
    alone = run_all(x[bogor], p, 0)
    for name in alone:
        assert np.array_equal(res[name].flag[bogor], alone[name].flag), name
    assert res["spike"].flag[3, 100] == 4  # the injected spike fails wherever its city's rows ended up
