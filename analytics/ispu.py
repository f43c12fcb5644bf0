"""Indonesia's air pollution index, ISPU (Indeks Standar Pencemar Udara).

Source: Peraturan Menteri Lingkungan Hidup dan Kehutanan Republik Indonesia
No. P.14/MENLHK/SETJEN/KUM.1/7/2020 tentang Indeks Standar Pencemar Udara,
Lampiran (tabel "Konversi nilai konsentrasi parameter ISPU" and the categories);
it replaced Kep-45/MENLH/1997. Cross-checked against secondary summaries:
likein.id "Menghitung Kualitas Udara Kota Palu dengan ISPU" (the Baik row: PM10
50, PM2.5 15.5, SO2 52, CO 4000, O3 120, NO2 80, HC 45 ug/m3) and
ditppu.menlhk.go.id "ISPU sebagai informasi mutu udara ambien di Indonesia"
(seven parameters, five categories).

Formula (Lampiran): I = (Ia - Ib) / (Xa - Xb) * (Xx - Xb) + Ib with Ia/Ib the upper/
lower ISPU bound and Xa/Xb the upper/lower concentration bound of the segment
containing the measured concentration Xx (ug/m3, 25 C / 1 atm for gases).

Averaging period (24 h for all seven parameters) and data completeness (75 %: 18 of 24 hourly
means, adopted, the regulation text we could read states none): kotacerdas/standards.py
``ISPU_AVERAGING_S`` and ``INDEX_COMPLETENESS``, with what was verified in the regulation and
what was not. An index from fewer hours is still published, flagged ``provisional`` with its
number of hours and readings.
Categories: 0-50 Baik, 51-100 Sedang, 101-200 Tidak Sehat, 201-300 Sangat Tidak Sehat,
>= 301 Berbahaya (kotacerdas/standards.py).
"""

from __future__ import annotations

import numpy as np

from analytics.averaging import PeriodMean, period_mean
from analytics.breakpoints import Table, category_level, round_half_up
from kotacerdas.standards import ISPU_AVERAGING_S, ISPU_BANDS, upper_bounds

_INDEX = (0.0, 50.0, 100.0, 200.0, 300.0, 500.0)


def _table(conc: tuple[float, ...]) -> Table:
    # ISPU segments share their end points (the next segment starts where the last ended)
    return Table(conc[:-1], conc[1:], _INDEX[:-1], _INDEX[1:])


# P.14/2020 Lampiran, concentration in ug/m3 at the ISPU bounds 0, 50, 100, 200, 300, 500
TABLES: dict[str, Table] = {
    "pm10": _table((0.0, 50.0, 150.0, 350.0, 420.0, 500.0)),
    "pm25": _table((0.0, 15.5, 55.4, 150.4, 250.4, 500.0)),
    "so2": _table((0.0, 52.0, 180.0, 400.0, 800.0, 1200.0)),
    "co": _table((0.0, 4000.0, 8000.0, 15000.0, 30000.0, 45000.0)),
    "o3": _table((0.0, 120.0, 235.0, 400.0, 800.0, 1000.0)),
    "no2": _table((0.0, 80.0, 200.0, 1130.0, 2260.0, 3000.0)),
    "hc": _table((0.0, 45.0, 100.0, 215.0, 432.0, 648.0)),
}

# averaging period per parameter, seconds (the cited table: kotacerdas/standards.py)
AVERAGING_S: dict[str, int] = {p: ISPU_AVERAGING_S[p] for p in TABLES}

CATEGORIES = tuple(b.label for b in ISPU_BANDS)
CATEGORIES_EN = tuple(b.label_en for b in ISPU_BANDS)
_UPPER = upper_bounds(ISPU_BANDS)


def index(pollutant: str, conc_ugm3: np.ndarray) -> np.ndarray:
    """ISPU sub-index (integer-valued float, NaN where conc is NaN/negative) of averaged concentrations (ug/m3)."""
    return round_half_up(TABLES[pollutant].index(conc_ugm3))


def level(ispu: np.ndarray) -> np.ndarray:
    """Category level 1 (Baik) .. 5 (Berbahaya); 0 for NaN."""
    return category_level(ispu, _UPPER)


def category(lvl: int) -> str:
    return CATEGORIES[int(lvl) - 1] if 1 <= int(lvl) <= 5 else ""


def averaged(pollutant: str, x: np.ndarray, step_s: float) -> PeriodMean:
    """The regulation's average of readings ``x`` (S, T) on a ``step_s`` grid, at every time step:
    mean of the valid hourly means of the trailing averaging period, with completeness counts.
    The service reads the last column; the evaluation harness the whole series."""
    return period_mean(x, step_s, AVERAGING_S[pollutant])
