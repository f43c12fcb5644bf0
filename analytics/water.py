"""Drinking-water compliance: Permenkes No. 2 Tahun 2023.

Source: Peraturan Menteri Kesehatan Republik Indonesia Nomor 2 Tahun 2023 tentang
Peraturan Pelaksanaan PP No. 66 Tahun 2014 tentang Kesehatan Lingkungan, Lampiran,
Standar Baku Mutu Kesehatan Lingkungan (SBMKL) media air minum, parameter wajib:
pH 6.5-8.5; kekeruhan (turbidity) < 3 NTU; TDS < 300 mg/L; sisa khlor (free
chlorine residual) 0.2-0.5 mg/L with 30 minutes' contact time. Summarised in
be-jogja.com "Parameter Wajib Kualitas Air yang Layak Dikonsumsi" (Permenkes 2/2023:
TDS < 300 mg/L, kekeruhan < 3 NTU, pH 6.5-8.5, sisa khlor 0.2-0.5 mg/L). The
earlier Permenkes 492/2010 allowed TDS 500 mg/L and 5 NTU: do not mix them up.

Only parameters the catalogue's water kind measures are evaluated; the others in
the regulation (microbiology, metals, nitrate...) need laboratory samples.
"""

from __future__ import annotations

import numpy as np

from kotacerdas.standards import WATER_LIMITS, WaterLimit


Limit = WaterLimit
LIMITS: dict[str, WaterLimit] = WATER_LIMITS  # Permenkes 2/2023, cited in kotacerdas/standards.py


def compliant(parameter: str, value: np.ndarray) -> np.ndarray:
    """Boolean array: within the Permenkes 2/2023 limit (NaN -> False)."""
    lim = LIMITS[parameter]
    v = np.asarray(value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (v <= lim.hi) if lim.hi_inclusive else (v < lim.hi)
        if lim.lo is not None:
            ok &= v >= lim.lo
    return ok & ~np.isnan(v)


def exceedance(parameter: str, value: np.ndarray) -> np.ndarray:
    """How far outside the limit, as a fraction of the limit (0 inside; NaN for NaN)."""
    lim = LIMITS[parameter]
    v = np.asarray(value, dtype=np.float64)
    over = np.maximum(v - lim.hi, 0.0) / lim.hi
    if lim.lo is not None:
        over = np.maximum(over, np.maximum(lim.lo - v, 0.0) / lim.lo)
    return np.where(compliant(parameter, v) | np.isnan(v), np.where(np.isnan(v), np.nan, 0.0), np.maximum(over, 1e-9))


def evaluate(values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-parameter compliance of arrays shaped (S,) and the overall verdict (S,) bool.

    Parameters without a value (NaN) are not counted against the sampling point;
    a point with no evaluable parameter at all is not compliant.
    """
    per = {p: compliant(p, v) for p, v in values.items() if p in LIMITS}
    if not per:
        return per, np.zeros(0, dtype=bool)
    present = np.stack([~np.isnan(np.asarray(values[p], dtype=np.float64)) for p in per])
    ok = np.stack(list(per.values()))
    overall = np.all(ok | ~present, axis=0) & present.any(axis=0)
    return per, overall
