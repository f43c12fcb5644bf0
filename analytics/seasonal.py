"""Seasonal baselines from persisted history: hour-of-day and hour-of-week, leave-one-out, past-only scale.

The windowed seasonal residual (:func:`analytics.stats.seasonal_residual`) needs three days
inside the service's window (24 h by default) and so never runs live, and its baseline contains
the day it judges. Here every series keeps the mean and the within-hour MAD of each of its last
28 days of complete hours (:data:`DAYS` x 24 slots, ``state_dir/analytics/seasonal``), filled bin
by bin as the service processes them, and a reading in absolute hour A is judged against:

- hour of week, when at least :data:`MIN_WEEKS` earlier weeks have hour A - 168 w: the median
  of those hourly means (weekday / weekend patterns);
- else hour of day, when at least ``min_days`` (default 7) earlier days have hour A - 24 d
  (d = 1 .. 28): the median of those hourly means;
- else nothing: 2, not evaluated (warm-up: the first week).

Only hours before A's day enter A's baseline (leave-one-out: today's data is never in its own
baseline, and an anomaly today cannot hide itself). The scale is also from past days only:
1.4826 x the larger of the MAD of those same days' hourly means around the baseline (how much
the hour varies from day to day) and the median of their within-hour MADs (the noise within an
hour), never below ``floor``. score = |x - baseline| / scale, robust sigmas.

Hours are UTC hours of the grid; a city's local day is the same cycle shifted, which a baseline
per hour does not care about. Each pass is cut into its hours; every hour is one vectorised step
over (series, bins of that hour).

Re-basing after a kept level shift (issue 13). A sensor that is re-mounted or re-calibrated (or a
server whose load steps up for good) sits at a new level that every past day's baseline calls
off-season, for as long as those days are the majority of the history (days of alarms). Given
the level-shift test's flags (:mod:`analytics.shift`, ``shift_flag``), a series whose shift test
confirms an onset is *watched*: its seasonal verdicts are 2 (not evaluated; the shift test has
already raised the alarm) for ``rebase_h`` hours, while its hourly residuals (hourly mean minus
the old baseline) are kept. An hour after the onset's back within ``rebase_z`` scales of the old
baseline ends the watch (the level did not stay: a fault that ended). At the end of the watch,
if those residuals hold one offset (median
``m`` with ``|m|`` above ``rebase_z`` of the hour's scale, and a median absolute deviation around
it under ``steady`` x ``|m|``: a level offset, not a changed daily shape), every hour before the
onset in the series' history is moved by ``m`` (the baseline restarts from the new level, its
daily shape kept); either way the series is judged again. A fault that changes the daily
shape for a night (a night at the afternoon's level) or ends within the watch leaves the
history as it was. Price: another fault in the watch (before the level is back, or in the
``rebase_h`` hours after a shift that stays) is left to the other tests.

Day level (issue 13): a day of one series off its past days by a little at every hour (a weekend
without the weekend dip, 15 %: z 0.6-1.1 per reading) is seen in the day, not in a reading. At each
hour's close every series' hourly residual (mean - the baseline above) is taken as a fraction of
that baseline, the median over the field's series is taken off (the weekend dip and a day of rain
are city-wide: one factor at every station), and the day statistic is the median of the last 24
such residuals (a burst or a shower moves a few hours, a day-long fault all of them). It is judged
against the same statistic at the closes of the hours before this day (past-only, leave-one-out):
centre their median, scale the largest of 1.4826 x their MAD, their 90th-percentile deviation /
1.645 and the spread a median of 24 independent past hours would have (those statistics overlap
hour by hour: a few weeks hold only a few independent ones). z > ``day_suspect_z`` (8) suspect,
``day_fail_z`` (16) fail, only when the day is off by at least one resolution step and the
closing hour is off with it (half its offset, same side: the verdict ends with the fault). The
verdict at an hour's close flags the next hour's bins (a verdict waiting for the close would miss
the bins an earlier pass wrote), so a day off gives one run from about half a day in to an hour
after its end. Needs ``day_min_days`` (5) days of statistics: from about day 13 of a history.

Arrays: values (S, n) field units; history (S, DAYS * 24); shift flags (S, n).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import statefile
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult

MAD_TO_SIGMA = 1.4826
DAYS = 28  # history kept, days
SLOTS = DAYS * 24
MIN_WEEKS = 2  # earlier weeks needed for an hour-of-week baseline
HOUR_MS = 3_600_000
# 2: re-basing state (resid, watch, sprev); 3: the day-level test's eres, dday, dz (a format-2 file is
# read: its hourly history kept, the day-level test starts empty, ~13 days to its first verdict)
FORMAT = 3


@dataclass(frozen=True)
class SeasonParams:
    step_ms: int  # grid step
    min_days: int = 7  # earlier days needed for an hour-of-day baseline
    suspect_z: float = 5.0
    fail_z: float = 10.0
    floor: float = 0.0  # field units
    # the day-to-day scale is at least the spread_q quantile of the past days' |hourly mean - baseline|
    # read as a normal quantile (0.9 -> 1.645 sigma): weather (a rain shower, its washout) moves an
    # hour on a few days in ten, which a median absolute deviation does not see
    spread_q: float = 0.9
    spread_z: float = 1.645
    # common mode: with at least min_peers series judged in a bin, their median residual is taken off
    # every series' residual (a city-wide shower or a holiday moves every station alike: weather, not a sensor)
    min_peers: int = 5
    # re-basing after a level shift the shift test confirmed (module docstring)
    rebase_h: int = 24  # hours watched after the onset (a whole daily cycle at the new level)
    rebase_z: float = 3.0  # the offset is at least this many of the hour's scales
    steady: float = 0.25  # ... and the hourly residuals' MAD around it at most this fraction of it
    # the day-level test (module docstring, "Day level"): the day's median residual against the spread
    # of the same statistic on past days
    day_hours: int = 24  # hours in the day statistic (at least half of them with a residual)
    day_min_days: int = 5  # past days of the statistic needed for a verdict
    # the simulator's clean days stay under z 4.5 (3 seeds, 18 days), a day without its weekly dip
    # scores 30-70
    day_suspect_z: float = 8.0
    day_fail_z: float = 16.0


def params_for(p, sp=None) -> SeasonParams:  # noqa: ANN001 - QcParams, StatParams (no import cycle)
    """The seasonal test's parameters for a field's :class:`analytics.detectors.QcParams` (thresholds
    from :class:`analytics.detectors.StatParams`)."""
    from analytics.detectors import StatParams

    sp = sp or StatParams()
    return SeasonParams(step_ms=int(round(p.step_s * 1000)), suspect_z=sp.seasonal_suspect_z,
                        fail_z=sp.seasonal_fail_z, floor=p.resolution)


_ARRAYS_V2 = ("mean", "mad", "cur", "resid", "watch", "sprev")
_ARRAYS = (*_ARRAYS_V2, "eres", "dday", "dz")


class SeasonState:
    """Hourly history of S series. ``hour_of`` (SLOTS,): the absolute hour held in each slot (-1 none);
    ``cur`` (S, bins per hour): the hour being filled; ``g_next``: next grid bin to process."""

    def __init__(self, devices: list[str], per_hour: int):
        s = len(devices)
        self.devices = list(devices)
        self.per_hour = per_hour
        self.mean = np.full((s, SLOTS), np.nan)
        self.mad = np.full((s, SLOTS), np.nan)
        self.cur = np.full((s, per_hour), np.nan)
        self.hour_of = np.full(SLOTS, -1, dtype=np.int64)
        self.resid = np.full((s, SLOTS), np.nan)  # hourly mean - baseline, kept while watched
        self.watch = np.full(s, -1, dtype=np.int64)  # absolute hour of a watched shift onset (-1 none)
        self.sprev = np.zeros(s, dtype=bool)  # the shift test flagged the last bin processed
        self.eres = np.full((s, SLOTS), np.nan)  # the hour's residual, fraction of the level, common mode off
        self.dday = np.full((s, SLOTS), np.nan)  # the day statistic at the close of each hour
        self.dz = np.full(s, np.nan)  # its z at the last close: the verdict on the hour being filled
        self.g_next: int | None = None

    def rows_for(self, devices: list[str]) -> np.ndarray:
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: SeasonState([""] * n, self.per_hour))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, self.per_hour, -1 if self.g_next is None else self.g_next],
                       {**{n: getattr(self, n) for n in _ARRAYS}, "hour_of": self.hour_of})

    @classmethod
    def load(cls, path: Path, per_hour: int) -> "SeasonState | None":
        got = statefile.restore(path, (*_ARRAYS, "hour_of"), [FORMAT, per_hour], lambda d: cls(d, per_hour))
        if got is None:  # a format-2 file keeps its hourly history; the day-level test starts empty
            got = statefile.restore(path, (*_ARRAYS_V2, "hour_of"), [2, per_hour], lambda d: cls(d, per_hour))
        return None if got is None else got[0]


def per_hour(step_ms: int) -> int:
    return max(int(round(HOUR_MS / step_ms)), 1)


def _median_rows(a: np.ndarray, q: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware median (or ``q``-th percentile) along the last axis and the count of values, (S, k) -> (S,), (S,)."""
    n = (~np.isnan(a)).sum(axis=1)
    med = np.full(a.shape[0], np.nan)
    ok = n > 0
    if ok.any():
        med[ok] = np.nanmedian(a[ok], axis=1) if q == 50.0 else np.nanpercentile(a[ok], q, axis=1)
    return med, n


def baseline(st: SeasonState, hour: int, sp: SeasonParams) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and scale (S,) for absolute hour ``hour`` from the days before it; NaN = none."""
    def past(lags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = hour - lags
        slots = want % SLOTS
        have = st.hour_of[slots] == want
        m, d = st.mean[:, slots], st.mad[:, slots]
        return np.where(have[None, :], m, np.nan), np.where(have[None, :], d, np.nan)

    day_m, day_d = past(24 * np.arange(1, DAYS + 1))
    week_m, _ = past(168 * np.arange(1, DAYS // 7 + 1))
    base_d, n_d = _median_rows(day_m)
    base_w, n_w = _median_rows(week_m)
    base = np.where(n_w >= MIN_WEEKS, base_w, np.where(n_d >= sp.min_days, base_d, np.nan))
    dev = np.abs(day_m - base[:, None])
    spread, _ = _median_rows(dev)
    tail, _ = _median_rows(dev, 100.0 * sp.spread_q)
    noise, _ = _median_rows(day_d)
    scale = np.fmax(MAD_TO_SIGMA * np.fmax(spread, noise), tail / sp.spread_z)
    scale = np.where(np.isnan(base), np.nan, np.fmax(scale, max(sp.floor, 1e-12)))
    return base, scale


def _common_mode_removed(z: np.ndarray, min_peers: int) -> np.ndarray:
    """Residuals (S, n) minus, in each bin with at least ``min_peers`` finite values, their median (S, n).

    In field units, not in z: the series' scales differ, one shower's degrees do not."""
    ok = (~np.isnan(z)).sum(axis=0) >= max(min_peers, 1)
    if min_peers <= 0 or not ok.any():
        return z
    out = z.copy()
    out[:, ok] -= np.nanmedian(z[:, ok], axis=0)[None, :]
    return out


def _close_hour(st: SeasonState, hour: int, sp: SeasonParams, base: np.ndarray | None = None,
                scale: np.ndarray | None = None) -> None:
    """Store the finished hour (mean, within-hour noise in MAD units; NaN with fewer than half its bins),
    the residual of watched series against ``base`` (S,; the hour's baseline and ``scale``, computed
    when None), end the watches whose level is back (a fault, not a kept shift) and re-base those
    that have lasted ``sp.rebase_h`` hours (:func:`_rebase`); ``st.dz``: the day-level z (S,) at this
    hour's close (:func:`_day_z`; NaN where not judged)."""
    n = (~np.isnan(st.cur)).sum(axis=1)
    ok = n * 2 >= st.per_hour
    med, _ = _median_rows(st.cur)
    mean = np.where(ok, np.nanmean(np.where(ok[:, None], st.cur, 0.0), axis=1), np.nan)
    # the mean absolute deviation, in MAD units (x sqrt(pi/2) / 1.4826): a median absolute deviation of a
    # quantised reading (TDS in steps of 2 mg/L around a 4 mg/L noise) rounds down to one step
    dev = np.nan_to_num(np.abs(st.cur - med[:, None]), nan=0.0).sum(axis=1) / np.maximum(n, 1)
    mad = dev * (np.sqrt(np.pi / 2) / MAD_TO_SIGMA)
    slot = hour % SLOTS
    st.mean[:, slot] = mean
    st.mad[:, slot] = np.where(ok, mad, np.nan)
    st.hour_of[slot] = hour
    st.cur[:] = np.nan
    if base is None or scale is None:
        base, scale = baseline(st, hour, sp)
    st.dz = _day_z(st, hour, mean - base, base, sp)
    watched = st.watch >= 0
    if watched.any():
        st.resid[:, slot] = np.where(watched, mean - base, np.nan)
        # an hour after the onset's back within rebase_z scales of the old baseline: the level did not
        # stay (a night at the day's level ends at dawn); judged again from the next hour
        with np.errstate(invalid="ignore"):
            back = watched & (hour > st.watch) & (np.abs(mean - base) < sp.rebase_z * scale)
        st.watch[back] = -1
        st.resid[back] = np.nan
        watched &= ~back
        done = watched & (hour - st.watch + 1 >= sp.rebase_h)
        if done.any():
            _rebase(st, done, hour, sp)


def _day_z(st: SeasonState, hour: int, resid: np.ndarray, base: np.ndarray, sp: SeasonParams) -> np.ndarray:
    """Store the closed hour's residual ``resid`` (S,; hourly mean - ``base``, field units) and the day
    statistic at its close; return its z against the past days' (S,; NaN = no verdict).

    The residual is taken as a fraction of the hour's baseline (at least half the series' level,
    the median |hourly mean| of its history): a city-wide weekend dip or a shower's washout is one
    factor at every station, whatever its level, and one median over the series (``min_peers``)
    takes it off. Watched series (a level shift) have none. The day statistic is the median of the
    last ``day_hours`` residuals (a burst or a shower moves a few hours, a day-long fault all of
    them); its past values are those at the closes before this day's window (they do not overlap
    it: past-only, leave-one-out)."""
    slot = hour % SLOTS
    level, _ = _median_rows(np.abs(st.mean))
    with np.errstate(invalid="ignore", divide="ignore"):
        # of the hour's baseline (a factor is one factor at every hour of the cycle), at least half the level
        # (a baseline near 0 would blow up)
        e = resid / np.fmax(np.fmax(np.abs(base), level / 2), max(sp.floor, 1e-12))
    e[st.watch >= 0] = np.nan
    if sp.min_peers > 0 and (~np.isnan(e)).sum() >= sp.min_peers:
        e = e - np.nanmedian(e)
    st.eres[:, slot] = e
    want = hour - np.arange(sp.day_hours)
    got = st.hour_of[want % SLOTS] == want
    d, n = _median_rows(np.where(got[None, :], st.eres[:, want % SLOTS], np.nan))
    d = np.where(n * 2 >= sp.day_hours, d, np.nan)
    st.dday[:, slot] = d
    want = hour - sp.day_hours - np.arange(SLOTS - sp.day_hours)
    got = st.hour_of[want % SLOTS] == want
    past = np.where(got[None, :], st.dday[:, want % SLOTS], np.nan)
    centre, n = _median_rows(past)
    dev = np.abs(past - centre[:, None])
    spread, _ = _median_rows(dev)
    tail, _ = _median_rows(dev, 100.0 * sp.spread_q)
    # past day statistics overlap hour by hour: a few weeks hold a few independent ones, too few for a
    # scale; the past hours' spread says how far a median of 24 independent hours moves (sqrt(pi / 2)
    # sigma / sqrt(24)), the least a day statistic varies
    ep = np.where(got[None, :], st.eres[:, want % SLOTS], np.nan)
    emid, _ = _median_rows(ep)
    hspread, _ = _median_rows(np.abs(ep - emid[:, None]))
    hourly = MAD_TO_SIGMA * hspread * np.sqrt(np.pi / 2 / sp.day_hours)
    scale = np.fmax(np.fmax(np.fmax(MAD_TO_SIGMA * spread, tail / sp.spread_z), hourly), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (d - centre) / scale
        # a day off by less than one resolution step of the sensor is no fault (a day's median of
        # hourly means resolves far finer, and a quantised slow field drifts by that much)
        z = np.where(np.abs(d - centre) * level >= sp.floor, z, 0.0)
        # ... and the hour that closes it is judged only if it is off with the day (half its offset, same
        # side): the day's verdict ends with the hour the fault ends, not a day of residuals later
        z = np.where((e - centre) * np.sign(d - centre) >= 0.5 * np.abs(d - centre), z, 0.0)
    return np.where(n >= 24 * sp.day_min_days, z, np.nan)


def _rebase(st: SeasonState, done: np.ndarray, hour: int, sp: SeasonParams) -> None:
    """End the watches of series ``done`` (S,) bool at the close of ``hour``: where the watched hours'
    residuals hold one offset, move the history before the onset by it (module docstring)."""
    rows = np.flatnonzero(done)
    onset = st.watch[rows]
    span = (st.hour_of[None, :] >= onset[:, None]) & (st.hour_of[None, :] <= hour)  # (k, SLOTS) watched hours
    r = np.where(span, st.resid[rows], np.nan)
    m, n = _median_rows(r)
    spread, _ = _median_rows(np.abs(r - m[:, None]))
    _, scale = baseline(st, hour + 1, sp)
    with np.errstate(invalid="ignore"):
        kept = (n * 2 >= sp.rebase_h) & (np.abs(m) >= sp.rebase_z * scale[rows]) & (spread <= sp.steady * np.abs(m))
    before = (st.hour_of[None, :] >= 0) & (st.hour_of[None, :] < onset[:, None])
    st.mean[rows] = np.where(before & kept[:, None], st.mean[rows] + np.nan_to_num(m)[:, None], st.mean[rows])
    # the noise restarts from the new level's too (a load, a pollutant: noisier at a higher level); a
    # quieter new level keeps the old noise (the wider scale)
    noise_new, _ = _median_rows(np.where(span, st.mad[rows], np.nan))
    noise_old, _ = _median_rows(np.where(before, st.mad[rows], np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(kept & (noise_new > noise_old), noise_new / noise_old, 1.0)
    st.mad[rows] = np.where(before, st.mad[rows] * np.nan_to_num(ratio, nan=1.0, posinf=1.0)[:, None], st.mad[rows])
    st.watch[rows] = -1
    st.resid[rows] = np.nan


def update(st: SeasonState, rows: np.ndarray, x: np.ndarray, g0: int, sp: SeasonParams,
           shift_flag: np.ndarray | None = None) -> QcResult:
    """Score and learn bins ``g0 .. g0 + n - 1`` of ``x`` (len(rows), n); bins before ``st.g_next`` were
    processed by an earlier pass (2 here). Flags 1/3/4, 2 without a baseline or while a confirmed
    level shift is watched, 9 missing; score in robust sigmas. ``shift_flag`` (len(rows), n): the
    level-shift test's flags for the same bins (None: no re-basing)."""
    nrow, n = x.shape
    flag = np.full((nrow, n), NOT_EVALUATED, dtype=np.int8)
    score = np.full((nrow, n), np.nan)
    ph = st.per_hour
    if st.g_next is None:
        st.g_next = g0
    first = max(st.g_next - g0, 0)
    g = g0 + first
    last_hour = (st.g_next * sp.step_ms) // HOUR_MS
    if g > st.g_next and (g * sp.step_ms) // HOUR_MS != last_hour and (st.g_next * sp.step_ms) % HOUR_MS:
        _close_hour(st, last_hour, sp)  # the hour an outage cut short: kept if half of it was there
    while g < g0 + n:
        hour, pos = divmod(g * sp.step_ms, HOUR_MS)
        i0 = pos // sp.step_ms
        seg = min(ph - i0, g0 + n - g)  # bins of this hour in this pass
        cols = slice(g - g0, g - g0 + seg)
        base, scale = baseline(st, hour, sp)
        v = x[:, cols]
        full = np.full((len(st.devices), seg), np.nan)
        full[rows] = v
        st.cur[:, i0 : i0 + seg] = full
        z = np.abs(_common_mode_removed(v - base[rows, None], sp.min_peers)) / scale[rows, None]
        warm = ~np.isnan(base[rows])[:, None] & np.ones(seg, dtype=bool)
        present = ~np.isnan(v)
        if shift_flag is not None:  # a confirmed shift onset (the shift test's flag starts) opens a watch
            on = np.isin(shift_flag[:, cols], (SUSPECT, FAIL))
            onset = on & np.concatenate([~st.sprev[rows, None], ~on[:, :-1]], axis=1)
            st.sprev[rows] = on[:, -1]
            # from the onset on (the bins of its hour before it are judged)
            watched = np.logical_or.accumulate(onset, axis=1) | (st.watch[rows] >= 0)[:, None]
            st.watch[rows[onset.any(axis=1) & (st.watch[rows] < 0)]] = hour
            warm &= ~watched
        # the day up to the last hour's close off its past days: this hour's bins (a verdict that waits for
        # the hour's close would miss the bins an earlier pass wrote)
        dz = np.abs(st.dz[rows, None])
        with np.errstate(invalid="ignore"):
            z = np.where(dz > sp.day_suspect_z, np.fmax(z, dz), z)
            fl = np.where(z > sp.fail_z, FAIL, np.where(z > sp.suspect_z, SUSPECT, GOOD))
            fl = np.maximum(fl, np.where(dz > sp.day_fail_z, FAIL, np.where(dz > sp.day_suspect_z, SUSPECT, GOOD)))
        flag[:, cols] = np.where(present, np.where(warm, fl, NOT_EVALUATED), MISSING)
        score[:, cols] = np.where(present & warm, z, np.nan)
        g += seg
        if i0 + seg == ph:
            _close_hour(st, hour, sp, base, scale)
    st.g_next = max(st.g_next, g0 + n)
    return QcResult(flag, score)


class SeasonStore(statefile.Store[SeasonState]):
    """Seasonal histories of one service, one file per (kind, field) under ``root``; ``get(kind, field,
    step_ms)`` (the history is kept per hour-of-week at ``per_hour(step_ms)`` samples an hour)."""

    def __init__(self, root: Path):
        super().__init__(root, lambda path, step_ms: SeasonState.load(path, per_hour(step_ms)),
                         lambda step_ms: SeasonState([], per_hour(step_ms)), per_hour)


def run_record(x: np.ndarray, g0: int, sp: SeasonParams, shift_flag: np.ndarray | None = None) -> QcResult:
    """The seasonal test over a whole record (S, T) from an empty history (``shift_flag`` (S, T): the
    level-shift test's flags, for re-basing)."""
    st = SeasonState([], per_hour(sp.step_ms))
    return update(st, st.rows_for([str(i) for i in range(x.shape[0])]), x, g0, sp, shift_flag)


__all__ = ["DAYS", "SeasonParams", "params_for", "SeasonState", "SeasonStore", "baseline", "run_record", "update"]
