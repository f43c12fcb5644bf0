"""Thresholds and colours the dashboards take from standards, each with its source.

The numeric computations (ISPU sub-indices, water limits) live in analytics; the
dashboards only need the category boundaries of the index value and the colours
the regulation prescribes for them.
"""

from __future__ import annotations

from kotacerdas.standards import AQI_US_BANDS, ISPU_BANDS, Band, band_of
from kotacerdas.standards import WATER_LIMITS as _WATER

__all__ = ["AQI_US_BANDS", "ISPU_BANDS", "Band", "WATER_LIMITS", "category_of", "threshold_steps", "level_mappings",
           "text_mappings", "water_limit_steps"]


# ISPU (P.14/2020) and US AQI (EPA-454/B-24-002) bands: cited in kotacerdas/standards.py
category_of = band_of


# QARTOD flag values (IOOS "Manual for Real-Time Quality Control", flag scheme:
# 1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing).
QARTOD_FLAGS: tuple[tuple[int, str, str], ...] = (
    (1, "good", "green"),
    (2, "not evaluated", "text"),
    (3, "suspect", "orange"),
    (4, "fail", "red"),
    (9, "missing", "purple"),
)

# Drinking-water limits (Permenkes 2/2023, cited in kotacerdas/standards.py) as
# (lo, hi, hi_inclusive). Analytics writes the limits it applied into `water_compliance`
# (limit_lo/limit_hi); the real-pipeline test checks these panels' lines against those.
WATER_LIMITS: dict[str, tuple[float | None, float, bool]] = {
    p: (lim.lo, lim.hi, lim.hi_inclusive) for p, lim in _WATER.items()}
# Grafana thresholds are ">= value": an inclusive upper limit turns red just above it
_ABOVE = 1e-6


def water_limit_steps(parameter: str) -> list[dict] | None:
    if parameter not in WATER_LIMITS:
        return None
    lo, hi, hi_inclusive = WATER_LIMITS[parameter]
    steps: list[dict] = [{"color": "red" if lo is not None else "green", "value": None}]
    if lo is not None:
        steps.append({"color": "green", "value": lo})
    steps.append({"color": "red", "value": hi + _ABOVE if hi_inclusive else hi})
    return steps


# Operational (not regulatory) thresholds: a bin is due for collection at 80 % fill,
# a Li-ion cell is low below 3.5 V and empty at 3.3 V (single-cell discharge curve).
BIN_FILL_WARN = 60.0
BIN_FILL_DUE = 80.0
BATTERY_LOW_V = 3.5
BATTERY_EMPTY_V = 3.3


def threshold_steps(bands: tuple[Band, ...]) -> list[dict]:
    """Grafana absolute threshold steps (the first step's value is null = -inf)."""
    return [{"color": b.color, "value": b.lower} for b in bands]


def level_mappings(bands: tuple[Band, ...]) -> list[dict]:
    """Value mappings: category_level -> label and colour."""
    return [{"type": "value", "options": {str(b.level): {"text": b.label, "color": b.color, "index": i}}}
            for i, b in enumerate(bands)]


def text_mappings(bands: tuple[Band, ...]) -> list[dict]:
    """Value mappings: category string -> colour (for table cells showing the category)."""
    return [{"type": "value", "options": {b.label: {"color": b.color, "index": i}}} for i, b in enumerate(bands)]
