"""Hard cases: labelled faults change only their labelled cells; nuisances change values without labels."""

from __future__ import annotations

import json
from collections import defaultdict

from simulators.engine import GOOD

from .helpers import device_of, messages, small_scenario

HARD = {"level_shift": 2, "slow_drift": 2, "correlated": 2, "burst": 4, "quantised_flat": 3}


def _values(msgs):
    out = {}
    for m in msgs:
        if m.cls == GOOD:
            d = json.loads(m.payload)
            out[(device_of(m.topic), d["seq"])] = d
    return out


def test_hard_cases_are_planned_applied_and_labelled():
    run, faulty = messages(small_scenario(faults=HARD))
    _, clean = messages(small_scenario(faults={}))
    labels = run.labels
    assert {lb.type for lb in labels} == {"level_shift", "slow_drift", "correlated"}  # nuisances carry no label
    kinds_of = {f.type for f in run.plan.faults}
    assert {"burst", "quantised_flat"} <= kinds_of
    a, b = _values(faulty), _values(clean)
    changed = defaultdict(int)
    unlabelled = 0
    for key, d in a.items():
        ref = b[key]
        for fname, v in d["fields"].items():
            if v == ref["fields"][fname]:
                continue
            cover = [lb for lb in labels if lb.device == key[0] and lb.field == fname and lb.start <= ref["ts"] <= lb.end]
            if cover:
                for lb in cover:
                    changed[lb.type] += 1
            else:
                unlabelled += 1
    assert {"level_shift", "correlated"} <= set(changed)
    assert unlabelled > 0  # bursts (and quantised flat stretches) alter readings without a label
    # a correlated fault labels every eligible field of its device at the same start
    corr = [lb for lb in labels if lb.type == "correlated"]
    by_dev = defaultdict(set)
    for lb in corr:
        by_dev[(lb.device, lb.start)].add(lb.field)
    assert all(len(fields) > 1 for fields in by_dev.values())
    # a level shift lasts to the end of the run
    assert all(lb.end == run.end_ms for lb in labels if lb.type == "level_shift")


def test_quantised_flat_holds_one_value():
    run, msgs = messages(small_scenario(faults={"quantised_flat": 3}))
    for f in (x for x in run.plan.faults if x.type == "quantised_flat"):
        dev = run.fleets[f.kind].ids[f.row]
        vals = {json.loads(m.payload)["fields"][f.field] for m in msgs if m.cls == GOOD and device_of(m.topic) == dev
                and f.start <= json.loads(m.payload)["ts"] <= f.end}
        assert len(vals) <= 1, (f, vals)


def _seasonal_runs():
    over = {"span_s": 22 * 86400, "dry_run_only": True, "device_prefix": "s",
            "kinds": {"air": {"count": 3, "interval_s": 1800}, "water": {"count": 2, "interval_s": 1800}}}
    faulty = messages(small_scenario(faults={"night_at_day_level": 4, "no_weekly_dip": 2}, **over))
    return faulty, messages(small_scenario(faults={}, **over))


def test_seasonal_hard_cases_move_a_night_to_the_afternoon_and_undo_a_weekend_dip():
    (run, faulty), (_, clean) = _seasonal_runs()
    a, b = _values(faulty), _values(clean)
    by_ts = {(dev, d["ts"]): d for (dev, _), d in b.items()}
    labels = {lb.type: lb for lb in run.labels}
    assert set(labels) == {"night_at_day_level", "no_weekly_dip"}
    for lb in run.labels:
        local = (lb.start + 7 * 3_600_000) % 86_400_000 / 3_600_000
        inside = [(d, by_ts[(dev, d["ts"])]) for (dev, _), d in a.items() if dev == lb.device and lb.start <= d["ts"] <= lb.end]
        assert inside
        if lb.type == "night_at_day_level":
            # from 22:00 local for 7 h, at least 8 days in; each reading near the clean reading 12 h earlier
            assert 22.0 <= local < 22.5 and lb.end - lb.start < 7 * 3_600_000 and lb.start - run.start_ms >= 8 * 86_400_000
            for d, ref in inside:
                day = by_ts[(lb.device, d["ts"] - 12 * 3_600_000)]["fields"][lb.field]
                assert abs(d["fields"][lb.field] - day) < abs(ref["fields"][lb.field] - day) + 1e-9
        else:
            # a whole local weekend day, two weeks in, at the weekday level (the weekend factor undone)
            assert local < 0.5 and lb.start - run.start_ms >= 14 * 86_400_000
            assert (((lb.start + 7 * 3_600_000) // 86_400_000) + 3) % 7 >= 5
            ratio = [d["fields"][lb.field] / ref["fields"][lb.field] for d, ref in inside if ref["fields"][lb.field]]
            assert 1.1 < sorted(ratio)[len(ratio) // 2] < 1.25


def test_a_dry_run_only_scenario_may_span_weeks_but_is_never_published():
    import pytest

    from simulators.runner import Options, simulate
    from simulators.scenario import ScenarioError

    sc = small_scenario(faults={}, span_s=20 * 86400, dry_run_only=True)
    assert sc.span_s == 20 * 86400
    with pytest.raises(ScenarioError, match="dry_run_only"):
        small_scenario(faults={}, span_s=20 * 86400)
    with pytest.raises(ScenarioError, match="dry_run_only"):
        simulate(sc, None, Options())  # type: ignore[arg-type]
