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
