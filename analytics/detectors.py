"""The detector set with its default parameters, derived per field from the catalogue.

One call runs every QC test over a (series, time) block of one field. Defaults
are in :class:`QcParams`; the evaluation harness (analytics.evaluate) scores them
against the simulators' ground truth.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Collection

import numpy as np

from analytics import qc
from kotacerdas.catalogue import Field, Kind
from kotacerdas.derived import DERIVATIONS


FLAT_MIN_N = 10  # repeated readings before any flat-line verdict


@dataclass(frozen=True)
class QcParams:
    """Parameters of the QC tests for one field (units in comments)."""

    fail_lo: float  # field units: catalogue `range` (sensor limits)
    fail_hi: float
    suspect_lo: float  # field units: catalogue `expected`
    suspect_hi: float
    resolution: float  # field units: catalogue `resolution`
    step_s: float  # grid step, seconds
    flat_suspect_s: float = 7200.0  # unchanged for at least this long -> suspect (more for a series that
    flat_fail_s: float = 21600.0  # ... -> fail               often repeats itself: qc.flat_line)
    flat_factor: float = 3.0  # suspect after this many times the past blocks' typical longest run
    flat_enabled: bool = True
    # thresholds below chosen with the evaluation harness (docs/analytics.md, "Tuning")
    spike_suspect_k: float = 12.0  # spike height in robust step scales
    spike_fail_k: float = 24.0
    spike_pegged_k: float = 3.0  # ... for a reading at the sensor's range limit
    roc_suspect_k: float = 12.0  # one-step change in robust step scales
    roc_fail_k: float = 24.0
    recent_steps: int = 8  # the step scale is at least the spread of this many steps before a sample
    step_floor: float = 1.0  # resolutions: the step scale's floor (a 24-resolution spike on a still series is one)
    gap_suspect_n: int = 2  # missing grid bins before a reading
    gap_fail_n: int = 10
    roc_enabled: bool = True
    level_enabled: bool = True  # Hampel, EWMA, CUSUM (the statistical detectors against the series' own past)
    drift_enabled: bool = True  # compare with neighbours (meaningless for independent processes)
    # the empty-level test (analytics/emptylevel.py) of a container's fill sensor: the measured field it
    # runs on ("" = none) and which side of it is empty (+1 high: a distance, -1 low: a fill %)
    empty_source: str = ""
    empty_side: int = 0
    # a resetting field: the side its resets move it to (+1 high, -1 low; analytics/trend.py's pace mode)
    reset_side: int = 0
    drift_window_s: float = 3600.0  # smoothing window of the neighbour residual
    drift_suspect_z: float = 30.0  # robust spreads of the smoothed residual's trailing block medians
    drift_fail_z: float = 60.0
    drift_blocks: int = 12  # trailing blocks of the drift baseline
    # trailing baselines (analytics.baseline): blocks of block_s aligned to grid time; a sample
    # is judged against the previous baseline_blocks blocks, and not at all (2) with fewer than
    # min_blocks of them usable (warm-up after start or after an outage)
    block_s: float = 3600.0
    baseline_blocks: int = 6
    min_blocks: int = 2

    @property
    def flat_n(self) -> tuple[int, int]:
        # at least FLAT_MIN_N readings whatever the grid: three 15-min readings are a quiet night
        return (max(int(math.ceil(self.flat_suspect_s / self.step_s)), FLAT_MIN_N),
                max(int(math.ceil(self.flat_fail_s / self.step_s)), 2 * FLAT_MIN_N))

    @property
    def block(self) -> int:
        from analytics.baseline import block_len

        return block_len(self.step_s, self.block_s)

    def g0(self, t0_ms: int) -> int:
        """Grid index (time // step) of a window's first column."""
        return int(t0_ms // int(round(self.step_s * 1000)))

    @property
    def lookback(self) -> int:
        """Samples of history a verdict can depend on: a live window at least this long (plus
        the newest bin) gives the flags of a batch run (see :func:`stream_run`)."""
        return (max(self.baseline_blocks, self.drift_blocks) + 2) * self.block + self.drift_window

    @property
    def drift_window(self) -> int:
        return max(int(round(self.drift_window_s / self.step_s)), 3)


def params_for(kind: Kind, field: Field, step_s: float | None = None) -> QcParams:
    """Defaults for one field, from catalogue properties only (no per-kind or per-field names)."""
    step = float(step_s or kind.report_interval_s)
    p = QcParams(
        fail_lo=field.lo, fail_hi=field.hi, suspect_lo=field.expected_lo, suspect_hi=field.expected_hi,
        resolution=field.resolution, step_s=step,
        # a two-state field (tilt switch: expected [0, 0]) is constant by design; a field whose typical
        # value is below its resolution (turbidity of clear water at 10 NTU steps) reads 0 most of the time
        flat_enabled=field.expected_hi > field.expected_lo and field.typical >= field.resolution,
        # a coarse grid (the bins' 15 min) smooths the neighbour residual over as many samples as a fine one
        drift_window_s=max(3600.0, 24 * step),
    )
    if field.resets:
        # a value that steps back by design (a bin emptied, then filling at its own pace): neither
        # its steps nor its level against the past or against other series say anything about the sensor
        p = replace(p, roc_enabled=False, drift_enabled=False, level_enabled=False)
        if kind.fill_level:  # a container's floor is a level it keeps (analytics/emptylevel.py)
            src = kind.field(field.derived_from) if field.derived_from else field
            p = replace(p, empty_source=src.name, empty_side=empty_side(kind, src), reset_side=empty_side(kind, field))
    return p


def empty_side(kind: Kind, field: Field) -> int:
    """Which side of ``field`` an empty container reads: -1 (low) for the kind's fill level; for the
    measured field the fill level is derived from, the opposite of the derivation's slope (fill
    falls as the distance grows: empty is a long distance); 0 for any other field."""
    if field.name == kind.fill_level:
        return -1
    fill = kind.field(kind.fill_level) if kind.fill_level else None
    if fill is None or fill.derived_from != field.name:
        return 0
    conv = DERIVATIONS[fill.derivation]
    h = max(field.resolution, 1e-6)
    # the slope at the field's typical value, where the derivation is not clipped
    slope = float(conv(np.array(field.typical + h)) - conv(np.array(field.typical)))
    return -1 if slope > 0 else (1 if slope < 0 else 0)


def qc_tests(p: QcParams, *, neighbours: bool = True) -> list[str]:
    """Names of the QC tests :func:`run_qc` runs for ``p`` (a subset of :data:`qc.TESTS`, in its order)."""
    on = {"flat_line": p.flat_enabled, "rate_of_change": p.roc_enabled, "drift": neighbours and p.drift_enabled}
    return [t for t in qc.TESTS if on.get(t, True)]


def run_qc(x: np.ndarray, p: QcParams, t0_ms: int = 0, *, neighbours: bool = True, prep: qc.Prepared | None = None,
           out: dict[str, qc.QcResult] | None = None) -> dict[str, qc.QcResult]:
    """Every QC test over ``x`` shaped (S, T) (one field, regular grid; column 0 at ``t0_ms``).
    Keys are :data:`qc.TESTS`.

    ``prep``: the block's shared inputs (:class:`qc.Prepared`); ``out``: name -> buffers to write into.
    """
    pr = prep if prep is not None else qc.Prepared(x)
    o = out or {}
    g0, blk = p.g0(t0_ms), p.block
    res: dict[str, qc.QcResult] = {}
    res["gross_range"] = qc.gross_range(x, p.fail_lo, p.fail_hi, p.suspect_lo, p.suspect_hi, prep=pr,
                                        out=o.get("gross_range"))
    if p.flat_enabled:
        res["flat_line"] = qc.flat_line(x, p.resolution * 0.5, *p.flat_n, g0=g0, block=blk, k=p.baseline_blocks,
                                        factor=p.flat_factor, prep=pr, out=o.get("flat_line"))
    scale = qc.step_scale(x, g0, blk, p.step_floor * p.resolution, p.baseline_blocks, 1, recent=p.recent_steps, prep=pr)
    res["spike"] = sp_ = qc.spike(x, p.spike_suspect_k * scale, p.spike_fail_k * scale, prep=pr, out=o.get("spike"))
    # a single reading pegged at the sensor's limit between two well inside it is a saturated or
    # zeroed read (a negative spike clips at 0), however small its height in step scales; but at
    # least as high as a spike on a still series (a full bin's 100 % between two 99.4 % is no fault)
    with np.errstate(invalid="ignore"):
        pegged = (x <= p.fail_lo + 0.5 * p.resolution) | (x >= p.fail_hi - 0.5 * p.resolution)
        pegged &= sp_.score > np.maximum(p.spike_pegged_k * scale, p.spike_suspect_k * p.step_floor * p.resolution)
    np.copyto(sp_.flag, np.maximum(sp_.flag, qc.SUSPECT, dtype=np.int8), where=pegged)
    if p.roc_enabled:
        res["rate_of_change"] = qc.rate_of_change(x, p.step_s, p.roc_suspect_k * scale / p.step_s,
                                                  p.roc_fail_k * scale / p.step_s, prep=pr,
                                                  out=o.get("rate_of_change"))
    res["gap"] = qc.gap(x, p.gap_suspect_n, p.gap_fail_n, prep=pr, out=o.get("gap"))
    if neighbours and p.drift_enabled:
        res["drift"] = qc.drift(x, g0, blk, p.drift_window, p.drift_suspect_z, p.drift_fail_z, floor=p.resolution,
                                k=p.drift_blocks, min_blocks=p.min_blocks + 1, prep=pr, out=o.get("drift"))
    return res


@dataclass(frozen=True)
class StatParams:
    """Parameters of the statistical detectors (windows in grid samples, thresholds in robust sigmas)."""

    hampel_suspect_z: float = 60.0  # docs/analytics.md: at 30 it adds no spike the spike test misses,
    hampel_fail_z: float = 120.0  # only false alarms on bursty series
    ewma_alpha: float = 0.1
    ewma_suspect_l: float = 30.0
    ewma_fail_l: float = 60.0
    cusum_k: float = 5.0
    cusum_h: float = 200.0
    cusum_window_s: float = 7200.0  # the CUSUM forgets runs longer than this
    seasonal_suspect_z: float = 5.0
    seasonal_fail_z: float = 10.0
    trend_suspect_z: float = 8.0  # analytics/trend.py: hourly residual against the frozen baseline, in scales
    trend_fail_z: float = 16.0
    trend_resolution_k: float = 0.5  # scale floor, sensor resolutions
    trend_span_floor: float = 0.005  # scale floor, fraction of the expected span (docs/analytics.md)
    trend_pace_z: float = 7.0  # ... a resetting field's hourly pace against its own (analytics/trend.py)
    trend_pace_resolution_k: float = 5.0  # pace scale floor, sensor resolutions per hour


def cusum_window_n(sp: StatParams, step_s: float) -> int:
    """CUSUM memory in samples: ``cusum_window_s``, but at least 32 samples (a coarse grid such as
    the bins' 15 min still sums long enough to reach h). Within :attr:`QcParams.lookback` for the
    catalogue's grids."""
    return max(int(round(sp.cusum_window_s / step_s)), 32)


STAT_TESTS = ("hampel", "ewma", "cusum", "seasonal")  # names of the statistical detectors' results


def run_all(x: np.ndarray, p: QcParams, t0_ms: int, sp: StatParams = StatParams(),
            chunk: int = 512, score_dtype=np.float32, dtype=np.float32,
            workers: int | None = None, tests: Collection[str] | None = None) -> dict[str, qc.QcResult]:
    """The full detector set (QC tests + statistical detectors) over one field's (S, T) grid.

    Works through blocks of ``chunk`` series so every temporary stays cache-sized; each
    block's shared inputs (missing mask, |differences|, residual against the neighbours,
    standardised residual) are computed once and every detector writes straight into
    the preallocated outputs. Only the neighbours' median (for drift, EWMA, CUSUM) is
    taken over all series first. Readings are processed and scores stored as float32 by
    default (half the memory traffic; 7 significant digits exceed every catalogue sensor's
    resolution). Blocks are spread over ``workers`` threads (default 1 = serial; a
    service shares its cores; numpy releases the GIL inside its loops). ``tests``: compute only
    these (None: all); the service skips what it does not write (:mod:`analytics.alarmset`).
    """
    from analytics import stats

    if x.dtype != dtype:
        x = x.astype(dtype)
    s, t = x.shape
    # EWMA/CUSUM watch the residual against the neighbours: weather and the daily cycle
    # are shared by every station and cancel out; a sensor's own shift does not
    def on(name: str) -> bool:
        return tests is None or name in tests

    p = replace(p, roc_enabled=p.roc_enabled and on("rate_of_change"), drift_enabled=p.drift_enabled and on("drift"))
    charts = on("ewma") or on("cusum")
    need_ref = p.drift_enabled or (p.level_enabled and charts)
    ref = qc.neighbour_reference(x) if s >= 3 and need_ref else np.zeros(t, dtype=x.dtype)
    names = qc_tests(p, neighbours=False) + ["hampel"] + (["drift"] if p.drift_enabled else []) + list(STAT_TESTS[1:])
    names = [k for k in names if on(k) or k in qc.TESTS]
    merged = {k: qc.QcResult(np.empty((s, t), dtype=np.int8), np.empty((s, t), dtype=score_dtype)) for k in names}

    g0, blk = p.g0(t0_ms), p.block
    cusum_window = cusum_window_n(sp, p.step_s)

    def block(i: int) -> None:  # one block of series, every detector vectorised over it
        rows = slice(i, i + chunk)
        out = {k: qc.QcResult(r.flag[rows], r.score[rows]) for k, r in merged.items()}
        xb = x[rows]
        pr = qc.Prepared(xb)
        run_qc(xb, p, t0_ms, neighbours=False, prep=pr, out=out)
        if not p.level_enabled:
            for k in ("hampel", "ewma", "cusum"):
                if k in out:
                    out[k].flag[...] = np.where(pr.missing, qc.MISSING, qc.NOT_EVALUATED)
                    out[k].score[...] = np.nan
        elif "hampel" in out:
            stats.hampel(xb, g0, blk, p.baseline_blocks, sp.hampel_suspect_z, sp.hampel_fail_z, floor=p.resolution,
                         min_blocks=p.min_blocks, recent=p.recent_steps, prep=pr, out=out["hampel"])
        rb = xb - ref[None, :]
        if p.drift_enabled:  # the residual is per block, so drift works per block too
            qc.drift(xb, g0, blk, p.drift_window, p.drift_suspect_z, p.drift_fail_z, floor=p.resolution,
                     k=p.drift_blocks, min_blocks=p.min_blocks + 1, residual=rb, min_series=1, prep=pr,
                     out=out["drift"])
        if p.level_enabled and charts:
            rpr = qc.Prepared(rb)
            z = stats.standardise(rb, g0, blk, p.baseline_blocks, p.min_blocks, p.resolution)
            if "ewma" in out:
                stats.ewma_chart(rb, g0, blk, sp.ewma_alpha, sp.ewma_suspect_l, sp.ewma_fail_l, p.baseline_blocks,
                                 p.min_blocks, floor=p.resolution, z=z, prep=rpr, out=out["ewma"])
            if "cusum" in out:
                stats.cusum(rb, g0, blk, sp.cusum_k, sp.cusum_h, cusum_window, p.baseline_blocks, p.min_blocks,
                            floor=p.resolution, z=z, prep=rpr, out=out["cusum"])
        if "seasonal" in out:
            stats.seasonal_residual(xb, p.step_s, t0_ms, sp.seasonal_suspect_z, sp.seasonal_fail_z,
                                    floor=p.resolution, prep=pr, out=out["seasonal"])

    starts = list(range(0, s, chunk))
    n_workers = max(1, min(workers or 1, len(starts)))
    if n_workers > 1:
        # numpy releases the GIL inside its loops and partitions: blocks run on every core
        with ThreadPoolExecutor(n_workers, thread_name_prefix="detect") as pool:
            list(pool.map(block, starts))
    else:
        for i in starts:
            block(i)
    if s < 3 and "drift" in merged:
        merged["drift"].flag[merged["drift"].flag != qc.MISSING] = qc.NOT_EVALUATED
    return merged


def batch_run(x: np.ndarray, p: QcParams, t0_ms: int, sp: StatParams = StatParams(), **kw) -> dict[str, qc.QcResult]:
    """:func:`run_all` over a whole record at once, ``x`` (S, T) with column 0 at ``t0_ms``.

    The record is padded in front with one block of "no reading" so that the block holding
    its first reading is judged as a live window (which always reaches back before the
    first reading) judges it.
    """
    s, t = x.shape
    lead = p.block + p.g0(t0_ms) % p.block
    padded = np.full((s, lead + t), np.nan, dtype=x.dtype)
    padded[:, lead:] = x
    res = run_all(padded, p, t0_ms - lead * int(round(p.step_s * 1000)), sp, **kw)
    return {k: qc.QcResult(r.flag[:, lead:], r.score[:, lead:]) for k, r in res.items()}


def stream_run(x: np.ndarray, p: QcParams, t0_ms: int, window_n: int, every_n: int = 1,
               sp: StatParams = StatParams(), **kw) -> dict[str, qc.QcResult]:
    """What the service's live loop writes, replayed over a record ``x`` (S, T) (column 0 at ``t0_ms``).

    A pass runs after every ``every_n`` new bins over the last ``window_n`` bins (the
    service's ``window_s``), like :meth:`analytics.service.AnalyticsService.run_pass`, and keeps
    only bins it has not written before, up to the *second newest*: the spike test needs the
    bin after the one it judges, so every verdict waits one grid step. The record's last bin
    therefore has no verdict here (flag 2). With ``window_n`` >= :attr:`QcParams.lookback` + 2
    the flags equal :func:`batch_run`'s (tests/analytics/test_stream.py).
    """
    s, t = x.shape
    step_ms = int(round(p.step_s * 1000))
    pad = np.full((s, window_n - 1 + t), np.nan, dtype=x.dtype)
    pad[:, window_n - 1 :] = x
    out: dict[str, qc.QcResult] = {}
    ends = list(range(min(every_n, t), t + 1, every_n))
    if ends[-1] != t:
        ends.append(t)
    emitted = -1  # last column of x written
    for end in ends:  # the pass that sees columns end - window_n .. end - 1
        first = end - window_n
        res = run_all(pad[:, end - 1 : end - 1 + window_n], p, t0_ms + first * step_ms, sp, **kw)
        if not out:
            out = {k: qc.QcResult(np.full((s, t), qc.NOT_EVALUATED, dtype=np.int8),
                                  np.full((s, t), np.nan, dtype=r.score.dtype)) for k, r in res.items()}
        lo, hi = emitted + 1, end - 2
        if hi < lo:
            continue
        for k, r in res.items():
            out[k].flag[:, lo : hi + 1] = r.flag[:, lo - first : hi + 1 - first]
            out[k].score[:, lo : hi + 1] = r.score[:, lo - first : hi + 1 - first]
        emitted = hi
    return out
