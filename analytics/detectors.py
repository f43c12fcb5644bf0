"""The detector set with its default parameters, derived per field from the catalogue.

One call runs every QC test over a (series, time) block of one field. Defaults
are in :class:`QcParams`; the evaluation harness (analytics.evaluate) scores them
against the simulators' ground truth.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from analytics import qc
from kotacerdas.catalogue import Field, Kind


@dataclass(frozen=True)
class QcParams:
    """Parameters of the QC tests for one field (units in comments)."""

    fail_lo: float  # field units: catalogue `range` (sensor limits)
    fail_hi: float
    suspect_lo: float  # field units: catalogue `expected`
    suspect_hi: float
    resolution: float  # field units: catalogue `resolution`
    step_s: float  # grid step, seconds
    flat_suspect_s: float = 1800.0  # unchanged for this long -> suspect
    flat_fail_s: float = 7200.0  # ... -> fail
    flat_enabled: bool = True
    # thresholds below chosen with the evaluation harness (docs/analytics.md, "Tuning")
    spike_suspect_k: float = 16.0  # spike height in robust step scales
    spike_fail_k: float = 32.0
    roc_suspect_k: float = 16.0  # one-step change in robust step scales
    roc_fail_k: float = 32.0
    gap_suspect_n: int = 2  # missing grid bins before a reading
    gap_fail_n: int = 10
    roc_enabled: bool = True
    drift_enabled: bool = True  # compare with neighbours (meaningless for independent processes)
    drift_window_s: float = 3600.0  # smoothing window of the neighbour residual
    drift_suspect_z: float = 45.0  # robust spreads of the smoothed residual's reference period
    drift_fail_z: float = 90.0

    @property
    def flat_n(self) -> tuple[int, int]:
        return (max(int(math.ceil(self.flat_suspect_s / self.step_s)), 3),
                max(int(math.ceil(self.flat_fail_s / self.step_s)), 4))

    @property
    def drift_window(self) -> int:
        return max(int(round(self.drift_window_s / self.step_s)), 3)


# Bins legitimately sit unchanged overnight; a stuck ultrasonic sensor shows up over a day.
_KIND_OVERRIDES: dict[str, dict] = {"waste_bin": {"flat_suspect_s": 12 * 3600.0, "flat_fail_s": 36 * 3600.0,
                                                  "drift_window_s": 6 * 3600.0}}


# A bin's fill level steps down at every collection and rises with its own neighbourhood's
# waste: neither steps nor differences from other bins are faults.
_FIELD_OVERRIDES: dict[tuple[str, str], dict] = {
    ("waste_bin", "fill"): {"roc_enabled": False, "drift_enabled": False},
    ("waste_bin", "distance"): {"roc_enabled": False, "drift_enabled": False},
}


def params_for(kind: Kind, field: Field, step_s: float | None = None) -> QcParams:
    p = QcParams(
        fail_lo=field.lo, fail_hi=field.hi, suspect_lo=field.expected_lo, suspect_hi=field.expected_hi,
        resolution=field.resolution, step_s=float(step_s or kind.report_interval_s),
        # a two-state field (tilt switch: expected [0, 0]) is constant by design
        flat_enabled=field.expected_hi > field.expected_lo,
    )
    p = replace(p, **_KIND_OVERRIDES.get(kind.name, {}))
    return replace(p, **_FIELD_OVERRIDES.get((kind.name, field.name), {}))


def qc_tests(p: QcParams, *, neighbours: bool = True) -> list[str]:
    """Names of the QC tests :func:`run_qc` runs for ``p`` (a subset of :data:`qc.TESTS`, in its order)."""
    on = {"flat_line": p.flat_enabled, "rate_of_change": p.roc_enabled, "drift": neighbours and p.drift_enabled}
    return [t for t in qc.TESTS if on.get(t, True)]


def run_qc(x: np.ndarray, p: QcParams, *, neighbours: bool = True, prep: qc.Prepared | None = None,
           out: dict[str, qc.QcResult] | None = None) -> dict[str, qc.QcResult]:
    """Every QC test over ``x`` shaped (S, T) (one field, regular grid). Keys are :data:`qc.TESTS`.

    ``prep``: the block's shared inputs (:class:`qc.Prepared`); ``out``: name -> buffers to write into.
    """
    pr = prep if prep is not None else qc.Prepared(x)
    o = out or {}
    res: dict[str, qc.QcResult] = {}
    res["gross_range"] = qc.gross_range(x, p.fail_lo, p.fail_hi, p.suspect_lo, p.suspect_hi, prep=pr,
                                        out=o.get("gross_range"))
    if p.flat_enabled:
        res["flat_line"] = qc.flat_line(x, p.resolution * 0.5, *p.flat_n, prep=pr, out=o.get("flat_line"))
    scale = qc.robust_step_scale(x, 2.0 * p.resolution, prep=pr)
    res["spike"] = qc.spike(x, p.spike_suspect_k * scale, p.spike_fail_k * scale, prep=pr, out=o.get("spike"))
    if p.roc_enabled:
        res["rate_of_change"] = qc.rate_of_change(x, p.step_s, p.roc_suspect_k * scale / p.step_s,
                                                  p.roc_fail_k * scale / p.step_s, prep=pr,
                                                  out=o.get("rate_of_change"))
    res["gap"] = qc.gap(x, p.gap_suspect_n, p.gap_fail_n, prep=pr, out=o.get("gap"))
    if neighbours and p.drift_enabled:
        res["drift"] = qc.drift(x, p.drift_window, p.drift_suspect_z, p.drift_fail_z, floor=p.resolution, prep=pr,
                                out=o.get("drift"))
    return res


@dataclass(frozen=True)
class StatParams:
    """Parameters of the statistical detectors (windows in grid samples, thresholds in robust sigmas)."""

    hampel_window: int = 60
    hampel_suspect_z: float = 8.0
    hampel_fail_z: float = 16.0
    ewma_alpha: float = 0.1
    ewma_suspect_l: float = 20.0
    ewma_fail_l: float = 40.0
    cusum_k: float = 5.0
    cusum_h: float = 200.0
    seasonal_suspect_z: float = 5.0
    seasonal_fail_z: float = 10.0


STAT_TESTS = ("hampel", "ewma", "cusum", "seasonal")  # names of the statistical detectors' results


def run_all(x: np.ndarray, p: QcParams, t0_ms: int, sp: StatParams = StatParams(),
            chunk: int = 512, score_dtype=np.float32, dtype=np.float32,
            workers: int | None = None) -> dict[str, qc.QcResult]:
    """The full detector set (QC tests + statistical detectors) over one field's (S, T) grid.

    Works through blocks of ``chunk`` series so every temporary stays cache-sized; each
    block's shared inputs (missing mask, |differences|, residual against the neighbours,
    standardised residual) are computed once and every detector writes straight into
    the preallocated outputs. Only the neighbours' median (for drift, EWMA, CUSUM) is
    taken over all series first. Readings are processed and scores stored as float32 by
    default (half the memory traffic; 7 significant digits exceed every catalogue sensor's
    resolution). Blocks are spread over ``workers`` threads (default 1 = serial; a
    service shares its cores; numpy releases the GIL inside its loops).
    """
    from analytics import stats

    if x.dtype != dtype:
        x = x.astype(dtype)
    s, t = x.shape
    # EWMA/CUSUM watch the residual against the neighbours: weather and the daily cycle
    # are shared by every station and cancel out; a sensor's own shift does not
    ref = qc.neighbour_reference(x) if s >= 3 else np.zeros(t, dtype=x.dtype)
    names = qc_tests(p, neighbours=False) + ["hampel"] + (["drift"] if p.drift_enabled else []) + list(STAT_TESTS[1:])
    merged = {k: qc.QcResult(np.empty((s, t), dtype=np.int8), np.empty((s, t), dtype=score_dtype)) for k in names}

    def block(i: int) -> None:  # one block of series, every detector vectorised over it
        rows = slice(i, i + chunk)
        out = {k: qc.QcResult(r.flag[rows], r.score[rows]) for k, r in merged.items()}
        xb = x[rows]
        pr = qc.Prepared(xb)
        run_qc(xb, p, neighbours=False, prep=pr, out=out)
        stats.hampel(xb, sp.hampel_window, None, sp.hampel_suspect_z, sp.hampel_fail_z, floor=p.resolution,
                     prep=pr, out=out["hampel"])
        rb = xb - ref[None, :]
        if p.drift_enabled:  # the residual is per block, so drift works per block too
            qc.drift(xb, p.drift_window, p.drift_suspect_z, p.drift_fail_z, floor=p.resolution,
                     residual=rb, min_series=1, prep=pr, out=out["drift"])
        rpr = qc.Prepared(rb)
        z = stats.standardise(rb, p.resolution)
        zb = stats.time_blocks(z)
        stats.ewma_chart(rb, sp.ewma_alpha, sp.ewma_suspect_l, sp.ewma_fail_l, floor=p.resolution, z=z, zb=zb,
                         prep=rpr, out=out["ewma"])
        stats.cusum(rb, sp.cusum_k, sp.cusum_h, floor=p.resolution, z=z, zb=zb, prep=rpr, out=out["cusum"])
        stats.seasonal_residual(xb, p.step_s, t0_ms, sp.seasonal_suspect_z, sp.seasonal_fail_z, floor=p.resolution,
                                prep=pr, out=out["seasonal"])

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
