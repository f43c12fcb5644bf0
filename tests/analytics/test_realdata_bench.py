"""bench/analytics_realdata.py: the scoring that its recorded NAB table rests on, on data made here."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("analytics_realdata",
                                               Path(__file__).resolve().parents[2] / "bench" / "analytics_realdata.py")
assert _spec and _spec.loader
realdata = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = realdata  # its dataclass looks its module up
_spec.loader.exec_module(realdata)


def test_flag_everything_scores_one_true_and_the_false_stretches_around_each_window():
    wid = np.zeros(100, dtype=np.int64)
    wid[20:30], wid[60:70] = 1, 2
    s = realdata.score(np.ones(100, dtype=bool), wid > 0, wid, 2, 1.0)
    assert (s.found, s.true_runs, s.false_runs) == (2, 2, 3)
    assert s.point_precision == 0.2 and abs(s.f1 - 2 * 0.4 / 1.4) < 1e-12
    # one flag in the first window, one outside: half the windows, half the alarms
    f = np.zeros(100, dtype=bool)
    f[[25, 50]] = True
    s = realdata.score(f, wid > 0, wid, 2, 1.0)
    assert (s.found, s.true_runs, s.false_runs, s.recall, s.precision) == (1, 1, 1, 0.5, 0.5)


def test_rolling_z_uses_the_past_only():
    x = np.r_[np.random.default_rng(1).normal(0, 1, 300), 10.0, np.zeros(5)]
    z = realdata.rolling_z(x, 100, 3.0)
    assert z[300] and z[:300].sum() <= 3


def test_a_level_shift_in_a_nab_file_is_found_by_the_detectors(tmp_path):
    rng = np.random.default_rng(2)
    n, t0 = 3000, datetime(2014, 3, 1)
    v = 50 + rng.normal(0, 1, n)
    v[2500:2600] += 15  # a 15-sigma shift for 100 readings
    d = tmp_path / "realKnownCause"
    d.mkdir()
    stamps = [t0 + timedelta(minutes=5 * i) for i in range(n)]
    (d / "made.csv").write_text("timestamp,value\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{x:.3f}\n"
                                                              for t, x in zip(stamps, v)))
    windows = [[f"{stamps[2450]:%Y-%m-%d %H:%M:%S}.000000", f"{stamps[2650]:%Y-%m-%d %H:%M:%S}.000000"]]
    (tmp_path / "w.json").write_text(json.dumps({"realKnownCause/made.csv": windows}))
    scores, rows, step = realdata.run_file(d / "made.csv", windows, 3.0, 1.0, per_detector=False)
    assert (rows, step) == (n, 300.0)
    assert scores["detectors"].found == 1 and scores["flag everything"].found == 1
    assert scores["detectors"].f1 > scores["flag everything"].f1
