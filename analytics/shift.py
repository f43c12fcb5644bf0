"""Level-shift test: the difference of the medians of two adjacent windows, with state between passes.

Hampel and rate of change judge one reading against its neighbourhood; a sustained step (a
re-mounted sensor, a new calibration, a board's ground fault) is one reading like the others
after the first. Here every ``stride`` samples each series compares the median of its last
``window`` samples ("after") with the median of the ``window`` samples before them ("before"):

    D = median(after) - median(before)      z = |D| / scale

Medians ignore a burst or a spike shorter than half a window. ``scale`` is the series' own
typical |D| (1.2533 x the median over the last ``k_blocks`` blocks of each block's mean |D|:
E|D| = sigma sqrt(2/pi) for a normal D), so the daily cycle or a slow wander that the series
shows every hour is not a shift; never below ``floor`` (the field's resolution: quantised steps
of a quiet series). The test watches the same residual as the charts (the series minus the
neighbours' median, :func:`analytics.chartstate.residual`), so weather shared by every station
cancels out.

Episodes, not flags on every window: a crossing of ``suspect_k`` opens an episode (flagged for
``window`` samples from the onset, one alarm) and remembers the level before it. A later crossing
the other way that brings the level back within ``back`` of that remembered level is the end of
the same episode (the fault removed): no new alarm. After either, ``hold`` samples (2 windows,
while the windows still straddle the step) see no new onset. An episode not ended within
``memory`` samples is forgotten: the new level is the normal one from then on.

Every sample is processed once, in grid order, whichever pass it arrives in (like
:mod:`analytics.chartstate`): passes resumed from the saved state give the flags of one long run.
The window medians are taken with a sort over (S, window) per evaluated column (every ``stride``
samples; 5 min at the 1-min grid); the episode logic is element-wise over the series.

Arrays: residuals (S, n) in field units; state vectors (S,); ring (S, 2 window); rings (S, k_blocks).
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
    noise_c: float = 0.5  # the scale is at least this many of the windows' own noise sigmas (D of white noise: 0.23)
    back: float = 0.5  # a return within this fraction of the onset's |D| of the level before it ends the episode
    memory: int = 1 << 30  # samples an episode stays open for a return

    @property
    def hold(self) -> int:
        return 2 * self.window

    @classmethod
    def from_detectors(cls, p) -> "ShiftParams":  # noqa: ANN001 - analytics.detectors.QcParams (no import cycle)
        """1-hour windows (at least 8 samples: a 15-min grid gets 2 h), evaluated every ``window / 12`` samples, on ``p``'s blocks;
        an episode stays open for a return for 2 days."""
        w = max(int(round(3600.0 / p.step_s)), 8)
        return cls(window=w, block=p.block, stride=max(w // 12, 1), k_blocks=p.baseline_blocks,
                   floor=MIN_SHIFT_STEPS * p.resolution / cls.suspect_k,
                   memory=max(int(round(2 * 86400.0 / p.step_s)), 1))


_ARRAYS = ("ring", "d_sum", "d_n", "dblk", "scale", "base", "size", "age", "hold", "left", "lflag", "lscore")


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
        self.d_sum, self.d_n, self.size, self.age, self.hold, self.left, self.lflag, self.lscore = (
            np.zeros(s) for _ in range(8))
        self.scale, self.base = np.full(s, np.nan), np.full(s, np.nan)

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` in the state, (len(devices),); unknown devices get fresh rows."""
        sp = ShiftParams(window=self.window, block=1, k_blocks=self.k_blocks)
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: ShiftState([""] * n, sp))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, self.window, self.k_blocks,
                                            -1 if self.g_next is None else self.g_next],
                       {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path, sp: ShiftParams) -> "ShiftState | None":
        """The saved state, or None when there is none or it was saved with another layout or window."""
        got = statefile.restore(path, _ARRAYS, [FORMAT, sp.window, sp.k_blocks], lambda d: cls(d, sp))
        return None if got is None else got[0]


def _median_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median of each row ignoring NaN, count of non-NaN) for ``a`` (S, n); NaN median for an empty row."""
    srt = np.sort(a, axis=1)  # NaN sorts last
    n = (~np.isnan(a)).sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(n // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan), n


def _close_block(st: ShiftState, sp: ShiftParams) -> None:
    """Push the finished block's mean |D| into the ring and refresh the scale."""
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
    evaluated columns of a warm series (NaN elsewhere).
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
    for j in range(max(first, 0), n):
        g = g0 + j
        if g % sp.block == 0 and g > 0:
            _close_block(st, sp)
        full[:] = np.nan
        full[rows] = r[:, j]
        st.ring[:, g % w2] = full
        present = ~np.isnan(full)
        st.age += 1
        st.hold = np.maximum(st.hold - 1, 0)
        st.left = np.maximum(st.left - 1, 0)
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
                # (checked before any crossing: the way back is a step too, and no new fault)
                back = ok & (st.hold == 0) & ~np.isnan(st.base) & (np.abs(m_a - st.base) <= sp.back * np.abs(st.size))
                cross = warm & (z > sp.suspect_k) & (st.hold == 0) & ~back
            onset = cross
            # an onset inside an open episode (the faulty level moves on) keeps the level before the first
            reopen = onset & ~np.isnan(st.base)
            st.base = np.where(back, np.nan, np.where(onset & ~reopen, m_b, st.base))
            st.size = np.where(onset, m_a - st.base, st.size)
            st.age = np.where(onset, 0.0, st.age)
            st.hold = np.where(cross | back, float(sp.hold), st.hold)
            st.left = np.where(onset, float(sp.window), st.left)
            st.lflag = np.where(onset, np.where(z > sp.fail_k, FAIL, SUSPECT), st.lflag)
            st.lscore = np.where(onset, z, st.lscore)
            score = z
        fl = np.where(st.left > 0, st.lflag, GOOD)
        fl = np.where(np.isnan(st.scale), NOT_EVALUATED, fl)
        fr, pr = fl[rows], present[rows]
        out.flag[:, j] = np.where(pr, fr, MISSING).astype(np.int8)
        out.score[:, j] = np.where(pr, score[rows], np.nan)
        st.g_next = g + 1
    return out


class ShiftStore:
    """Level-shift states of one service, one file per (kind, field) under ``root`` (``state_dir/analytics/shift``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[tuple[str, str], ShiftState] = {}

    def path(self, kind: str, field: str) -> Path:
        return self.root / f"{kind}.{field}.npz"

    def get(self, kind: str, field: str, sp: ShiftParams) -> ShiftState:
        st = self._cache.get((kind, field))
        if st is None or st.window != sp.window or st.k_blocks != sp.k_blocks:
            st = ShiftState.load(self.path(kind, field), sp) or ShiftState([], sp)
            self._cache[(kind, field)] = st
        return st

    def save(self, kind: str, field: str) -> None:
        st = self._cache.get((kind, field))
        if st is not None:
            st.save(self.path(kind, field))


def run_record(r: np.ndarray, g0: int, sp: ShiftParams, devices: list[str] | None = None) -> QcResult:
    """The test over a whole record ``r`` (S, T) from a fresh state (what a service started at the
    record's first bin writes, pass after pass)."""
    devs = devices if devices is not None else [str(i) for i in range(r.shape[0])]
    st = ShiftState([], sp)
    return update(st, st.rows_for(devs), r, g0, sp)


__all__ = ["ShiftParams", "ShiftState", "ShiftStore", "run_record", "update"]
