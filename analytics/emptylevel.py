"""Empty-level test: the level test a container's fill sensor can have.

A bin's fill (and the ultrasonic distance it is derived from) steps back at every collection, so
no test of the level against its own past runs there (catalogue ``resets``). But an empty bin has
one level that does not move: the floor. An offset of the ultrasonic sensor (knocked, its mount
moved, an object stuck under the lid) moves every reading, and after a collection the bin reads an
"empty" that is not its usual empty. The usual empty level ``edge`` of each series is the furthest
it has been toward its empty side (distance: the deepest echo; fill: the lowest %), learned from
readings the test did not flag; a reading beyond it by more than ``tol`` is a fault (a real bin
cannot be emptier than empty):

    tol = max(min_steps x resolution, tol_frac x (edge - full side seen))

The value judged is the median of the series' last 3 readings (one echo off a passing object is
the spike test's, not a level). A series is judged only after its first collection (a step toward
the empty side of at least 10 % of the field's expected span, in the 3-median) has shown where its floor
is; the 2 readings after that first collection teach the edge unconditionally. Clean look-alikes
and why they pass: a bin collected at any fill level lands on the same floor; a half-emptied bin
lands short of it; a bin not collected for days moves away from it; market and household bins
differ in pace, not in their floor.

An offset toward the full side (an object under the lid, a sensor moved down) only makes the bin
look fuller: its onset is what a bag dropped in shows. It is judged by what follows. A jump of
the 3-median (at least ``jump``: several times a bin's fastest filling per reading) that is
neither filling at the bin's pace nor a collection onto the floor opens an excursion; it is
shown to be the sensor's (one suspect reading) when
- the level comes back by the same step (within ``match`` of it) with no collection between: an
  offset that ended (flagged at its end: the delay is the fault's length), or
- the next collection lands short of the floor by that step (within ``match``): the bin was
  emptied, the offset was not (a step that stays: flagged at the first collection after it).
A jump toward empty that does not reach the floor (a partial collection, an offset toward empty
on a full bin) opens an excursion the other way, shown by a jump back up of the same size.
Clean look-alikes that stay quiet: a bag dropped in (the bin lands on its floor at the next
collection), a half-emptied bin (no jump before it), a stuck reading released (a jump toward full
the next collection explains). Two look-alikes together can still match (a bag of exactly the
size a partial collection took out, a bag taken out again): the price of seeing the offset. Not
seen: a step toward full that neither ends nor meets a collection within ``memory`` (2 days), and
any offset before the series' first collection without a calibrated floor.

The test runs on the measured field (``distance``); a field derived from it (``fill``, catalogue
``derived_from``) gets the verdicts of its source, as the fault is the sensor's.

Arrays: values (S, n) in field units, side +1 when the empty side is high (distance), -1 when it is
low (fill); state vectors (S,). Every sample is processed once, in grid order, whichever pass it
arrives in (like :mod:`analytics.shift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics import statefile
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult

FORMAT = 2  # bump when the saved layout changes: an older file is then ignored (the test learns again)
SETTLE = 2  # readings after the first collection that teach the edge unconditionally (the 3-median's lag)


@dataclass(frozen=True)
class EmptyParams:
    """Parameters of the empty-level test (field units unless said)."""

    side: int  # +1: the empty side is high (distance), -1: low (fill), 0: no test
    reset_step: float  # a step toward the empty side of at least this is a collection
    resolution: float
    min_steps: float = 4.0  # never flag less than this many resolution steps beyond the edge
    tol_frac: float = 0.08  # ... nor less than this fraction of the series' seen range
    fail_frac: float = 0.25  # beyond the edge by this fraction of the range (or 3 tol): fail, else suspect
    tol_min: float = 0.0  # ... nor less than this (field units: 1 % of the expected span)
    # the derived field (a fill %): its value at empty, and its range (clipped readings say nothing)
    derived_empty: float = 0.0
    derived_lo: float = 0.0
    derived_hi: float = 100.0
    min_pairs: int = 8  # unclipped (source, derived) pairs before the device's calibrated floor is used
    jump: float = 0.0  # a step of the 3-median of at least this (field units) is a jump (an excursion's edge)
    match: float = 0.25  # a way back matches a jump within this fraction of the jump's size (a step of filling and noise)
    memory: int = 1 << 30  # readings a jump waits for its way back

    @classmethod
    def from_detectors(cls, p) -> "EmptyParams":  # noqa: ANN001 - analytics.detectors.QcParams (no import cycle)
        """Collections are steps of at least 10 % of the expected span toward the empty side, jumps of
        at least 3 % (a third of the smallest offset worth a verdict, several times a bin's fastest
        filling per reading); a jump waits 2 days for its way back."""
        span = p.suspect_hi - p.suspect_lo
        return cls(side=int(p.empty_side), reset_step=0.1 * span, resolution=p.resolution, tol_min=0.01 * span,
                   jump=0.03 * span, memory=max(int(round(2 * 86400.0 / p.step_s)), 1))


_ARRAYS = ("edge", "full", "p1", "p2", "pm", "resets", "settle", "cn", "cf", "cy", "cff", "cfy", "exc", "eage")


class EmptyState:
    """Empty-level state of S series of one field, values with the empty side high (x ``side``):
    ``edge`` the usual empty level, ``full`` the furthest toward full seen (NaN = none yet), ``p1``,
    ``p2`` the last two readings, ``pm`` the last 3-median, ``c*`` the calibration line's sums, ``resets`` collections seen, ``settle`` readings left that teach
    the edge unconditionally, ``exc`` / ``eage`` the open excursion and its age in readings. ``g_next``: grid index of the next column (None before the first)."""

    def __init__(self, devices: list[str]):
        s = len(devices)
        self.devices = list(devices)
        self.g_next: int | None = None
        self.edge, self.full, self.p1, self.p2, self.pm = (np.full(s, np.nan) for _ in range(5))
        self.resets, self.settle = np.zeros(s), np.zeros(s)
        # sums of the (derived d, source y) pairs for the device's calibration line y = a + b d
        self.cn, self.cf, self.cy, self.cff, self.cfy = (np.zeros(s) for _ in range(5))
        # the open excursion: the last jump not yet explained (x side: > 0 toward empty, < 0 toward
        # full; 0 = none) and the readings since it
        self.exc, self.eage = np.zeros(s), np.zeros(s)

    def rows_for(self, devices: list[str]) -> np.ndarray:
        """Row of each of ``devices`` in the state, (len(devices),); unknown devices get fresh rows."""
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: EmptyState([""] * n))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, -1 if self.g_next is None else self.g_next],
                       {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path, _params: object = None) -> "EmptyState | None":
        """The saved state, or None when there is none or it was saved with another layout."""
        got = statefile.restore(path, _ARRAYS, [FORMAT], cls)
        return None if got is None else got[0]


def _calibrated_floor(st: EmptyState, ep: EmptyParams) -> np.ndarray:
    """(S,) the source value (x side) at which the device's own derivation reads empty, from the
    least-squares line through its unclipped (derived, source) pairs; NaN with too few or no spread."""
    n = np.maximum(st.cn, 1.0)
    mf, my = st.cf / n, st.cy / n
    var = st.cff / n - mf * mf
    ok = (st.cn >= ep.min_pairs) & (var > 1e-6 * (ep.derived_hi - ep.derived_lo) ** 2)
    b = np.where(ok, (st.cfy / n - mf * my) / np.where(ok, var, 1.0), np.nan)
    return np.where(ok, my + b * (ep.derived_empty - mf), np.nan)


def update(st: EmptyState, rows: np.ndarray, x: np.ndarray, g0: int, ep: EmptyParams,
           derived: np.ndarray | None = None) -> QcResult:
    """Advance the test over columns ``g0 .. g0 + n - 1`` of ``x`` (len(rows), n), field units.

    ``derived`` (len(rows), n): the field the device derives from ``x`` (a fill %), when the kind
    has one: its unclipped readings give the device's calibrated floor (where it reads
    ``derived_empty``), known from the first readings, before any collection.

    Columns before ``st.g_next`` were processed by an earlier pass and are skipped (flag 2 there).
    Returns (len(rows), n): flag 1 / 3 / 4 where judged, 2 before the series' first collection (or
    with ``side`` 0), 9 missing; score = distance beyond the edge in tolerances, or on an excursion shown the
    sensor's, its jump in tolerances (NaN where not judged).
    """
    nrow, n = x.shape
    out = QcResult(np.full((nrow, n), NOT_EVALUATED, dtype=np.int8), np.full((nrow, n), np.nan))
    if ep.side == 0:
        return out
    if st.g_next is None or g0 > st.g_next:  # the edge is the bin's floor: it survives an outage
        st.g_next = g0
    first = st.g_next - g0
    s_all = len(st.devices)
    y = np.full(s_all, np.nan)
    for j in range(max(first, 0), n):
        y[:] = np.nan
        y[rows] = ep.side * x[:, j]
        ok = ~np.isnan(y)
        trio = np.stack([st.p2, st.p1, y])
        m3 = np.where(np.isnan(trio).any(axis=0), y, np.median(trio, axis=0))  # a NaN neighbour: the reading
        if derived is not None:
            d = np.full(s_all, np.nan)
            d[rows] = derived[:, j]
            # a reading off its neighbours (a spike, a value the gateway refuses) stays out of the line
            pair = ok & (d > ep.derived_lo) & (d < ep.derived_hi) & (np.abs(y - m3) <= ep.tol_min)
            d0, y0 = np.where(pair, d, 0.0), np.where(pair, y, 0.0)
            st.cn, st.cf, st.cy = st.cn + pair, st.cf + d0, st.cy + y0
            st.cff, st.cfy = st.cff + d0 * d0, st.cfy + d0 * y0
        floor = _calibrated_floor(st, ep)
        cal = ~np.isnan(floor)
        edge = np.where(cal, floor, st.edge)
        # a collection is a step of the 3-median (one echo off the floor of a full bin is a spike)
        reset = ok & ~np.isnan(st.pm) & (m3 - st.pm >= ep.reset_step)
        learning = ok & (st.settle > 0)
        judged = ok & (cal | ((st.resets >= 1) & ~learning & ~np.isnan(edge)))
        rng_seen = np.where(np.isnan(st.full), 0.0, edge - st.full)
        tol = np.maximum(np.maximum(ep.min_steps * ep.resolution, ep.tol_min), ep.tol_frac * rng_seen)
        over = m3 - edge
        beyond = judged & (over > tol)
        fail = beyond & (over > np.maximum(3.0 * tol, ep.fail_frac * rng_seen))
        # an excursion: a jump of the 3-median that is neither filling nor a collection onto the floor
        # opens it; the way back of the same size (no collection between), or a collection landing
        # short of the floor by that size, shows the jump was the sensor's (see the module doc)
        step = np.where(ok & ~np.isnan(st.pm), m3 - st.pm, 0.0)
        known = ~np.isnan(edge) & (cal | (st.resets >= 1))
        short = np.where(known, edge - m3, np.nan)  # how far short of the floor (toward full)
        on_floor = known & (short <= tol)
        down, up = step >= ep.jump, step <= -ep.jump
        size = np.abs(st.exc)
        with np.errstate(invalid="ignore"):
            back = (down & (st.exc < 0) & ~on_floor) | (up & (st.exc > 0))
            back &= np.abs(step + st.exc) <= ep.match * size
            # where a drop lands tells, not its size (a nearly empty bin's collection is a small drop)
            landed = down & (st.exc < 0) & (short > np.maximum(tol, ep.match * size)) & (short <= (1.0 + ep.match) * size + tol)
            partial = np.where(known, short > tol, step < ep.reset_step)  # a drop that did not reach the floor
        shown = back | landed
        opened = ~shown & (up | (down & partial))
        st.exc = np.where(shown | (down & ~partial), 0.0, np.where(opened, step, st.exc))
        st.eage = np.where(opened, 0.0, st.eage + ok)
        st.exc = np.where(st.eage > ep.memory, 0.0, st.exc)
        fl = np.where(fail, FAIL, np.where(beyond | shown, SUSPECT, np.where(judged, GOOD, NOT_EVALUATED)))
        sc = np.where(shown, size / tol, np.where(judged, over / tol, np.nan))
        # learn from what the test did not flag; the first collection opens SETTLE readings of learning
        teach = ok & ~beyond
        st.edge = np.where(teach, np.fmax(st.edge, m3), st.edge)
        st.full = np.where(teach, np.fmin(st.full, m3), st.full)
        first_reset = reset & (st.resets == 0)
        st.settle = np.where(first_reset, float(SETTLE), np.where(learning, st.settle - 1.0, st.settle))
        st.resets = st.resets + reset
        st.p2 = np.where(ok, st.p1, st.p2)
        st.p1 = np.where(ok, y, st.p1)
        st.pm = np.where(ok, m3, st.pm)
        fr = fl[rows]
        out.flag[:, j] = np.where(ok[rows], fr, MISSING).astype(np.int8)
        out.score[:, j] = np.where(ok[rows], sc[rows], np.nan)
        st.g_next = g0 + j + 1
    return out


class EmptyStore(statefile.Store[EmptyState]):
    """Empty-level states of one service, one file per (kind, field) under ``root``
    (``state_dir/analytics/emptylevel``)."""

    def __init__(self, root: Path):
        super().__init__(root, EmptyState.load, lambda _p: EmptyState([]))


def run_record(x: np.ndarray, g0: int, ep: EmptyParams, devices: list[str] | None = None,
               derived: np.ndarray | None = None) -> QcResult:
    """The test over a whole record ``x`` (S, T) from a fresh state (what a service started at the
    record's first bin writes, pass after pass)."""
    devs = devices if devices is not None else [str(i) for i in range(x.shape[0])]
    st = EmptyState([])
    return update(st, st.rows_for(devs), x, g0, ep, derived)


__all__ = ["EmptyParams", "EmptyState", "EmptyStore", "run_record", "update"]
