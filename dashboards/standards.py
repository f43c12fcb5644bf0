"""Thresholds and colours the dashboards take from standards, each with its source.

The numeric computations (ISPU sub-indices, water limits) live in analytics; the
dashboards only need the category boundaries of the index value and the colours
the regulation prescribes for them.
"""

from __future__ import annotations

from kotacerdas.standards import (
    AQI_US_BANDS,
    BATTERY_EMPTY_V,
    BATTERY_LOW_V,
    BIN_FILL_DUE,
    BIN_FILL_WARN,
    ISPU_BANDS,
    QARTOD_FLAGS,
    Band,
    band_of,
)
from kotacerdas.standards import WATER_LIMITS as _WATER

__all__ = ["AQI_US_BANDS", "BATTERY_EMPTY_V", "BATTERY_LOW_V", "BIN_FILL_DUE", "BIN_FILL_WARN", "ISPU_BANDS",
           "QARTOD_FLAGS", "WATER_LIMITS", "Band", "category_of", "level_mappings", "text_mappings",
           "threshold_steps", "water_limit_steps"]


# ISPU (P.14/2020) and US AQI (EPA-454/B-24-002) bands: cited in kotacerdas/standards.py
category_of = band_of


# QARTOD flags and the operational thresholds (bin fill, battery) are cited in kotacerdas/standards.py.

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
