"""Stream = batch: the live loop (a pass per new bin over a sliding window, newest bin held back
one step) writes exactly the flags of one batch run over the same record."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import qc
from analytics.detectors import QcParams, StatParams, batch_run, stream_run

T0 = 1_795_400_000_000 + 17 * 60_000  # not on an hour: blocks start inside the record


def _record(s=12, seed=3):
    p = QcParams(0, 100, 5, 60, 0.1, 60.0, block_s=1200.0)  # 20-min blocks: a short record, a fast test
    t = p.lookback + 400
    rng = np.random.default_rng(seed)
    base = 30 + 5 * np.sin(np.arange(t) * 2 * np.pi / 1440)
    x = np.round(base[None, :] + rng.normal(0, 1, (s, t)), 1)
    x[rng.random((s, t)) < 0.02] = np.nan
    x[1, p.lookback + 50] += 25  # spike
    x[2, p.lookback + 100 :] += 6  # level shift
    x[3, p.lookback + 20 : p.lookback + 200] = 31.0  # stuck
    x[4, p.lookback + 60 : p.lookback + 80] = np.nan  # outage
    x[5, p.lookback + 10 :] += np.linspace(0, 10, t - p.lookback - 10)  # drift
    x[6, :300] = np.nan  # joins late: warm-up inside the record
    return x, p


@pytest.mark.parametrize("every_n", [1, 7])
def test_live_loop_equals_batch(every_n):
    x, p = _record()
    window = p.lookback + 2
    sp = StatParams()
    batch = batch_run(x, p, T0, sp, dtype=np.float64, score_dtype=np.float64)
    live = stream_run(x, p, T0, window, every_n, sp, dtype=np.float64, score_dtype=np.float64)
    t = x.shape[1]
    for k in batch:
        b, v = batch[k].flag[:, : t - 1], live[k].flag[:, : t - 1]
        assert (b == v).all(), (k, np.argwhere(b != v)[:5])
    assert (live["spike"].flag[:, -1] == qc.NOT_EVALUATED).all()  # waits for its successor
    # the record holds something to find: the equality is not one of empty flags
    assert batch["spike"].flag[1, p.lookback + 50] >= qc.SUSPECT
    assert (batch["flat_line"].flag[3, p.lookback + 20 + p.flat_n[0] : p.lookback + 200] >= qc.SUSPECT).all()


def test_warm_up_is_not_evaluated():
    x, p = _record()
    res = batch_run(x, p, T0, StatParams(), dtype=np.float64, score_dtype=np.float64)
    late = slice(300, 300 + p.block)  # series 6 starts reporting at column 300
    for k in ("ewma", "cusum", "hampel", "drift"):
        f = res[k].flag[6, late]
        assert ((f == qc.NOT_EVALUATED) | (f == qc.MISSING)).all(), k
        assert (res[k].flag[0, p.lookback:] != qc.NOT_EVALUATED).any(), k
