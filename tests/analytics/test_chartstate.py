"""Stateful control charts (analytics/chartstate.py): restart = no restart, reset and re-base after a shift."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analytics import qc
from analytics.chartstate import ChartParams, ChartState, ChartStore, run_record, update

CP = ChartParams(block=60, k_blocks=6, min_blocks=2, floor=0.01, cusum_k=1.0, cusum_h=40.0,
                 ewma_suspect_l=8.0, ewma_fail_l=16.0)


def _record(s: int = 5, t: int = 60 * 20, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (s, t))
    x[1, 600:] += 6.0  # a sustained level shift on series 1 from sample 600
    x[2, 100:130] = np.nan  # an outage
    return x


def test_passes_with_restarts_equal_one_run(tmp_path):
    x = _record()
    devs = [f"d{i}" for i in range(x.shape[0])]
    g0 = 123 * 60  # a block-aligned grid index
    whole = run_record(x, g0, CP, devs)
    store_dir = tmp_path / "charts"
    got = {k: np.full(x.shape, -1, dtype=np.int8) for k in ("ewma", "cusum")}
    end = 0
    for cut in (37, 300, 301, 650, 900, x.shape[1]):  # passes of uneven length, state saved and re-loaded
        store = ChartStore(store_dir)  # a fresh service: nothing in memory
        st = store.get("air", "pm25", CP)
        lo = max(end - 50, 0)  # windows overlap what was processed before
        res = update(st, st.rows_for(devs), x[:, lo:cut], g0 + lo, CP)
        for k in got:
            got[k][:, end:cut] = res[k].flag[:, end - lo :]
            assert (res[k].flag[:, : end - lo] == qc.NOT_EVALUATED).all()  # processed once only
        store.save("air", "pm25")
        end = cut
    for k in got:
        np.testing.assert_array_equal(got[k], whole[k].flag)


def test_cusum_signals_resets_and_rebases_after_a_shift():
    x = _record()
    res = run_record(x, 0, CP)
    cus = res["cusum"].flag
    hits = np.flatnonzero(cus[1] >= qc.SUSPECT)
    assert hits.size >= CP.confirm and 600 <= hits[0] < 640  # the shift is seen within 40 samples
    # reset after each signal, re-based once confirmed: a short burst of signals, then quiet
    assert hits[-1] < 700 and hits.size <= 4
    assert (cus[[0, 3, 4]] < qc.SUSPECT).all()  # clean series stay clean
    # the warm-up says so: nothing evaluated before two complete blocks
    assert np.isin(res["cusum"].flag[:, :120], (qc.NOT_EVALUATED, qc.MISSING)).all()
    assert (res["cusum"].flag[:, 120:] != qc.NOT_EVALUATED).all()
    assert (res["cusum"].flag[2, 100:130] == qc.MISSING).all()


def test_state_file_round_trip_and_new_devices(tmp_path):
    st = ChartState(["a", "b"], CP)
    rows = st.rows_for(["b", "c", "a"])
    assert rows.tolist() == [1, 2, 0] and st.devices == ["a", "b", "c"]
    update(st, rows, np.ones((3, 200)), 0, CP)
    st.save(tmp_path / "s.npz")
    back = ChartState.load(tmp_path / "s.npz", CP)
    assert back is not None and back.devices == st.devices and back.g_next == 200
    np.testing.assert_array_equal(back.med, st.med)
    # another block length: the old state does not apply
    assert ChartState.load(tmp_path / "s.npz", ChartParams(block=30)) is None
    assert ChartState.load(tmp_path / "missing.npz", CP) is None


def test_a_sum_creeping_longer_than_the_window_restarts():
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, (3, 60 * 12))
    x[0, 300:] += 1.6  # z - k of about 0.6 a sample: h 40 needs ~70 samples of it
    slow = run_record(x, 0, CP)["cusum"].flag
    forgetting = run_record(x, 0, replace(CP, window=30))["cusum"].flag
    assert (slow[0] >= qc.SUSPECT).any()
    assert not (forgetting[0] >= qc.SUSPECT).any()
