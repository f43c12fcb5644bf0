"""Alarm episodes (analytics/episodes.py): runs of verdicts merged per fault type, restart-safe."""

from __future__ import annotations

import numpy as np

from analytics import qc
from analytics.episodes import EpisodeState, EpisodeStore, run_record, update

STEP = 60_000


def _results(t: int = 200) -> dict[str, qc.QcResult]:
    def empty() -> qc.QcResult:
        return qc.QcResult(np.full((3, t), qc.GOOD, dtype=np.int8), np.zeros((3, t)))
    r = {k: empty() for k in ("cusum", "ewma", "spike", "hampel", "gap")}
    # series 0: a shift seen by EWMA at 50, then CUSUM signals every 20 bins (reset after
    # each signal) until 110: one episode; a lone CUSUM signal at 190 is another
    r["ewma"].flag[0, 50] = qc.SUSPECT
    r["ewma"].score[0, 50] = 14.0
    for j in (70, 90, 110):
        r["cusum"].flag[0, j] = qc.FAIL if j == 90 else qc.SUSPECT
        r["cusum"].score[0, j] = 500.0 if j == 90 else 900.0  # the fail beats a higher suspect score
    r["cusum"].flag[0, 190] = qc.SUSPECT
    # series 1: a spike at 30 and 31, Hampel's outlier at 31 (an episode of its own type)
    r["spike"].flag[1, 30:32] = qc.SUSPECT
    r["hampel"].flag[1, 31] = qc.FAIL
    r["hampel"].score[1, 31] = 66.0
    r["gap"].flag[2, 5] = qc.MISSING  # not a verdict: no episode
    r["hampel"].flag[2, 6] = qc.NOT_EVALUATED
    return r


def test_verdict_runs_become_episodes():
    eps = run_record(_results(), 1000, STEP)
    got = sorted((e.row, e.fault, (e.onset_ms // STEP) - 1000, (e.end_ms // STEP) - 1000, e.peak_flag,
                  e.peak_test, e.peak_score, e.samples) for e in eps)
    assert got == [
        (0, "control_chart", 50, 110, qc.FAIL, "cusum", 500.0, 4),
        (0, "control_chart", 190, 190, qc.SUSPECT, "cusum", 0.0, 1),
        (1, "outlier", 31, 31, qc.FAIL, "hampel", 66.0, 1),
        (1, "spike", 30, 31, qc.SUSPECT, "spike", 0.0, 2),
    ]
    assert all(not e.open for e in eps)


def test_passes_with_restarts_give_the_episodes_of_one_run(tmp_path):
    r = _results()
    whole = {(e.row, e.fault, e.onset_ms): e for e in run_record(r, 1000, STEP)}
    seen: dict = {}
    end = 0
    for cut in (40, 75, 76, 130, 200):
        store = EpisodeStore(tmp_path)  # a fresh process every pass
        st = store.get("air", "pm25")
        lo = max(end - 10, 0)
        part = {k: qc.QcResult(v.flag[:, lo:cut], v.score[:, lo:cut]) for k, v in r.items()}
        for e in update(st, st.rows_for(["0", "1", "2"]), part, 1000 + lo, cut - lo, STEP, flush=cut == 200):
            seen[(e.row, e.fault, e.onset_ms)] = e  # a later write of the same episode replaces the earlier
        store.save("air", "pm25")
        end = cut
    assert seen == whole


def test_open_episode_is_reported_open_then_closed():
    r = _results()
    st = EpisodeState(["a", "b", "c"])
    rows = st.rows_for(["a", "b", "c"])
    first = update(st, rows, {k: qc.QcResult(v.flag[:, :80], v.score[:, :80]) for k, v in r.items()}, 0, 80, STEP)
    assert [(e.fault, e.open) for e in first if e.row == 0] == [("control_chart", True)]
    # the spike closed 30 min after it, inside this pass
    assert sorted((e.fault, e.open) for e in first if e.row == 1) == [("outlier", False), ("spike", False)]
    again = update(st, rows, {k: qc.QcResult(v.flag[:, 80:150], v.score[:, 80:150]) for k, v in r.items()},
                   80, 70, STEP)
    assert [(e.onset_ms, e.end_ms, e.open) for e in again if e.row == 0] == [(50 * STEP, 110 * STEP, False)]


def test_peak_names_the_test_whose_score_is_most_unusual_for_itself_not_the_largest_raw_score():
    """Two tests of one fault type (control_chart) flag the same bins: CUSUM (sums in the hundreds
    every hour) a little above its usual, the other (a score usually ~0.01) far beyond its own past:
    the peak is the other, whose raw score is the smaller by four orders of magnitude."""
    from analytics import fusion

    t, s = 600, 2
    rng = np.random.default_rng(3)
    r = {k: qc.QcResult(np.full((s, t), qc.GOOD, dtype=np.int8), np.zeros((s, t))) for k in ("cusum", "ewma")}
    r["cusum"].score[...] = rng.uniform(100.0, 200.0, (s, t))
    r["ewma"].score[...] = np.abs(rng.normal(0.0, 0.01, (s, t)))
    r["cusum"].score[:, 500] = 195.0  # between its own 90th and 99th percentile
    r["ewma"].score[:, 500] = [0.5, 0.008]  # series 0: far out; series 1: as usual
    for k in r:
        r[k].flag[:, 500] = qc.SUSPECT
    sur = {k: fusion.surprise(v.score, 0, 60)[:, 500] for k, v in r.items()}
    assert sur["ewma"][0] > 10 > 2.0 > sur["cusum"][0] > 1.0 > sur["ewma"][1]
    got = {e.row: (e.peak_test, e.peak_score) for e in run_record(r, 0, STEP)}
    assert got[0] == ("ewma", 0.5)
    assert got[1][0] == "cusum"  # a score as usual is no stronger than CUSUM a bit above its own


def test_surprise_says_nothing_without_a_past_and_grows_with_the_score():
    from analytics import fusion

    x = np.abs(np.random.default_rng(4).normal(0, 1.0, (2, 400)))
    x[1] = np.nan  # a test that never evaluated
    sur = fusion.surprise(x, 0, 60)
    assert np.isnan(sur[:, :120]).all() and np.isnan(sur[1]).all()  # two past blocks first
    y = x.copy()
    y[0, 300:303] = [2.0, 4.0, 8.0]
    s2 = fusion.surprise(y, 0, 60)[0, 300:303]
    assert 1.0 < s2[0] < s2[1] < s2[2] <= fusion.MAX_SURPRISE
