"""Alarm episodes: runs of suspect/fail verdicts of one fault type on one series, as one record each.

A dashboard or an operator wants "air-3 pm25: level shift from 10:02 to 11:40, peak shift 14",
not 98 `qc` points. Each detector belongs to one fault type (:data:`FAULT_OF`); an episode of a
series and fault type opens at the first suspect/fail bin of any of its detectors and ends when
``gap`` bins pass without one (so the repeated signals of a CUSUM that restarts after each
signal, or a spike test firing on both sides of a step, are one episode). Per episode: onset and
end (grid bins, the time of the bin's start), the peak (the worst flag, and among equal flags the
highest score of one detector: scores of different detectors are in different units, so the peak
names its detector), the number of flagged bins, and whether it is still open.

The tracker keeps its state per (kind, field) between passes and across restarts
(``state_dir/analytics/episodes``), and every bin is processed once in grid order, like the
stateful charts (:mod:`analytics.chartstate`). An open episode is written again by every pass
that extends it (same series and time: InfluxDB keeps the last write), closed once it ends.

Arrays: flags (S, n) int8 and scores (S, n) per detector for n new bins; state (S, F) for the
F fault types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import baseline as bl
from analytics import statefile
from analytics.qc import FAIL, SUSPECT, QcResult

# detector (`qc` test) -> the fault type its alarms are episodes of, named as analytics.evaluate
# groups the tests (DETECTORS_FOR): spike, shift (analytics/shift.py), drift (the trend test,
# analytics/trend.py), seasonal, multivariate (the station test); data quality apart (range,
# flatline, gap). The opt-in tests (analytics/alarmset.py OPT_IN, off by default) have episode
# types of their own, so they never pass for a scored one: Hampel (a reading far from the
# previous hours' level) "outlier", rate of change "step", the windowed neighbour test
# "neighbour_drift", EWMA / CUSUM "control_chart".
FAULT_OF: dict[str, str] = {
    "gross_range": "range", "flat_line": "flatline", "gap": "gap",
    "spike": "spike", "shift": "shift", "trend": "drift", "seasonal": "seasonal", "multivariate": "multivariate",
    "hampel": "outlier", "rate_of_change": "step", "drift": "neighbour_drift", "ewma": "control_chart",
    "cusum": "control_chart",
}
FAULTS: tuple[str, ...] = tuple(dict.fromkeys(FAULT_OF.values()))
TESTS: tuple[str, ...] = tuple(FAULT_OF)
GAP_S = 1800.0  # an episode ends after this long without a verdict of its fault type
FORMAT = 3  # 2: peak_sur; 3: fault types named as analytics.evaluate groups them


@dataclass(frozen=True)
class Episode:
    """One episode as written (times: ms of the grid bins' starts)."""

    row: int  # series index in the caller's device list
    fault: str
    onset_ms: int
    end_ms: int
    peak_ms: int
    peak_flag: int
    peak_score: float
    peak_test: str
    samples: int
    open: bool


_ARRAYS = ("onset", "last", "peak_g", "peak_flag", "peak_score", "peak_test", "samples", "dirty", "peak_sur")


class EpisodeState:
    """Open episodes of S series x F fault types; ``onset`` -1 = none open. ``g_next``: next grid bin."""

    def __init__(self, devices: list[str]):
        s, f = len(devices), len(FAULTS)
        self.devices = list(devices)
        self.g_next: int | None = None
        self.onset, self.last, self.peak_g, self.samples = (np.full((s, f), -1, dtype=np.int64) for _ in range(4))
        self.peak_flag = np.zeros((s, f), dtype=np.int64)
        self.peak_test = np.zeros((s, f), dtype=np.int64)
        self.peak_score = np.full((s, f), np.nan)
        self.peak_sur = np.full((s, f), np.nan)  # the peak's tail surprise (analytics/fusion.py), NaN: unknown
        self.dirty = np.zeros((s, f), dtype=bool)  # changed since last written

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` (len(devices),); unknown devices get fresh rows."""
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: EpisodeState([""] * n))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, len(FAULTS), -1 if self.g_next is None else self.g_next],
                       {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path) -> "EpisodeState | None":
        got = statefile.restore(path, _ARRAYS, [FORMAT, len(FAULTS)], cls)
        return None if got is None else got[0]


def _stronger(sur: np.ndarray, sur_old: np.ndarray, sc: np.ndarray, sc_old: np.ndarray) -> np.ndarray:
    """Among equal flags: the higher tail surprise (:mod:`analytics.fusion`) where both are known, else
    the higher raw score (the same test's, or no calibrated ranking to be had)."""
    known = ~np.isnan(sur) & ~np.isnan(sur_old)
    return np.where(known, np.nan_to_num(sur) > np.nan_to_num(sur_old), sc > sc_old)


def by_fault(results: dict[str, QcResult], rows: int, n: int, lo: int = 0, g0: int = 0,
             block: int | None = None) -> tuple[np.ndarray, ...]:
    """Per fault type, the worst flag (3/4, else 0), its score, its detector (index into :data:`TESTS`)
    and the score's tail surprise (NaN: not computed) over columns ``lo .. lo + n - 1`` of ``results``
    (test -> (S, T), column 0 = grid index ``g0``); each (S, F, n).

    Among equal flags of several tests the one whose score is the more unusual for itself wins
    (:func:`analytics.fusion.surprise`, with ``block``), not the highest raw score: the surprise is
    computed only where two or more tests of a fault type flag the same pass."""
    from analytics import fusion

    flag = np.zeros((rows, len(FAULTS), n), dtype=np.int8)
    score = np.full((rows, len(FAULTS), n), -np.inf)
    test = np.zeros((rows, len(FAULTS), n), dtype=np.int64)
    sur = np.full((rows, len(FAULTS), n), np.nan)
    flags = {name: r.flag[:, lo : lo + n] for name, r in results.items() if name in FAULT_OF}
    flags = {name: np.where((fl == SUSPECT) | (fl == FAIL), fl, 0).astype(np.int8) for name, fl in flags.items()}
    busy = [FAULT_OF[name] for name, fl in flags.items() if fl.any()]
    for name, fl in flags.items():
        r = results[name]
        fi, ti = FAULTS.index(FAULT_OF[name]), TESTS.index(name)
        sc = np.nan_to_num(np.asarray(r.score[:, lo : lo + n], dtype=np.float64), nan=0.0)
        su = np.full(sc.shape, np.nan)
        if block and busy.count(FAULT_OF[name]) > 1 and fl.any():
            su = fusion.surprise(r.score, g0, block)[:, lo : lo + n]
        better = (fl > flag[:, fi]) | ((fl == flag[:, fi]) & (fl > 0) & _stronger(su, sur[:, fi], sc, score[:, fi]))
        flag[:, fi] = np.where(better, fl, flag[:, fi])
        score[:, fi] = np.where(better, sc, score[:, fi])
        test[:, fi] = np.where(better, ti, test[:, fi])
        sur[:, fi] = np.where(better, su, sur[:, fi])
    return flag, score, test, sur


def update(st: EpisodeState, rows: np.ndarray, results: dict[str, QcResult], g0: int, n: int, step_ms: int,
           gap_s: float = GAP_S, flush: bool = False) -> list[Episode]:
    """Feed bins ``g0 .. g0 + n - 1`` (columns 0 .. n-1 of ``results``, rows = ``rows`` of the state);
    bins before ``st.g_next`` were seen by an earlier pass and are skipped. Returns the episodes that
    changed (opened, grew or closed), ``row`` indexing ``rows``. ``flush``: close every open episode
    at the end (the end of a record)."""
    gap = max(int(np.ceil(gap_s * 1000 / step_ms)), 1)
    first = 0 if st.g_next is None else max(st.g_next - g0, 0)
    out: list[Episode] = []
    if first < n:
        flag, score, test, sur = by_fault(results, len(rows), n - first, first, g0,
                                          bl.block_len(step_ms / 1000.0))
        for j in range(n - first):
            g = g0 + first + j
            f, sc, te, su = flag[:, :, j], score[:, :, j], test[:, :, j], sur[:, :, j]
            on = f > 0
            cur_open = st.onset[rows] >= 0
            ended = cur_open & ~on & (g - st.last[rows] > gap)
            if ended.any():
                out += _emit(st, rows, ended, step_ms, closed=True)
            onset, last = st.onset[rows], st.last[rows]
            pf, ps, pt, pg, ns = (st.peak_flag[rows], st.peak_score[rows], st.peak_test[rows], st.peak_g[rows],
                                  st.samples[rows])
            new = on & (onset < 0)
            onset = np.where(new, g, onset)
            pf = np.where(new, 0, pf)
            ns = np.where(new, 0, ns)
            better = on & ((f > pf) | ((f == pf) & _stronger(su, st.peak_sur[rows], sc, ps)))
            st.onset[rows] = onset
            st.last[rows] = np.where(on, g, last)
            st.samples[rows] = ns + on
            st.peak_flag[rows] = np.where(better, f, pf)
            st.peak_score[rows] = np.where(better, sc, ps)
            st.peak_test[rows] = np.where(better, te, pt)
            st.peak_sur[rows] = np.where(better, su, np.where(new, np.nan, st.peak_sur[rows]))
            st.peak_g[rows] = np.where(better, g, pg)
            st.dirty[rows] |= on
        st.g_next = g0 + n
    if flush:
        out += _emit(st, rows, st.onset[rows] >= 0, step_ms, closed=True)
    out += _emit(st, rows, st.dirty[rows] & (st.onset[rows] >= 0), step_ms, closed=False)
    return out


def _emit(st: EpisodeState, rows: np.ndarray, mask: np.ndarray, step_ms: int, closed: bool) -> list[Episode]:
    """Episodes of ``mask`` (len(rows), F) as records; closed ones are removed from the state."""
    ri, fi = np.nonzero(mask)
    out = []
    for r, f in zip(ri.tolist(), fi.tolist()):
        s = int(rows[r])
        out.append(Episode(r, FAULTS[f], int(st.onset[s, f]) * step_ms, int(st.last[s, f]) * step_ms,
                           int(st.peak_g[s, f]) * step_ms, int(st.peak_flag[s, f]), float(st.peak_score[s, f]),
                           TESTS[int(st.peak_test[s, f])], int(st.samples[s, f]), not closed))
        st.dirty[s, f] = False
        if closed:
            st.onset[s, f] = -1
    return out


class EpisodeStore(statefile.Store[EpisodeState]):
    """Episode states of one service, one file per (kind, field) under ``root``."""

    def __init__(self, root: Path):
        super().__init__(root, lambda path, _: EpisodeState.load(path), lambda _: EpisodeState([]))


def run_record(results: dict[str, QcResult], g0: int, step_ms: int, gap_s: float = GAP_S) -> list[Episode]:
    """Every episode of a whole record (test -> (S, T) results), all closed at its end."""
    s, t = next(iter(results.values())).flag.shape
    st = EpisodeState([str(i) for i in range(s)])
    eps = update(st, np.arange(s), results, g0, t, step_ms, gap_s, flush=True)
    return [e for e in eps if not e.open]


__all__ = ["Episode", "EpisodeState", "EpisodeStore", "FAULTS", "FAULT_OF", "GAP_S", "by_fault", "run_record",
           "update"]
