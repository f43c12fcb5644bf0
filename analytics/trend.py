"""Slow drift against a long, frozen baseline: the stateful trend test (sensor fouling, ageing).

A fouled or ageing sensor walks away from the truth by a little every hour, for hours to days.
Every trailing baseline of the windowed tests (hours, inside the service's 24 h window) follows
such a walk, and the stateful CUSUM re-bases on it. Here every series keeps, between passes and
restarts (:class:`TrendState`, ``state_dir/analytics/trend``), its last ``hours`` complete hourly
blocks (blocks of ``block`` samples aligned to grid index // block, as in :mod:`analytics.baseline`):

- ``hx``: the block median of the series, ``hr``: the block median of the neighbours' reference
  (:func:`analytics.qc.neighbour_reference`: what all series of the field share: weather, the day);
- ``wm``: the block's within-hour MAD of the residual (series minus reference): its sample noise;
- ``ok``: whether the hour is part of the baseline.

When a block closes, the baseline (the ``ok`` hours before it) is fitted per series by least
squares, ``hx ~ a + b * hr`` (b: how strongly the series follows the shared signal: a pollutant
station at twice the city's level has twice its daily swing; with ``fit_hours``, b = 1 until that
many baseline hours exist; a b more than ``pool_k`` population spreads off the warm series' median
b, fitted on a stuck or faulty warm-up, is replaced by that median). The test value is the median of the
fitted residual ``e = hx - a - b hr`` over the last ``recent`` hours, in units of the scale, the
largest of:

- 1.4826 x the MAD of the baseline residuals' hour-to-hour differences / sqrt(2): the hour-to-hour
  wander, which a linear trend inside the baseline does not inflate (the MAD of the residuals would);
- ``noise_k`` x 1.4826 x the median within-hour MAD / sqrt(block): what the noise leaves in an
  hourly median (heavy-tailed or correlated noise leaves more than the white-noise value);
- ``floor`` (half the field's resolution: a quantised series) and ``span_floor`` x its expected
  span (a change of less than that is not worth an alarm: a bin's temperature follows its fill by ~2 C).

A ramp that began in the warm-up joins the baseline hour by hour and stays a few scales off it
however far it walks: where the level is past ``join_z``, the walk of the baseline hours and the
tested ones (their Theil-Sen slope x the hours they span, in scales) is the test value when larger
(:func:`_walk`).

The baseline is **frozen** against a drift: an hour joins it only when its test value is below
``join_z`` (after warm-up) and it raised no alarm, so a slow walk stops entering its own baseline
as soon as it is visible and keeps growing against the level before it; after a fault ends the
residual returns to that level and the alarm ends instead of starting a new one. A baseline learnt
during a fault that began in the warm-up stands off the neighbours (more than ``outlier_k``
population spreads): the move back towards them when that fault ends raises nothing. An alarm
that has lasted ``rebase_hours`` (the rings' length) is a new normal: the baseline is learnt
again (warm-up, flag 2).

A **step** is not the trend test's to judge (:func:`_step`): a level that jumps by more than
``suspect_z`` from one hour to the next and stands still after it (the end of a fault the baseline
was learnt on, a re-mounted sensor, an offset; the shift test flags the step itself) holds the
verdict (flag 2) for ``step_hours``, then the baseline moves to it, keeping its length and scale;
a walk from there is held against it. Without this a fault in a station's first hours, learnt as
its baseline, read as a drift for two days after it ended.

The verdict of a closed hour is the flag of every reading in the next hour (a delay of up to one
block): 3 (suspect) above ``suspect_z``, 4 above ``fail_z`` (an alarm the move back to the
neighbours withholds is 1 at any size), 2 during warm-up (fewer than ``min_hours`` baseline
hours), 9 missing. An alarm also needs the closing hour and its last ``recheck`` fraction off the
baseline, and ends after that fraction of the next hour if the series is back (:func:`_recheck`):
a fault that ended inside an hour does not flag the clean hour after it.

**Pace mode** (``pace``: a field that resets by design, a bin's fill or distance, whose level says
nothing): between resets such a series moves at its own steady pace (a bin fills at its site's
rate), and a drift adds its slope to it. The test value is the median hour-to-hour change of the
last ``pace_hours`` hours minus the baseline's median change (:func:`_pace`); hours pegged near
the sensor's range (a full bin) and changes off the usual pace by more than ``jump`` x the span (a
collection, a step) are left out; the frozen baseline works as above. A container moves toward its
reset side (``side``: an emptier bin) only in steps: a baseline pace that way is a fault's, learnt
in the warm-up, and counts as 0; and a recent median pace that way of more than ``reset_z`` times
its own spread (at least ``floor``) is suspect from the first hours, warm-up or not. A pace slower
than the baseline's but still filling is not judged: a quieter day looks the same, and so does the
end of a faster fill learnt in the warm-up (it read as a fault for the rest of the record).

Every sample is processed once, in grid order, whichever pass it arrives in (a pass resuming
from saved state gives the flags of one long run: tests/analytics/test_trend.py). The update is
a loop over the new grid columns with the work at block ends, vectorised over series.

Arrays: values and reference (S, n) field units; state vectors (S,); hour rings (S, hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import statefile
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult, nanmedian_rows, neighbour_reference

MAD_TO_SIGMA = 1.4826
FORMAT = 1  # bump when the saved layout changes: an older file is then ignored (warm-up again)


@dataclass(frozen=True)
class TrendParams:
    """Parameters of the trend test (windows in hourly blocks, thresholds in scales)."""

    block: int  # samples per hourly block
    floor: float = 0.0  # smallest scale, field units (the sensor resolution)
    span_floor: float = 0.0  # smallest scale, field units (a fraction of the expected span)
    hours: int = 48  # hourly blocks kept (the longest baseline)
    recent: int = 2  # hours whose median residual is tested
    min_hours: int = 3  # baseline hours before any verdict (warm-up)
    fit_hours: int = 0  # baseline hours before b is fitted (b = 1 until then); 0: always fitted
    noise_k: float = 3.0
    join_z: float = 4.0  # an hour whose test value exceeds this does not join the baseline
    suspect_z: float = 8.0
    fail_z: float = 16.0
    slope_hours: int = 24  # the baseline's walk (Theil-Sen slope x hours) is tested too when it spans
    # at least half this many hours (0: off)
    rebase_hours: int = 48  # an alarm this long is a new normal: the baseline is learnt again
    pool_k: float = 3.0  # a b this many population spreads off the warm series' median b is replaced by it (0: off)
    outlier_k: float = 3.0  # a baseline this many population spreads off the neighbours is suspect (0: off)
    recheck: float = 0.25  # an alarm needs the closing hour's last this fraction off too, and ends after
    # this fraction of the next hour if the series is back (0: neither)
    step_hours: int = 2  # hours a level that left the baseline in one step must stand still before the
    # baseline moves to it (the verdict is held meanwhile; 0: off)
    still_k: float = 3.0  # standing still: the hours after the step within this many scales of each other
    # pace mode, for a field that resets by design (a bin's fill): its own hour-to-hour pace between resets
    pace: bool = False
    lo: float = -np.inf  # the sensor's range, field units: hours pegged near it say nothing of the pace,
    hi: float = np.inf  # and a level at it (a reading clipped by a fault) is no level to move the baseline to
    span: float = 0.0  # expected span, field units
    peg: float = 0.03  # pegged = within this fraction of the span from a range limit
    jump: float = 0.05  # an hourly change off the usual pace by this fraction of the span is a step (a reset)
    pace_hours: int = 6  # hours whose median change is tested
    side: int = 0  # the side a reset moves the field to (+1 high: a bin's distance, -1 low: its fill %), 0: none
    reset_z: float = 3.0  # a median pace toward that side of this many scales of its own spread is suspect

    @classmethod
    def from_detectors(cls, p, sp=None) -> "TrendParams":  # noqa: ANN001 - QcParams, StatParams (no cycle)
        """The defaults for a field's :class:`analytics.detectors.QcParams` (thresholds from
        :class:`analytics.detectors.StatParams`)."""
        from analytics.detectors import StatParams

        sp = sp or StatParams()
        span = p.suspect_hi - p.suspect_lo
        if not p.level_enabled:  # a resetting field: no level to hold, but a pace
            return cls(block=p.block, floor=sp.trend_pace_resolution_k * p.resolution, pace=True, lo=p.fail_lo,
                       hi=p.fail_hi, span=span, side=p.reset_side, min_hours=6, join_z=3.0, suspect_z=sp.trend_pace_z,
                       fail_z=2 * sp.trend_pace_z)
        return cls(block=p.block, floor=sp.trend_resolution_k * p.resolution, span_floor=sp.trend_span_floor * span,
                   suspect_z=sp.trend_suspect_z, fail_z=sp.trend_fail_z, lo=p.fail_lo, hi=p.fail_hi, span=span)


_ARRAYS = ("hx", "hr", "wm", "ok", "cur_x", "cur_r", "flag", "score", "alarm_h")


class TrendState:
    """Trend state of S series of one field. ``g_next``: grid index of the next column (None before
    the first); ``cur_x`` / ``cur_r`` (S, block): the block being filled (values, reference);
    ``cur_whole``: that block was seen from its first sample; ``flag`` / ``score`` (S,): the verdict
    in force (from the last closed block); ``alarm_h`` (S,): hours the current alarm has lasted."""

    def __init__(self, devices: list[str], tp: TrendParams):
        s, h = len(devices), tp.hours
        self.devices = list(devices)
        self.block = tp.block
        self.hours = h
        self.g_next: int | None = None
        self.cur_whole = False
        self.opened = False
        self.hx, self.hr, self.wm = (np.full((s, h), np.nan) for _ in range(3))
        self.ok = np.zeros((s, h))
        self.cur_x, self.cur_r = (np.full((s, tp.block), np.nan) for _ in range(2))
        self.flag = np.full(s, float(NOT_EVALUATED))
        self.score = np.full(s, np.nan)
        self.alarm_h = np.zeros(s)

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` in the state, (len(devices),); unknown devices get fresh rows."""
        tp = TrendParams(block=self.block, hours=self.hours)
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: TrendState([""] * n, tp))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, self.block, self.hours,
                                            -1 if self.g_next is None else self.g_next, int(self.cur_whole),
                                            int(self.opened)], {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path, tp: TrendParams) -> "TrendState | None":
        """The saved state, or None when there is none or it was saved with another layout or block."""
        got = statefile.restore(path, _ARRAYS, [FORMAT, tp.block, tp.hours], lambda d: cls(d, tp))
        if got is None:
            return None
        st, rest = got
        st.cur_whole, st.opened = bool(rest[0]), bool(rest[1])
        return st


def _residual(x: np.ndarray, r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fitted residual ``x - a - b r`` of values ``x`` against the reference ``r`` (S', n), a / b (S',)."""
    return x - (a[:, None] + b[:, None] * r)


def _fit(st: TrendState, tp: TrendParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, scale, baseline hours) per series from the ring's baseline hours except the newest."""
    hx, hr = st.hx[:, :-1], st.hr[:, :-1]
    use = (st.ok[:, :-1] > 0) & ~np.isnan(hx) & ~np.isnan(hr)
    n = use.sum(axis=1)
    nn = np.maximum(n, 1)
    mx = np.where(use, hx, 0.0).sum(axis=1) / nn
    mr = np.where(use, hr, 0.0).sum(axis=1) / nn
    dr = np.where(use, hr - mr[:, None], 0.0)
    cov = (dr * np.where(use, hx - mx[:, None], 0.0)).sum(axis=1)
    var = (dr * dr).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0)
    b = np.clip(b, 0.0, 3.0)  # a series follows the shared signal, never against it nor wildly more
    if tp.fit_hours:
        b = np.where(n >= tp.fit_hours, b, 1.0)
    warm = n >= tp.min_hours
    if tp.pool_k and warm.sum() >= 3:  # a b far from every other series' (a warm-up on a stuck or
        # faulty stretch: b = 0 or the clip) is no property of the station: take the population's
        mid = np.median(b[warm])
        spread = MAD_TO_SIGMA * np.median(np.abs(b[warm] - mid))
        b = np.where(np.abs(b - mid) > tp.pool_k * max(spread, 0.05), mid, b)
    a = mx - b * mr
    res = np.where(use, _residual(hx, hr, a, b), np.nan)
    # hour-to-hour differences of the baseline residual, skipping hours not in the baseline
    order = np.argsort(~use, axis=1, kind="stable")  # baseline hours first, in time order
    packed = np.take_along_axis(res, order, axis=1)
    d = np.diff(packed, axis=1)
    wander = MAD_TO_SIGMA * nanmedian_rows(np.abs(d - nanmedian_rows(d)[:, None])) / np.sqrt(2.0)
    noise = tp.noise_k * MAD_TO_SIGMA * nanmedian_rows(np.where(use, st.wm[:, :-1], np.nan)) / np.sqrt(tp.block)
    scale = np.fmax(np.fmax(wander, noise), max(tp.floor, tp.span_floor, 1e-12))
    return a, b, scale, n


def _walk(st: TrendState, tp: TrendParams, a: np.ndarray, b: np.ndarray, scale: np.ndarray,
          z: np.ndarray) -> np.ndarray:
    """The test value (S,) with the walk of the baseline: a ramp that began in the warm-up joins the
    baseline hour by hour (each hour is within ``join_z`` of a baseline that holds the ramp before
    it), so its level stays a few scales off however far it walks. The Theil-Sen slope of the fitted
    residual over the ring's baseline hours and the tested ones (a fault's or an alarm's hours are
    not in it: the end of an offset is no walk) times the hours it spans, in scales, replaces ``z``
    where it is larger, of the same sign, and the level itself is off by more than ``join_z``
    (a still series whose baseline wanders is not judged on its wander). At least
    ``slope_hours`` / 2 hours, spanning as many."""
    rows = np.flatnonzero(np.abs(z) > tp.join_z)  # only a level already off is judged (few series)
    if not rows.size:
        return z
    w = tp.hours
    e = _residual(st.hx[rows], st.hr[rows], a[rows], b[rows])
    keep = st.ok[rows] > 0
    keep[:, -tp.recent:] = True
    e = np.where(keep, e, np.nan)  # the baseline's hours (no fault's, no alarm's) and the tested ones
    i, j = np.triu_indices(w, 1)
    slope = nanmedian_rows((e[:, j] - e[:, i]) / (j - i))  # Theil-Sen
    have = ~np.isnan(e)
    length = w - 1 - np.argmax(have[:, ::-1], axis=1) - np.argmax(have, axis=1)  # first to last hour
    zw = np.where((have.sum(axis=1) * 2 >= tp.slope_hours) & (length * 2 >= tp.slope_hours),
                  slope * length / scale[rows], 0.0)
    zr = z[rows]
    out = z.copy()
    out[rows] = np.where((np.abs(zw) > np.abs(zr)) & (np.sign(zw) == np.sign(zr)), zw, zr)
    return out


def _step(st: TrendState, tp: TrendParams, a: np.ndarray, b: np.ndarray, scale: np.ndarray,
          z: np.ndarray) -> tuple[np.ndarray, bool]:
    """(hold (S,) bool: series whose level jumped and stands still since, whether a baseline moved):
    moves the baselines of those that have stood still long enough (in place: ``st.hx`` / ``st.ok``;
    fit again after).

    A drift walks away from its baseline hour by hour; a step (the end of a fault the baseline was
    learnt on, a re-mounted sensor, an offset) jumps: from one hour with data to the next by more
    than ``suspect_z`` scales (or over two, when the step fell inside an hour: that hour's median
    lies between the levels on either side), and the hours since stand within ``still_k`` scales of
    each other, as the hour before the step stood with the one before it (a fast walk jumps too, but
    does not stand on either side). Which side of a step is the fault the level cannot tell, and
    the shift test flags the step itself, so the trend test does not judge it: the verdict is held
    until ``step_hours`` hours after the jump stand still, then every hour before them is shifted
    by the jump (the baseline keeps its length and scale) and the hours after join the baseline if
    they are now within ``join_z`` of it: a walk under way when the step came stays as far off as
    it was. From a level that was itself past ``suspect_z`` (a baseline learnt on a fault, a fault
    on a fault) the shift is the whole level and the old hours leave the baseline: it starts again
    where the series now stands. A level at the sensor's range limit (a reading clipped by a
    fault) is no new level, and a jump across more than one hour without data may be a walk nobody
    saw: neither is moved to. Only series with ``|z| > suspect_z`` are looked at (few; no loop)."""
    hold = np.zeros(z.shape[0], dtype=bool)
    rows = np.flatnonzero(np.abs(z) > tp.suspect_z)
    if not tp.step_hours or not rows.size:
        return hold, False
    w = tp.hours
    e = _residual(st.hx[rows], st.hr[rows], a[rows], b[rows]) / scale[rows, None]
    order = np.argsort(~np.isnan(e), axis=1, kind="stable")  # hours with data last, in time order
    v = np.take_along_axis(e, order, axis=1)
    m = (~np.isnan(v)).sum(axis=1)
    # the trailing still run T: from the newest hour back while every value is within still_k of the others
    hi = np.fmax.accumulate(v[:, ::-1], axis=1)[:, ::-1]
    lo = np.fmin.accumulate(v[:, ::-1], axis=1)[:, ::-1]
    band = (hi - lo <= tp.still_k) & ~np.isnan(v)
    t = np.minimum(np.cumprod(band[:, ::-1], axis=1).sum(axis=1), m)  # its length
    level = nanmedian_rows(np.where(np.arange(w)[None, :] >= w - t[:, None], v, np.nan))
    k = np.arange(rows.size)

    def before_t(h: int) -> np.ndarray:  # the value h hours with data before T's first (NaN: none)
        return np.where(t + h <= m, v[k, np.clip(w - t - h, 0, w - 1)], np.nan)

    ep, eq = before_t(1), before_t(2)
    # the step fell inside hour p: its median lies between the levels either side, both far off it
    partial = ((np.fmin(eq, level) < ep) & (ep < np.fmax(eq, level)) & (np.abs(ep - eq) > tp.still_k)
               & (np.abs(level - ep) > tp.still_k))
    pre = np.where(partial, eq, ep)
    er = np.where(partial, before_t(3), eq)  # the hour before the level stepped from: a level, not a walk
    jump = np.where(np.isnan(er) | (np.abs(er - pre) <= tp.still_k), level - pre, np.nan)
    first = np.take_along_axis(order, np.clip(w - t, 0, w - 1)[:, None], axis=1)[:, 0]  # T's first hour (ring index)
    # ... and the hour the level stepped from: a jump across hours without data may be a walk unseen
    since = first - np.take_along_axis(order, np.clip(w - t - 1 - partial, 0, w - 1)[:, None], axis=1)[:, 0]
    jump = np.where(since <= 2 + partial, jump, np.nan)
    after = np.arange(w)[None, :] >= first[:, None]
    clipped = (after & _at_limit(st.hx[rows], tp)).any(axis=1)
    step = (t >= 1) & (np.abs(jump) > tp.suspect_z) & ~np.isnan(jump) & ~clipped
    hold[rows] = step & (t <= tp.step_hours)
    move = step & (t > tp.step_hours)
    if move.any():
        r = rows[move]
        # by the jump: a walk under way stays as far off as it was; from an alarm level (a baseline learnt
        # on a fault, a fault on a fault) by the whole level: the baseline starts again at the new level
        again = np.abs(pre[move]) > tp.suspect_z
        by = np.where(again, level[move], jump[move])
        st.hx[r] = np.where(after[move], st.hx[r], st.hx[r] + (by * scale[r])[:, None])
        back = np.abs(e[move] - by[:, None]) <= tp.join_z  # T hours now near the baseline
        st.ok[r] = np.where(after[move] & back & ~np.isnan(e[move]), 1.0, np.where(again[:, None], 0.0, st.ok[r]))
    return hold, bool(move.any())


def _back_to_neighbours(st: TrendState, tp: TrendParams, a: np.ndarray, b: np.ndarray, e: np.ndarray,
                        warm: np.ndarray) -> np.ndarray:
    """(S,) bool: the series' baseline stood off its neighbours (a baseline learnt during a fault that
    began in the warm-up) and the move ``e`` takes it back towards them: the end of that fault, no drift.
    Off = more than ``outlier_k`` spreads (1.4826 x MAD over the warm series) from the series' median
    offset, both offsets taken at the recent hours' reference."""
    hr = nanmedian_rows(st.hr[:, -tp.recent:])
    off = a + (b - 1.0) * hr  # baseline level minus the neighbours' reference
    mid = np.nanmedian(np.where(warm, off, np.nan))
    spread = MAD_TO_SIGMA * np.nanmedian(np.abs(np.where(warm, off, np.nan) - mid))
    was = np.abs(off - mid)
    return (was > tp.outlier_k * max(spread, tp.floor, 1e-12)) & (np.abs(off + e - mid) < was)


def _level_z(st: TrendState, tp: TrendParams, a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The level test value (S,): the median fitted residual of the last ``recent`` hours, in scales."""
    return nanmedian_rows(_residual(st.hx[:, -tp.recent:], st.hr[:, -tp.recent:], a, b)) / scale


def _pace(st: TrendState, tp: TrendParams, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pace mode: (test value, whether it speaks (warm, or the reset side's rule), whether the newest
    change may join the baseline), (S,) each.

    The hour-to-hour changes of the hourly medians (``ok`` marks the changes in the baseline; hours
    pegged near the range say nothing: a full bin reads its limit); changes off the baseline's median
    by more than ``jump`` x the span are resets (a collection) and are left out. Test value: the
    median of the last ``pace_hours`` changes minus the baseline's median change, in units of
    1.4826 x the baseline changes' MAD / sqrt(pace_hours), at least ``floor`` (per hour)."""
    h = st.hx.copy()
    h[(h <= tp.lo + tp.peg * tp.span) | (h >= tp.hi - tp.peg * tp.span)] = np.nan
    d = np.diff(h, axis=1)  # d[:, k]: the change into hour k + 1
    base = np.where(st.ok[:, 1:] > 0, d, np.nan)
    n = (~np.isnan(base)).sum(axis=1)
    mid = own = nanmedian_rows(base)
    if tp.side:  # a container only moves toward its reset side in steps (a collection): a steady pace
        # that way is no site's pace but a fault's, learnt in the warm-up; the own pace is then at most 0
        mid = np.where(tp.side * mid > 0, 0.0, mid)
    off = np.abs(d - mid[:, None]) > tp.jump * tp.span
    recent = np.where(off, np.nan, d)[:, -tp.pace_hours:]
    scale = MAD_TO_SIGMA * nanmedian_rows(np.abs(base - own[:, None])) / np.sqrt(tp.pace_hours)
    scale = np.fmax(scale, max(tp.floor, 1e-12))
    med = nanmedian_rows(recent)
    z = (med - mid) / scale
    speaks = n >= tp.min_hours
    if tp.side:  # a steady move toward the reset side is a fault against any pace, warm or not
        rn = (~np.isnan(recent)).sum(axis=1)
        rs = np.fmax(MAD_TO_SIGMA * nanmedian_rows(np.abs(recent - med[:, None])) / np.sqrt(np.maximum(rn, 1)),
                     max(tp.floor, 1e-12))
        zt = tp.side * med / rs * (tp.suspect_z / tp.reset_z)  # in the pace test's units
        back = (rn * 2 >= tp.pace_hours) & (zt > np.where(speaks, np.abs(z), 0.0))
        # a pace slower than the baseline's (toward the reset side, still filling) is a quieter day, or
        # the end of a fault learnt as the pace in the warm-up: not judged (it joins the baseline)
        z = np.where(back, zt * tp.side, np.where(tp.side * z > 0, 0.0, z))
        speaks |= back & (zt > tp.suspect_z)
    return z, speaks, usable & ~np.isnan(d[:, -1]) & ~off[:, -1]


def _close_block(st: TrendState, tp: TrendParams) -> None:
    """Push the finished block into the rings and set the verdict for the next block."""
    cnt = (~np.isnan(st.cur_x)).sum(axis=1)
    usable = (cnt * 2 >= tp.block) & st.cur_whole
    hx = nanmedian_rows(st.cur_x)
    hr = nanmedian_rows(st.cur_r)
    r = st.cur_x - st.cur_r
    wm = nanmedian_rows(np.abs(r - nanmedian_rows(r)[:, None]))
    for ring, v in ((st.hx, hx), (st.hr, hr), (st.wm, wm)):
        ring[:, :-1] = ring[:, 1:]
        ring[:, -1] = np.where(usable, v, np.nan)
    st.ok[:, :-1] = st.ok[:, 1:]
    st.ok[:, -1] = 0.0
    hold = np.zeros(len(st.devices), dtype=bool)
    if tp.pace:
        z, warm, usable = _pace(st, tp, usable)
        az = np.abs(z)
        alarm = warm & (az > tp.suspect_z)
    else:
        a, b, scale, n = _fit(st, tp)
        warm = n >= tp.min_hours
        z = _level_z(st, tp, a, b, scale)
        hold, moved = _step(st, tp, a, b, scale, np.where(warm, z, 0.0))
        if moved:
            a, b, scale, n = _fit(st, tp)
            warm = n >= tp.min_hours
            z = _level_z(st, tp, a, b, scale)
        if tp.slope_hours:
            z = _walk(st, tp, a, b, scale, z)
        az = np.abs(z)
        # the newest hour must be off too, to its end (the test value is a median over ``recent``
        # hours): a fault that ended in it would otherwise flag the hour after, a clean one
        agree = np.ones(z.shape, dtype=bool)
        if tp.recheck:
            k = _recheck_samples(tp)
            e_new = _residual(st.hx[:, -1:], st.hr[:, -1:], a, b)[:, 0] / scale
            e_end = nanmedian_rows(_residual(st.cur_x[:, -k:], st.cur_r[:, -k:], a, b)) / scale
            for v in (e_new, e_end):
                agree &= np.isnan(v) | ((np.sign(v) == np.sign(z)) & (np.abs(v) > tp.join_z))
        alarm = warm & (az > tp.suspect_z) & ~hold & agree
        if tp.outlier_k and warm.sum() >= 3:
            alarm &= ~_back_to_neighbours(st, tp, a, b, z * scale, warm)
    judged = warm & ~np.isnan(z) & ~hold
    st.flag = np.where(judged, np.where(alarm, np.where(az > tp.fail_z, FAIL, SUSPECT), GOOD),
                       NOT_EVALUATED).astype(np.float64)
    st.score = np.where(warm & ~hold, az, np.nan)
    # the newest hour joins the baseline unless it is already off it (frozen against a walk), or it
    # reads the sensor's range limit while its neighbours do not (clipped by a fault: no level)
    clipped = _at_limit(st.hx[:, -1], tp) & ~_at_limit(st.hr[:, -1], tp) & (not tp.pace)
    st.ok[:, -1] = usable & ~alarm & ~(warm & (az > tp.join_z)) & ~clipped
    st.alarm_h = np.where(alarm, st.alarm_h + 1, 0.0)
    renew = st.alarm_h >= tp.rebase_hours  # a lasting new level: learn the baseline again from here
    if renew.any():
        st.ok[renew] = 0.0
        st.ok[renew, -1] = usable[renew]
        st.alarm_h[renew] = 0.0
        st.flag[renew] = NOT_EVALUATED
        st.score[renew] = np.nan
    st.cur_x[:] = np.nan
    st.cur_r[:] = np.nan
    st.cur_whole = True


def _at_limit(v: np.ndarray, tp: TrendParams) -> np.ndarray:
    """Values (any shape) at or past the sensor's range limits."""
    return (v <= tp.lo) | (v >= tp.hi)


def _recheck_samples(tp: TrendParams) -> int:
    return max(int(round(tp.recheck * tp.block)), 1)


def _recheck(st: TrendState, tp: TrendParams, k: int) -> None:
    """End the alarms of series whose first ``k`` samples of the block in progress are back within
    ``join_z`` of the baseline: the verdict of the hour before was a median over hours a fault filled,
    and it ended since (the readings of the rest of this hour are clean)."""
    on = (st.flag == SUSPECT) | (st.flag == FAIL)
    if not on.any():
        return
    a, b, scale, _ = _fit(st, tp)
    e = nanmedian_rows(_residual(st.cur_x[:, :k], st.cur_r[:, :k], a, b)) / scale
    st.flag = np.where(on & (np.abs(e) < tp.join_z), float(GOOD), st.flag)


def _start(st: TrendState, g: int, tp: TrendParams) -> None:
    """(Re)start the timeline at grid index ``g``: the block in progress is dropped."""
    st.cur_x[:] = np.nan
    st.cur_r[:] = np.nan
    st.cur_whole = g % tp.block == 0
    st.opened = False
    st.g_next = g


def update(st: TrendState, rows: np.ndarray, x: np.ndarray, ref: np.ndarray, g0: int, tp: TrendParams) -> QcResult:
    """Advance the test over columns ``g0 .. g0 + n - 1`` of ``x`` (len(rows), n), field units, with
    the neighbours' reference ``ref`` (n,) of the same columns.

    Columns before ``st.g_next`` were processed by an earlier pass (their verdicts are 2 here); a gap
    between ``st.g_next`` and ``g0`` counts as missing readings (a gap longer than the rings empties
    them: warm-up again). Returns flags 1/3/4, 2 during warm-up, 9 missing; score |test value| in scales.
    """
    nrow, n = x.shape
    s_all = len(st.devices)
    out = QcResult(np.full((nrow, n), NOT_EVALUATED, dtype=np.int8), np.full((nrow, n), np.nan))
    if st.g_next is None:
        _start(st, g0, tp)
    assert st.g_next is not None
    gap = g0 - st.g_next
    if gap > tp.hours * tp.block:
        for ring in (st.hx, st.hr, st.wm):
            ring[:] = np.nan
        st.ok[:] = 0.0
        st.flag[:] = NOT_EVALUATED
        st.score[:] = np.nan
        st.alarm_h[:] = 0.0
        _start(st, g0, tp)
    elif gap > 0:  # missing columns before this window: processed as no readings
        update(st, rows[:0], np.empty((0, gap)), np.full(gap, np.nan), st.g_next, tp)
    full = np.full(s_all, np.nan)
    k = _recheck_samples(tp) if tp.recheck and not tp.pace else 0
    for j in range(max(st.g_next - g0, 0), n):
        g = g0 + j
        pos = g % tp.block
        if pos == 0 and st.opened:
            _close_block(st, tp)
        elif k and pos == k and st.cur_whole:
            _recheck(st, tp, k)
        full[:] = np.nan
        full[rows] = x[:, j]
        st.cur_x[:, pos] = full
        st.cur_r[:, pos] = np.where(np.isnan(full), np.nan, ref[j])
        present = ~np.isnan(x[:, j])
        out.flag[:, j] = np.where(present, st.flag[rows], MISSING)
        out.score[:, j] = np.where(present, st.score[rows], np.nan)
        st.g_next = g + 1
        st.opened = True
    return out


class TrendStore(statefile.Store[TrendState]):
    """Trend states of one service, one file per (kind, field) under ``root`` (``state_dir/analytics/trend``)."""

    def __init__(self, root: Path):
        super().__init__(root, TrendState.load, lambda tp: TrendState([], tp), lambda tp: (tp.block, tp.hours))


def reference(x: np.ndarray) -> np.ndarray:
    """The shared signal the test fits each series to: the neighbours' median (T,) of x (S, T)
    (zeros with fewer than 3 series: then each series is held against its own level only)."""
    x = x.astype(np.float64, copy=False)
    return neighbour_reference(x) if x.shape[0] >= 3 else np.zeros(x.shape[1])


def run_record(x: np.ndarray, g0: int, tp: TrendParams, devices: list[str] | None = None) -> QcResult:
    """The test over a whole record ``x`` (S, T) from a fresh state (what a service started at the
    record's first bin writes, pass after pass)."""
    devs = devices if devices is not None else [str(i) for i in range(x.shape[0])]
    st = TrendState([], tp)
    return update(st, st.rows_for(devs), x.astype(np.float64, copy=False), reference(x), g0, tp)


__all__ = ["TrendParams", "TrendState", "TrendStore", "reference", "run_record", "update"]
