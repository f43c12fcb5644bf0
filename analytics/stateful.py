"""The stateful tests of one field, chained as the live loop runs them: one home for the order and
the rules that the service (:meth:`analytics.service.AnalyticsService._charts`, states from its
stores, a pass at a time) and the evaluation (:func:`analytics.evaluate.detector_results`, fresh
states over a whole record) share.

- the level-shift test (:mod:`analytics.shift`) on the neighbour residual;
- the seasonal test (:mod:`analytics.seasonal`), re-based after a shift the shift test kept;
- the trend test (:mod:`analytics.trend`) against the neighbours' reference (:func:`analytics.trend.reference`);
- EWMA / CUSUM (:mod:`analytics.chartstate`) only when written (opt-in, :mod:`analytics.alarmset`):
  their state is neither loaded nor kept otherwise;
- on a resetting field (``not p.level_enabled``: a bin's fill or distance) only the trend test keeps
  its verdicts (it holds the pace instead of a level), and the empty-level test
  (:mod:`analytics.emptylevel`) on the measured field (``p.empty_source``, with the fill derived from
  it) stands in the shift test's place;
- the newest bin is not evaluated (it waits for its successor, as the spike test does).

Every state processes each bin once, in grid order, whichever call it arrives in: :func:`advance`
over consecutive slices with the states carried gives the flags of one call over the whole record
(tests/analytics/test_stateful.py).

Arrays: values (S, T) in field units, T grid bins from grid index ``g0``; results (S, T) per test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

import numpy as np

from analytics import chartstate, emptylevel, seasonal, shift, trend
from analytics.detectors import QcParams, StatParams, params_for
from analytics.qc import NOT_EVALUATED, QcResult
from kotacerdas.catalogue import Kind

CHARTS = frozenset({"ewma", "cusum"})  # opt-in tests (analytics/alarmset.py): charted only when written


@dataclass(frozen=True)
class Params:
    """One field's stateful-test parameters, each derived from its :class:`QcParams` ``p`` and
    :class:`StatParams` by the test's module."""

    level: bool  # p.level_enabled: False on a resetting field
    shift: shift.ShiftParams
    seasonal: seasonal.SeasonParams
    trend: trend.TrendParams
    chart: chartstate.ChartParams

    @classmethod
    def of(cls, p: QcParams, sp: StatParams) -> "Params":
        return cls(p.level_enabled, shift.ShiftParams.from_detectors(p), seasonal.params_for(p, sp),
                   trend.TrendParams.from_detectors(p, sp), chartstate.ChartParams.from_detectors(p, sp))


@dataclass(frozen=True)
class Source:
    """A resetting field's measured field (``p.empty_source``: a bin's distance), what its empty-level
    test reads: values ``x`` (S, T), the test's parameters, and the fill derived from it (S, T) or None."""

    x: np.ndarray
    params: emptylevel.EmptyParams
    fill: np.ndarray | None

    @classmethod
    def of(cls, kind: Kind, fields: Mapping[str, np.ndarray], p: QcParams, step_s: float) -> "Source | None":
        """From ``fields`` (name -> (S, T) on one grid of ``step_s``) for a field of ``kind`` with
        params ``p``; None on a field that keeps a level or whose source is not in ``fields``."""
        if p.level_enabled or p.empty_source not in fields:
            return None
        sp = params_for(kind, kind.field(p.empty_source), step_s)
        return cls(fields[p.empty_source], emptylevel.EmptyParams.from_detectors(sp), fields.get(kind.fill_level))


@dataclass
class States:
    """One (kind, field)'s states of the stateful tests (made with ``params``), advanced in place by
    :func:`advance`."""

    params: Params
    shift: shift.ShiftState
    seasonal: seasonal.SeasonState
    trend: trend.TrendState
    chart: chartstate.ChartState | None = None  # EWMA / CUSUM: only when written
    empty: emptylevel.EmptyState | None = None  # only on a resetting field with its measured source

    @classmethod
    def get(cls, get: Callable[[str, Any], Any], p: QcParams, sp: StatParams, tests: Collection[str],
            empty: bool) -> "States":
        """The states a field with params ``p`` needs with the tests ``tests`` written (``empty``: it has
        a :class:`Source`), each ``get(name, key)``: ``name`` one of this class's fields, ``key`` the
        parameters its store keys it by (:class:`analytics.statefile.Store`)."""
        pr = Params.of(p, sp)
        return cls(pr, get("shift", pr.shift), get("seasonal", pr.seasonal.step_ms), get("trend", pr.trend),
                   get("chart", pr.chart) if CHARTS & set(tests) else None, get("empty", None) if empty else None)

    @classmethod
    def fresh(cls, p: QcParams, sp: StatParams, tests: Collection[str], empty: bool) -> "States":
        """Empty states (a record's first bin: the evaluation)."""
        return cls.get(lambda name, key: _FRESH[name](key), p, sp, tests, empty)


_FRESH: dict[str, Callable[[Any], Any]] = {
    "shift": lambda sp: shift.ShiftState([], sp), "trend": lambda tp: trend.TrendState([], tp),
    "seasonal": lambda step_ms: seasonal.SeasonState([], seasonal.per_hour(step_ms)),
    "chart": lambda cp: chartstate.ChartState([], cp), "empty": lambda _: emptylevel.EmptyState([])}


def advance(st: States, devices: list[str], x: np.ndarray, g0: int, *, src: Source | None = None,
            n: int | None = None) -> dict[str, QcResult]:
    """Advance every test of ``st`` over columns 0 .. n - 1 of ``x`` (S, T), column 0 = grid index
    ``g0``, series = ``devices`` (each state finds or adds their rows); columns a state has already
    processed are skipped (flag 2 there). ``src``: the empty-level test's input on a resetting field.

    Returns ``shift``, ``seasonal``, ``trend`` (and ``ewma``, ``cusum`` with a chart state), (S, T):
    flag 2 and score NaN from column ``n`` on, and flag 2 at the newest column whatever ``n``. The
    callers differ only in ``n``: the service passes the bins up to the last it writes (the newest
    is held back, so the next pass advances over it), the evaluation the whole record (the newest
    bin's score stays). A test silenced on a resetting field is 2 everywhere, missing bins too:
    only suspect / fail is written or scored.
    """
    n = x.shape[1] if n is None else n
    pr = st.params
    names = ("shift", "seasonal", "trend") + (("ewma", "cusum") if st.chart is not None else ())
    out = {k: QcResult(np.full(x.shape, NOT_EVALUATED, dtype=np.int8), np.full(x.shape, np.nan)) for k in names}
    if n > 0:
        r = chartstate.residual(x)[:, :n]
        got = {} if st.chart is None else chartstate.update(st.chart, st.chart.rows_for(devices), r, g0, pr.chart)
        got["shift"] = shift.update(st.shift, st.shift.rows_for(devices), r, g0, pr.shift)
        got["seasonal"] = seasonal.update(st.seasonal, st.seasonal.rows_for(devices), x[:, :n], g0, pr.seasonal,
                                          got["shift"].flag)  # re-based after a kept shift
        got["trend"] = trend.update(st.trend, st.trend.rows_for(devices), x[:, :n].astype(np.float64, copy=False),
                                    trend.reference(x)[:n], g0, pr.trend)
        if not pr.level:  # no level to hold against its past: the trend test holds its pace instead ...
            got = {"trend": got["trend"]}
            if src is not None and st.empty is not None:  # ... and a container has its floor
                got["shift"] = emptylevel.update(st.empty, st.empty.rows_for(devices), src.x[:, :n], g0, src.params,
                                                 None if src.fill is None else src.fill[:, :n])
        for k, v in got.items():
            out[k].flag[:, :n], out[k].score[:, :n] = v.flag, v.score
    for v in out.values():
        v.flag[:, -1] = NOT_EVALUATED
    return out


__all__ = ["CHARTS", "Params", "Source", "States", "advance"]
