"""US EPA Air Quality Index with the 2024 PM2.5 breakpoints.

Sources: US EPA, "Technical Assistance Document for the Reporting of Daily Air
Quality - the Air Quality Index (AQI)" (EPA-454/B-24-002, May 2024), Table 6
(breakpoints) and section "Calculating the AQI" (truncation rules, equation 1);
the 2024 PM NAAQS final rule (89 FR 16202, 6 March 2024) revised the PM2.5 rows:
0.0-9.0 Good, 9.1-35.4 Moderate, 35.5-55.4 USG, 55.5-125.4 Unhealthy,
125.5-225.4 Very Unhealthy, 225.5+ Hazardous (upper end 325.4 -> AQI 500; see
also airgradienthq/arduino PR #208 quoting EPA's 2024 AQI fact sheet). Hazardous
is one 301-500 row for every pollutant since that revision.

Equation 1: I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo, C truncated
first (PM2.5 to 0.1 ug/m3, PM10 to 1 ug/m3, O3 to 0.001 ppm, CO to 0.1 ppm,
NO2/SO2 to 1 ppb), the index rounded to the nearest integer.

Units: the catalogue stores NO2, O3 and CO in ug/m3; EPA tables use ppb/ppm.
Conversion at 25 C and 1 atm (molar volume 24.45 L): ppb = ug/m3 * 24.45 / M.
"""

from __future__ import annotations

import numpy as np

from analytics.averaging import PeriodMean, period_mean
from analytics.breakpoints import Table, category_level, round_half_up
from kotacerdas.standards import AQI_US_BANDS, upper_bounds

_I_LO = (0.0, 51.0, 101.0, 151.0, 201.0, 301.0)
_I_HI = (50.0, 100.0, 150.0, 200.0, 300.0, 500.0)


def _t(lo: tuple[float, ...], hi: tuple[float, ...], i_lo=_I_LO, i_hi=_I_HI) -> Table:
    return Table(lo, hi, i_lo[: len(lo)], i_hi[: len(lo)])


# EPA-454/B-24-002 Table 6; units: pm25/pm10 ug/m3, o3 ppm, co ppm, no2/so2 ppb
TABLES: dict[str, Table] = {
    "pm25": _t((0.0, 9.1, 35.5, 55.5, 125.5, 225.5), (9.0, 35.4, 55.4, 125.4, 225.4, 325.4)),
    "pm10": _t((0.0, 55.0, 155.0, 255.0, 355.0, 425.0), (54.0, 154.0, 254.0, 354.0, 424.0, 604.0)),
    # 8-hour ozone defines the index up to 300 (0.201+ ppm must use 1-hour ozone)
    "o3": _t((0.0, 0.055, 0.071, 0.086, 0.106), (0.054, 0.070, 0.085, 0.105, 0.200)),
    "co": _t((0.0, 4.5, 9.5, 12.5, 15.5, 30.5), (4.4, 9.4, 12.4, 15.4, 30.4, 50.4)),
    "no2": _t((0.0, 54.0, 101.0, 361.0, 650.0, 1250.0), (53.0, 100.0, 360.0, 649.0, 1249.0, 2049.0)),
    "so2": _t((0.0, 36.0, 76.0, 186.0, 305.0, 605.0), (35.0, 75.0, 185.0, 304.0, 604.0, 1004.0)),
}

# 1-hour ozone (TAD 2024 Table 6, footnotes 1-2: 8-hour O3 does not define AQI values of 301 or
# higher; those are calculated from 1-hour O3, and in some areas the 1-hour index is reported when
# it is the higher one). ppm; no 1-hour index below 0.125 ppm.
O3_1H = Table((0.125, 0.165, 0.205, 0.405), (0.164, 0.204, 0.404, 0.604), (101.0, 151.0, 201.0, 301.0),
              (150.0, 200.0, 300.0, 500.0))

# truncation step of the concentration before lookup (same units as TABLES)
TRUNCATE: dict[str, float] = {"pm25": 0.1, "pm10": 1.0, "o3": 0.001, "co": 0.1, "no2": 1.0, "so2": 1.0}

# averaging period, seconds (TAD 2024: PM 24-hour, O3 8-hour, CO 8-hour, NO2/SO2 1-hour)
AVERAGING_S: dict[str, int] = {"pm25": 24 * 3600, "pm10": 24 * 3600, "o3": 8 * 3600, "co": 8 * 3600,
                               "no2": 3600, "so2": 3600}

MOLAR_VOLUME_25C = 24.45  # L/mol at 25 C, 1 atm
MOLAR_MASS = {"no2": 46.0055, "o3": 47.9982, "co": 28.0101, "so2": 64.066}
# catalogue (ug/m3) -> EPA table unit
TO_TABLE_UNIT: dict[str, float] = {
    "pm25": 1.0,
    "pm10": 1.0,
    "no2": MOLAR_VOLUME_25C / MOLAR_MASS["no2"],  # ug/m3 -> ppb
    "so2": MOLAR_VOLUME_25C / MOLAR_MASS["so2"],  # ug/m3 -> ppb
    "o3": MOLAR_VOLUME_25C / MOLAR_MASS["o3"] / 1000.0,  # ug/m3 -> ppm
    "co": MOLAR_VOLUME_25C / MOLAR_MASS["co"] / 1000.0,  # ug/m3 -> ppm
}

CATEGORIES = tuple(b.label for b in AQI_US_BANDS)
_UPPER = upper_bounds(AQI_US_BANDS)


def truncate(pollutant: str, conc: np.ndarray) -> np.ndarray:
    step = TRUNCATE[pollutant]
    # the small epsilon keeps 35.4 (stored as 35.39999...) from truncating to 35.3
    return np.floor(np.asarray(conc, dtype=np.float64) / step + 1e-9) * step


def index_table_units(pollutant: str, conc: np.ndarray) -> np.ndarray:
    """AQI from concentrations already in the EPA table's unit (ppb/ppm/ug/m3)."""
    return round_half_up(TABLES[pollutant].index(truncate(pollutant, conc)))


def index(pollutant: str, conc_ugm3: np.ndarray) -> np.ndarray:
    """AQI sub-index from averaged concentrations in ug/m3 (the catalogue's unit)."""
    return index_table_units(pollutant, np.asarray(conc_ugm3, dtype=np.float64) * TO_TABLE_UNIT[pollutant])


def level(aqi: np.ndarray) -> np.ndarray:
    """Category level 1 (Good) .. 6 (Hazardous); 0 for NaN."""
    return category_level(aqi, _UPPER)


def category(lvl: int) -> str:
    return CATEGORIES[int(lvl) - 1] if 1 <= int(lvl) <= 6 else ""


def averaged(pollutant: str, x: np.ndarray, step_s: float) -> PeriodMean:
    """The TAD's average of readings ``x`` (S, T) at every time step, with completeness (analytics/averaging.py)."""
    return period_mean(x, step_s, AVERAGING_S[pollutant])


def o3_index(conc_8h_ugm3: np.ndarray, conc_1h_ugm3: np.ndarray) -> np.ndarray:
    """Ozone AQI: the 8-hour index, or the 1-hour index where that is higher (which is the only
    one defined above 300: 8-hour ozone above 0.200 ppm has no AQI row)."""
    i8 = index("o3", conc_8h_ugm3)
    c1 = truncate("o3", np.asarray(conc_1h_ugm3, dtype=np.float64) * TO_TABLE_UNIT["o3"])
    with np.errstate(invalid="ignore"):
        i1 = np.where(c1 >= O3_1H.c_lo[0], round_half_up(O3_1H.index(c1)), np.nan)
    return np.fmax(i8, i1)
