"""Stateful EWMA / CUSUM control charts whose state survives between passes and restarts.

The windowed charts in :mod:`analytics.stats` re-derive everything from each window: the
EWMA starts from 0 at the window's start and the CUSUM restarts at fixed grid times, so a
shift older than the window is forgotten and a confirmed shift keeps alarming until the
trailing baseline has absorbed it. Here every series carries its chart state from pass to
pass (:class:`ChartState`, saved under ``settings.state_dir/analytics/charts``):

- a running robust baseline: the medians and MADs of the last ``k_blocks`` complete blocks of
  ``block`` samples (blocks aligned to absolute grid index // block, as in
  :mod:`analytics.baseline`); level = median of the block medians, scale = 1.4826 x the larger
  of the median block MAD and the MAD of the block medians, never below ``floor``;
- the EWMA y_t = alpha z_t + (1 - alpha) y_{t-1} of z = (residual - level) / scale, scored in
  units of its own spread (1.4826 x the median of the last blocks' mean |y|, at least the
  white-noise value sqrt(alpha / (2 - alpha)));
- the two one-sided CUSUMs C+_t = max(0, C+_{t-1} + z_t - k), C-_t = max(0, C-_{t-1} - z_t - k).
  A side that crosses ``h`` signals and is **reset to 0** (the standard fast-initial-response-free
  restart after an out-of-control signal). ``confirm`` consecutive signals of the same side
  confirm a shift: the baseline is **re-based** on the new level, estimated as
  level + scale * (k + C / N) with N the samples since that side last stood at 0 (the CUSUM's
  estimate of the shifted mean: D. C. Montgomery, *Introduction to Statistical Quality
  Control*, 6th ed., 2009, section 9.1.3, eq. 9.6), so a confirmed shift stops alarming. A side
  that stays above 0 for ``window`` samples (the windowed CUSUM's memory, 2 h) without signalling
  restarts from 0: a sum creeping up that slowly is the residual's wander, not a shift.

Every sample is processed exactly once, in grid order, whichever pass it arrives in: a pass
that resumes from saved state gives the flags of one long run (tests/analytics/test_chartstate.py).
A reading that arrives after its bin was processed is ignored by the charts (the other tests
still see it on the next pass). The update is a loop over the new grid columns (a recursion),
each step vectorised over every series; a live pass has one or a few new columns.

Arrays: values (S, n) in field units (the residual against the neighbours' median, as the
windowed charts use); state vectors (S,); block rings (S, k_blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import statefile
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult, nanmedian_rows, neighbour_reference

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x 1.4826 = its standard deviation
FORMAT = 1  # bump when the saved layout changes: an older file is then ignored (charts warm up again)


@dataclass(frozen=True)
class ChartParams:
    """Parameters of the stateful charts (windows in grid samples, thresholds in robust sigmas)."""

    block: int  # samples per baseline block
    k_blocks: int = 6  # complete blocks in the running baseline
    min_blocks: int = 2  # usable blocks needed before anything is evaluated (warm-up)
    floor: float = 0.0  # smallest scale, field units (the sensor resolution)
    alpha: float = 0.1
    ewma_suspect_l: float = 30.0
    ewma_fail_l: float = 60.0
    cusum_k: float = 5.0
    cusum_h: float = 200.0
    confirm: int = 2  # consecutive same-side CUSUM signals that confirm a shift (then re-base)
    window: int = 1 << 30  # a CUSUM side that has been above 0 this many samples without signalling restarts

    @classmethod
    def from_detectors(cls, p, sp) -> "ChartParams":  # noqa: ANN001 - QcParams, StatParams (no import cycle)
        """The windowed detectors' thresholds (:class:`analytics.detectors.StatParams`) on ``p``'s blocks."""
        from analytics.detectors import cusum_window_n

        return cls(block=p.block, k_blocks=p.baseline_blocks, min_blocks=p.min_blocks, floor=p.resolution,
                   alpha=sp.ewma_alpha, ewma_suspect_l=sp.ewma_suspect_l, ewma_fail_l=sp.ewma_fail_l,
                   cusum_k=sp.cusum_k, cusum_h=sp.cusum_h, window=cusum_window_n(sp, p.step_s))


_ARRAYS = ("ewma", "cp", "cm", "np_", "nm", "sig", "e_sum", "e_n", "level", "scale", "spread", "med", "mad", "esp",
           "cur")


class ChartState:
    """Chart state of S series of one field. ``g_next``: grid index of the next column to process
    (None before the first). ``cur``: (S, block) values of the block being filled (NaN = none yet);
    ``cur_whole``: whether that block was seen from its first sample (a block cut by the start of
    the record is not used, like :meth:`analytics.baseline.Blocks.usable`)."""

    def __init__(self, devices: list[str], cp: ChartParams):
        s, k = len(devices), cp.k_blocks
        self.devices = list(devices)
        self.block = cp.block
        self.k_blocks = k
        self.g_next: int | None = None
        self.cur_whole = False
        self.opened = False  # a column of the current block was processed
        self.cur = np.full((s, cp.block), np.nan)
        # block rings (S, k): medians, MADs, mean |EWMA| of the last complete blocks (NaN = unusable)
        self.med, self.mad, self.esp = (np.full((s, k), np.nan) for _ in range(3))
        # EWMA, CUSUM sides, samples since each side left 0, consecutive signals (+ up / - down),
        # this block's sum / count of |EWMA|; all (S,)
        self.ewma, self.cp, self.cm, self.np_, self.nm, self.sig, self.e_sum, self.e_n = (
            np.zeros(s) for _ in range(8))
        # from the rings (refreshed when a block closes or a shift is confirmed): NaN = no baseline yet
        self.level, self.scale, self.spread = (np.full(s, np.nan) for _ in range(3))

    # --------------------------------------------------------------- series bookkeeping

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` in the state, (len(devices),); unknown devices get fresh rows."""
        cp = ChartParams(block=self.block, k_blocks=self.k_blocks)
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: ChartState([""] * n, cp))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, self.block, self.k_blocks,
                                            -1 if self.g_next is None else self.g_next, int(self.cur_whole),
                                            int(self.opened)], {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path, cp: ChartParams) -> "ChartState | None":
        """The saved state, or None when there is none or it was saved with another layout or block."""
        got = statefile.restore(path, _ARRAYS, [FORMAT, cp.block, cp.k_blocks], lambda d: cls(d, cp))
        if got is None:
            return None
        st, rest = got
        st.cur_whole, st.opened = bool(rest[0]), bool(rest[1])
        return st


def _refresh(st: ChartState, cp: ChartParams, rows: np.ndarray | slice = slice(None)) -> None:
    """Level, scale and EWMA spread of ``rows`` from their block rings."""
    med, mad, esp = st.med[rows], st.mad[rows], st.esp[rows]
    usable = (~np.isnan(med)).sum(axis=1)
    lvl = nanmedian_rows(med)
    moves = nanmedian_rows(np.abs(med - lvl[:, None]))
    scale = np.fmax(MAD_TO_SIGMA * nanmedian_rows(mad), MAD_TO_SIGMA * moves)
    scale = np.maximum(scale, max(cp.floor, 1e-12))
    warm = usable >= cp.min_blocks
    st.level[rows] = np.where(warm, lvl, np.nan)
    st.scale[rows] = np.where(warm, scale, np.nan)
    white = np.sqrt(cp.alpha / (2.0 - cp.alpha))
    sp = MAD_TO_SIGMA * nanmedian_rows(esp)
    st.spread[rows] = np.where(np.isnan(sp) | (sp < white), white, sp)


def _close_block(st: ChartState, cp: ChartParams) -> None:
    """Push the finished block's median / MAD / mean |EWMA| into the rings (NaN when unusable)."""
    n = (~np.isnan(st.cur)).sum(axis=1)
    ok = (n * 2 >= cp.block) & st.cur_whole
    med = nanmedian_rows(st.cur)
    mad = nanmedian_rows(np.abs(st.cur - med[:, None]))
    with np.errstate(invalid="ignore", divide="ignore"):
        esp = np.where(st.e_n > 0, st.e_sum / np.maximum(st.e_n, 1), np.nan)
    for ring, v in ((st.med, med), (st.mad, mad), (st.esp, esp)):
        ring[:, :-1] = ring[:, 1:]
        ring[:, -1] = np.where(ok, v, np.nan)
    st.cur[:] = np.nan
    st.e_sum[:] = 0.0
    st.e_n[:] = 0.0
    st.cur_whole = True
    _refresh(st, cp)


def _start(st: ChartState, g: int, cp: ChartParams) -> None:
    """(Re)start the timeline at grid index ``g``: nothing older is known."""
    st.cur[:] = np.nan
    st.cur_whole = g % cp.block == 0
    st.opened = False
    st.g_next = g


def update(st: ChartState, rows: np.ndarray, r: np.ndarray, g0: int, cp: ChartParams) -> dict[str, QcResult]:
    """Advance the charts over columns ``g0 .. g0 + n - 1`` of ``r`` (len(rows), n), residuals in field units.

    Columns before ``st.g_next`` were processed by an earlier pass and are skipped (their
    verdicts are 2 here); a gap between ``st.g_next`` and ``g0`` counts as missing readings
    (and restarts the timeline when longer than the baseline). Returns ``ewma`` and ``cusum``
    results (len(rows), n): flag 1/3/4, 2 without a baseline, 9 missing; score in the chart's
    units (EWMA: own spreads; CUSUM: robust sigmas, the side that is larger).
    """
    nrow, n = r.shape
    s_all = len(st.devices)
    out = {k: QcResult(np.full((nrow, n), NOT_EVALUATED, dtype=np.int8), np.full((nrow, n), np.nan))
           for k in ("ewma", "cusum")}
    if st.g_next is None:
        _start(st, g0, cp)
    assert st.g_next is not None
    gap = g0 - st.g_next
    if gap > (cp.k_blocks + 1) * cp.block:
        st.med[:] = np.nan
        st.mad[:] = np.nan
        st.esp[:] = np.nan
        _refresh(st, cp)
        _start(st, g0, cp)
    elif gap > 0:  # missing columns before this window: processed as no readings
        update(st, rows[:0], np.empty((0, gap)), st.g_next, cp)
    first = st.g_next - g0  # first column of r not processed yet
    full = np.full(s_all, np.nan)
    h, kk = cp.cusum_h, cp.cusum_k
    beta = 1.0 - cp.alpha
    for j in range(max(first, 0), n):
        g = g0 + j
        pos = g % cp.block
        if pos == 0 and st.opened:
            _close_block(st, cp)
        full[:] = np.nan
        full[rows] = r[:, j]
        st.cur[:, pos] = full
        present = ~np.isnan(full)
        warm = ~np.isnan(st.level)
        live = present & warm
        z = np.where(live, (full - st.level) / st.scale, 0.0)
        st.ewma = np.where(live, cp.alpha * z + beta * st.ewma, st.ewma)
        e = np.abs(st.ewma)
        st.e_sum += np.where(warm, e, 0.0)
        st.e_n += warm
        cpl = np.where(live, np.maximum(0.0, st.cp + z - kk), st.cp)
        cmi = np.where(live, np.maximum(0.0, st.cm - z - kk), st.cm)
        st.np_ = np.where(cpl > 0, st.np_ + live, 0.0)
        st.nm = np.where(cmi > 0, st.nm + live, 0.0)
        # a sum creeping up for longer than the window without signalling is the residual's slow
        # wander (bursty pollutants), not a shift: forget it, as the windowed CUSUM does
        old_p, old_m = st.np_ > cp.window, st.nm > cp.window
        cpl = np.where(old_p, 0.0, cpl)
        cmi = np.where(old_m, 0.0, cmi)
        st.np_ = np.where(old_p, 0.0, st.np_)
        st.nm = np.where(old_m, 0.0, st.nm)
        score = np.maximum(cpl, cmi)
        up, down = cpl > h, cmi > h
        # consecutive same-side signals: +n up, -n down
        # a side back at 0 (the shift is gone) forgets its signals
        st.sig = np.where(live & (((st.sig > 0) & (cpl == 0)) | ((st.sig < 0) & (cmi == 0))), 0.0, st.sig)
        st.sig = np.where(up, np.maximum(st.sig, 0) + 1, np.where(down, np.minimum(st.sig, 0) - 1, st.sig))
        shift = np.where(up, kk + cpl / np.maximum(st.np_, 1), np.where(down, -(kk + cmi / np.maximum(st.nm, 1)), 0.0))
        confirmed = np.abs(st.sig) >= cp.confirm
        st.cp = np.where(up, 0.0, cpl)
        st.cm = np.where(down, 0.0, cmi)
        st.np_ = np.where(up, 0.0, st.np_)
        st.nm = np.where(down, 0.0, st.nm)
        if confirmed.any():
            _rebase(st, cp, np.flatnonzero(confirmed), shift[confirmed])
        es = e / st.spread
        for name, sc, s_lo, s_hi in (("ewma", es, cp.ewma_suspect_l, cp.ewma_fail_l), ("cusum", score, h, 2 * h)):
            sc_r, pr, wr = sc[rows], present[rows], warm[rows]
            fl = np.where(sc_r > s_hi, FAIL, np.where(sc_r > s_lo, SUSPECT, GOOD)).astype(np.int8)
            fl = np.where(wr, fl, NOT_EVALUATED)
            out[name].flag[:, j] = np.where(pr, fl, MISSING)
            out[name].score[:, j] = np.where(pr & wr, sc_r, np.nan)
        st.g_next = g + 1
        st.opened = True
    return out


def _rebase(st: ChartState, cp: ChartParams, idx: np.ndarray, shift: np.ndarray) -> None:
    """Move the baseline of rows ``idx`` by ``shift`` robust sigmas (a confirmed shift is the new normal)."""
    new_level = st.level[idx] + st.scale[idx] * shift
    st.med[idx] = np.where(np.isnan(st.med[idx]), np.nan, new_level[:, None])
    st.ewma[idx] = 0.0
    st.sig[idx] = 0.0
    st.cp[idx] = st.cm[idx] = 0.0
    st.np_[idx] = st.nm[idx] = 0.0
    _refresh(st, cp, idx)


class ChartStore(statefile.Store[ChartState]):
    """Chart states of one service, one file per (kind, field) under ``root`` (``state_dir/analytics/charts``)."""

    def __init__(self, root: Path):
        super().__init__(root, ChartState.load, lambda cp: ChartState([], cp), lambda cp: (cp.block, cp.k_blocks))


def residual(x: np.ndarray) -> np.ndarray:
    """What the charts watch: x (S, T) minus the neighbours' median at each time (weather and the
    daily cycle, shared by every station, cancel out; with fewer than 3 series, x itself), float64."""
    x = x.astype(np.float64, copy=False)
    return x - neighbour_reference(x)[None, :] if x.shape[0] >= 3 else x.copy()


def run_record(r: np.ndarray, g0: int, cp: ChartParams, devices: list[str] | None = None) -> dict[str, QcResult]:
    """The charts over a whole record ``r`` (S, T) from a fresh state (what a service started at the
    record's first bin writes, pass after pass)."""
    devs = devices if devices is not None else [str(i) for i in range(r.shape[0])]
    st = ChartState([], cp)
    return update(st, st.rows_for(devs), r, g0, cp)


__all__ = ["ChartParams", "ChartState", "ChartStore", "residual", "run_record", "update"]
