"""Level-shift test: the difference of the medians of two adjacent windows, with state between passes.

Hampel and rate of change judge one reading against its neighbourhood; a sustained step (a
re-mounted sensor, a new calibration, a board's ground fault) is one reading like the others
after the first. Here every ``stride`` samples each series compares the median of its last
``window`` samples ("after") with the median of the ``window`` samples before them ("before"):

    D = median(after) - median(before)      z = |D| / scale

Medians ignore a burst or a spike shorter than half a window. ``scale`` is the series' own
typical |D| (1.2533 x the median over the last ``k_blocks`` blocks of each block's mean |D|:
E|D| = sigma sqrt(2/pi) for a normal D), so the daily cycle or a slow wander that the series
shows every hour is not a shift; at least ``noise_c`` of the windows' own noise now (median |step|
as a sigma: a pollutant noisier by day than in the night blocks behind it); never below ``floor``
(so no shift under :data:`MIN_SHIFT_STEPS` resolution steps is flagged: quantised steps of a quiet
series, and a zero-inflated one whose |D| is nearly always 0 still gets a test). The test watches the same residual as the charts (the series minus the
neighbours' median, :func:`analytics.chartstate.residual`), so weather shared by every station
cancels out.

Episodes, not flags on every window. A crossing of ``suspect_k`` is judged ``confirm`` samples
(half a window) later, once the after-window holds only the new level (a median half way through
a step is anywhere between the two levels): if the level has stayed away from where it stood before
the crossing (by at least ``back`` of the crossing's D), an episode opens, flagged for ``window``
samples (one alarm), and the level before it is remembered. The way back is a step too, and no new
fault:
- a level back within ``back`` of the remembered one (checked at every evaluation) ends the open
  episode, without an alarm;
- a confirmed step to a level the series held in one of its last ``level_blocks`` blocks (older
  than the two windows, outside an open episode; within ``known`` of the step) is no onset either: the end of a fault whose
  onset was not seen (a slow drift, an onset during warm-up). The price: a sensor that jumps to a
  level it held in the last two days relative to its neighbours is not flagged.
After an onset or a return, ``hold`` samples (2 windows, while the windows still straddle the step)
see no new crossing. An episode not ended within ``memory`` samples is forgotten (the new level is
the normal one from then on).

Every sample is processed once, in grid order, whichever pass it arrives in (like
:mod:`analytics.chartstate`): passes resumed from the saved state give the flags of one long run.
The window medians are taken with a sort over (S, window) per evaluated column (every ``stride``
samples; 5 min at the 1-min grid); the episode logic is element-wise over the series.

Arrays: residuals (S, n) in field units; state vectors (S,); ring (S, 2 window); rings (S, k_blocks)
and (S, level_blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import statefile
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult

STEP_TO_SIGMA = 1.4826 / 2**0.5  # median |x_t - x_t-1| of white noise x this = its standard deviation
ABS_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean |D| of a zero-mean normal D x this = its standard deviation
MIN_SHIFT_STEPS = 4.0  # a shift of fewer resolution steps is never flagged (a quiet series' quantised steps)
FORMAT = 1  # bump when the saved layout changes: an older file is then ignored (the test warms up again)


@dataclass(frozen=True)
class ShiftParams:
    """Parameters of the level-shift test (lengths in grid samples, thresholds in scales of |D|)."""

    window: int  # samples per window (before / after)
    block: int  # samples per block of the |D| scale
    stride: int = 1  # evaluate every this many samples
    k_blocks: int = 6  # blocks of past |D| in the scale
    min_blocks: int = 1  # blocks of |D| needed before anything is judged (warm-up)
    floor: float = 0.0  # smallest scale, field units (the sensor resolution)
    suspect_k: float = 20.0
    fail_k: float = 40.0
    noise_c: float = 0.25  # the scale is at least this many of the windows' own noise sigmas (D of white noise: 0.23)
    back: float = 0.5  # a return within this fraction of the onset's |D| of the level before it ends the episode
    memory: int = 1 << 30  # samples an episode stays open for a return
    level_blocks: int = 48  # blocks of past levels a return may go back to
    known: float = 0.25  # ... within this fraction of the step's D

    @property
    def hold(self) -> int:
        return 2 * self.window

    @property
    def confirm(self) -> int:
        """Samples from a crossing to its verdict: a multiple of ``stride`` (verdicts fall on evaluated columns)."""
        return max(self.window // 2 // self.stride, 1) * self.stride

    @classmethod
    def from_detectors(cls, p) -> "ShiftParams":  # noqa: ANN001 - analytics.detectors.QcParams (no import cycle)
        """1-hour windows (at least 8 samples: a 15-min grid gets 2 h), evaluated every ``window / 12`` samples, on ``p``'s blocks;
        an episode stays open for a return for 2 days."""
        w = max(int(round(3600.0 / p.step_s)), 8)
        return cls(window=w, block=p.block, stride=max(w // 12, 1), k_blocks=p.baseline_blocks,
                   floor=MIN_SHIFT_STEPS * p.resolution / cls.suspect_k,
                   memory=max(int(round(2 * 86400.0 / p.step_s)), 1))


_ARRAYS = ("ring", "d_sum", "d_n", "dblk", "scale", "base", "size", "age", "hold", "left", "lflag", "lscore", "pend",
           "pbase", "pd", "pz", "lvl")


class ShiftState:
    """Level-shift state of S series of one field. ``g_next``: grid index of the next column to process
    (None before the first). ``ring``: the last 2 windows of residuals at ``g % (2 window)`` (NaN =
    none); ``dblk``: the last blocks' mean |D| (NaN = no D in that block); ``base``: the level before an
    open episode (NaN = none), ``size`` its onset's D; ``age`` samples since that onset; ``hold``
    samples left without onsets; ``left`` samples still flagged (``lflag``, ``lscore``)."""

    def __init__(self, devices: list[str], sp: ShiftParams):
        s = len(devices)
        self.devices = list(devices)
        self.window, self.k_blocks = sp.window, sp.k_blocks
        self.g_next: int | None = None
        self.ring = np.full((s, 2 * sp.window), np.nan)
        self.dblk = np.full((s, sp.k_blocks), np.nan)
        self.lvl = np.full((s, sp.level_blocks), np.nan)  # the last blocks' median levels
        self.d_sum, self.d_n, self.size, self.age, self.hold, self.left, self.lflag, self.lscore = (
            np.zeros(s) for _ in range(8))
        self.scale, self.base = np.full(s, np.nan), np.full(s, np.nan)
        # a crossing waiting for its verdict: samples left (-1 = none), the level before it, its D and z
        self.pend = np.full(s, -1.0)
        self.pbase, self.pd, self.pz = (np.zeros(s) for _ in range(3))

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` in the state, (len(devices),); unknown devices get fresh rows."""
        sp = ShiftParams(window=self.window, block=1, k_blocks=self.k_blocks, level_blocks=self.lvl.shape[1])
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: ShiftState([""] * n, sp))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, self.window, self.k_blocks, self.lvl.shape[1],
                                            -1 if self.g_next is None else self.g_next],
                       {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path, sp: ShiftParams) -> "ShiftState | None":
        """The saved state, or None when there is none or it was saved with another layout or window."""
        got = statefile.restore(path, _ARRAYS, [FORMAT, sp.window, sp.k_blocks, sp.level_blocks], lambda d: cls(d, sp))
        return None if got is None else got[0]


def _median_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median of each row ignoring NaN, count of non-NaN) for ``a`` (S, n); NaN median for an empty row."""
    srt = np.sort(a, axis=1)  # NaN sorts last
    n = (~np.isnan(a)).sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(n // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan), n


def _close_block(st: ShiftState, sp: ShiftParams, g: int) -> None:
    """Push the finished block's mean |D| and median level into the rings and refresh the scale
    (``g``: grid index of the first column after the block)."""
    w2 = st.ring.shape[1]
    level, n = _median_rows(st.ring[:, (g - 1 - np.arange(min(sp.block, w2))) % w2])
    st.lvl[:, :-1] = st.lvl[:, 1:]
    # a level held during an open episode is a fault's, not one the series may return to
    st.lvl[:, -1] = np.where((2 * n >= min(sp.block, w2)) & np.isnan(st.base), level, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(st.d_n > 0, st.d_sum / np.maximum(st.d_n, 1), np.nan)
    st.dblk[:, :-1] = st.dblk[:, 1:]
    st.dblk[:, -1] = mean
    st.d_sum[:] = 0.0
    st.d_n[:] = 0.0
    usable = (~np.isnan(st.dblk)).sum(axis=1)
    med, _ = _median_rows(st.dblk)
    scale = np.maximum(ABS_TO_SIGMA * med, max(sp.floor, 1e-12))
    st.scale = np.where(usable >= sp.min_blocks, scale, np.nan)


def update(st: ShiftState, rows: np.ndarray, r: np.ndarray, g0: int, sp: ShiftParams) -> QcResult:
    """Advance the test over columns ``g0 .. g0 + n - 1`` of ``r`` (len(rows), n), residuals in field units.

    Columns before ``st.g_next`` were processed by an earlier pass and are skipped (flag 2 here); a
    gap between ``st.g_next`` and ``g0`` counts as missing readings (and restarts the state when
    longer than the windows and the scale's blocks). Returns (len(rows), n): flag 1/3/4 (3/4 for the
    ``window`` samples from an onset), 2 before the scale is known, 9 missing; score |D| / scale at
    evaluated columns of a warm series, the onset's on flagged samples (NaN elsewhere).
    """
    nrow, n = r.shape
    s_all = len(st.devices)
    out = QcResult(np.full((nrow, n), NOT_EVALUATED, dtype=np.int8), np.full((nrow, n), np.nan))
    w2 = 2 * sp.window
    if st.g_next is None or g0 - st.g_next > w2 + (sp.k_blocks + 1) * sp.block:
        fresh = ShiftState(st.devices, sp)
        for name in _ARRAYS:
            setattr(st, name, getattr(fresh, name))
        st.g_next = g0
    elif g0 > st.g_next:  # missing columns before this window: processed as no readings
        update(st, rows[:0], np.empty((0, g0 - st.g_next)), st.g_next, sp)
    first = st.g_next - g0
    full = np.full(s_all, np.nan)
    after_i = np.arange(sp.window)
    back_i = np.arange(w2)[::-1]  # ring positions in time order: g - 2 window + 1 .. g
    excl = -(-w2 // sp.block) + 1  # blocks that may overlap the two windows
    for j in range(max(first, 0), n):
        g = g0 + j
        if g % sp.block == 0 and g > 0:
            _close_block(st, sp, g)
        full[:] = np.nan
        full[rows] = r[:, j]
        st.ring[:, g % w2] = full
        present = ~np.isnan(full)
        st.age += 1
        st.hold = np.maximum(st.hold - 1, 0)
        st.left = np.maximum(st.left - 1, 0)
        st.pend = np.where(st.pend > 0, st.pend - 1, st.pend)
        st.base = np.where(st.age > sp.memory, np.nan, st.base)  # an episode that never ended: the new normal
        score = np.full(s_all, np.nan)
        if (g + 1) % sp.stride == 0:
            idx_after = (g - after_i) % w2
            idx_before = (g - sp.window - after_i) % w2
            m_a, n_a = _median_rows(st.ring[:, idx_after])
            m_b, n_b = _median_rows(st.ring[:, idx_before])
            d = m_a - m_b
            ok = (2 * n_a >= sp.window) & (2 * n_b >= sp.window)
            # the windows' own noise (median |step| as a sigma: one step does not inflate it, a window
            # straddling the shift would): a series noisier now than in its past blocks (a pollutant's
            # daytime, proportional to its level) needs a larger shift
            step, _ = _median_rows(np.abs(np.diff(st.ring[:, (g - back_i) % w2], axis=1)))
            now = np.fmax(st.scale, sp.noise_c * STEP_TO_SIGMA * step)
            st.d_sum += np.where(ok, np.abs(d), 0.0)
            st.d_n += ok
            warm = ok & ~np.isnan(st.scale)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(warm, np.abs(d) / now, np.nan)
                # the level is back where it stood before an open episode: the same episode ends
                back = ok & (st.hold == 0) & ~np.isnan(st.base) & (np.abs(m_a - st.base) <= sp.back * np.abs(st.size))
                # a crossing is judged `confirm` samples later, once the after-window holds only the new
                # level (a median half way through a step is anywhere between the two levels)
                cross = warm & (z > sp.suspect_k) & (st.hold == 0) & (st.pend < 0) & ~back
                due = ok & (st.pend == 0) & ~back
                stays = due & (np.abs(m_a - st.pbase) >= sp.back * np.abs(st.pd))  # not a passing excursion
                # back to a level the series held within the last days (older than the two windows): the
                # end of a fault whose onset was not seen (a slow drift, an onset during warm-up)
                known = (np.abs(st.lvl[:, :-excl] - m_a[:, None]) <= sp.known * np.abs(st.pd)[:, None]).any(axis=1)
            onset = stays & ~known
            st.pend = np.where(cross, float(sp.confirm), np.where(due | back, -1.0, st.pend))
            st.pbase = np.where(cross, m_b, st.pbase)
            st.pd = np.where(cross, d, st.pd)
            st.pz = np.where(cross, z, st.pz)
            # an onset inside an open episode (the faulty level moves on) keeps the level before the first
            reopen = onset & ~np.isnan(st.base)
            st.base = np.where(back, np.nan, np.where(onset & ~reopen, st.pbase, st.base))
            st.size = np.where(onset, m_a - st.base, st.size)
            st.age = np.where(onset, 0.0, st.age)
            st.hold = np.where(onset | back, float(sp.hold), st.hold)
            st.left = np.where(onset, float(sp.window), st.left)
            st.lflag = np.where(onset, np.where(st.pz > sp.fail_k, FAIL, SUSPECT), st.lflag)
            st.lscore = np.where(onset, st.pz, st.lscore)
            score = z
        fl = np.where(st.left > 0, st.lflag, GOOD)
        fl = np.where(np.isnan(st.scale), NOT_EVALUATED, fl)
        fr, pr = fl[rows], present[rows]
        out.flag[:, j] = np.where(pr, fr, MISSING).astype(np.int8)
        # a flagged sample carries its episode's onset z (a verdict has a score); elsewhere z where evaluated
        out.score[:, j] = np.where(pr, np.where(st.left > 0, st.lscore, score)[rows], np.nan)
        st.g_next = g + 1
    return out


class ShiftStore(statefile.Store[ShiftState]):
    """Level-shift states of one service, one file per (kind, field) under ``root`` (``state_dir/analytics/shift``)."""

    def __init__(self, root: Path):
        super().__init__(root, ShiftState.load, lambda sp: ShiftState([], sp), lambda sp: (sp.window, sp.k_blocks))


def run_record(r: np.ndarray, g0: int, sp: ShiftParams, devices: list[str] | None = None) -> QcResult:
    """The test over a whole record ``r`` (S, T) from a fresh state (what a service started at the
    record's first bin writes, pass after pass)."""
    devs = devices if devices is not None else [str(i) for i in range(r.shape[0])]
    st = ShiftState([], sp)
    return update(st, st.rows_for(devs), r, g0, sp)


__all__ = ["ShiftParams", "ShiftState", "ShiftStore", "run_record", "update"]
