"""Thresholds and colours the dashboards take from standards, each with its source.

The numeric computations (ISPU sub-indices, water limits) live in analytics; the
dashboards only need the category boundaries of the index value and the colours
the regulation prescribes for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    level: int
    label: str
    lower: float | None  # lowest index value of the band (None = from -inf)
    color: str


# ISPU categories (Permen LHK No. P.14/MENLHK/SETJEN/KUM.1/7/2020 tentang Indeks
# Standar Pencemar Udara, Lampiran: ranges 0-50 Baik, 51-100 Sedang, 101-200 Tidak Sehat,
# 201-300 Sangat Tidak Sehat, >300 Berbahaya; colour codes hijau, biru, kuning, merah,
# hitam). The ranges are restated e.g. by voi.id/berita/305546 and detik.com d-6877417;
# the colours as the KLHK ISPU portal shows them (green/blue/yellow) e.g. prokal.co
# 2024-11-17 "Samarinda puncaki daftar kota berudara bersih". Some press articles use
# the US AQI palette (yellow/orange) for ISPU; that is the US scheme, not the regulation's.
ISPU_BANDS: tuple[Band, ...] = (
    Band(1, "Baik", None, "green"),
    Band(2, "Sedang", 51, "blue"),
    Band(3, "Tidak Sehat", 101, "yellow"),
    Band(4, "Sangat Tidak Sehat", 201, "red"),
    Band(5, "Berbahaya", 301, "#000000"),
)

# US EPA AQI categories (EPA-454/B-18-007 "Technical Assistance Document for the
# Reporting of Daily Air Quality - the AQI", Table 1/Table 2: 0-50 Good green,
# 51-100 Moderate yellow, 101-150 USG orange, 151-200 Unhealthy red,
# 201-300 Very Unhealthy purple, 301+ Hazardous maroon).
AQI_US_BANDS: tuple[Band, ...] = (
    Band(1, "Good", None, "green"),
    Band(2, "Moderate", 51, "yellow"),
    Band(3, "Unhealthy for Sensitive Groups", 101, "orange"),
    Band(4, "Unhealthy", 151, "red"),
    Band(5, "Very Unhealthy", 201, "purple"),
    Band(6, "Hazardous", 301, "#7e0023"),
)

# QARTOD flag values (IOOS "Manual for Real-Time Quality Control", flag scheme:
# 1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing).
QARTOD_FLAGS: tuple[tuple[int, str, str], ...] = (
    (1, "good", "green"),
    (2, "not evaluated", "text"),
    (3, "suspect", "orange"),
    (4, "fail", "red"),
    (9, "missing", "purple"),
)

# Drinking-water limits, Permenkes RI No. 2 Tahun 2023 (Lampiran, SBMKL media air minum,
# parameter wajib): pH 6.5-8.5 (inclusive); kekeruhan < 3 NTU; TDS < 300 mg/L; sisa klor
# 0.2-0.5 mg/L. (lo, hi, hi_inclusive). Analytics owns the compliance computation and writes
# the limits it applied into `water_compliance` (limit_lo/limit_hi); the real-pipeline test
# checks these panels' lines against those. Earlier Permenkes 492/2010 values (TDS 500, 5 NTU)
# must not be used.
WATER_LIMITS: dict[str, tuple[float | None, float, bool]] = {
    "ph": (6.5, 8.5, True),
    "turbidity": (None, 3.0, False),
    "tds": (None, 300.0, False),
    "chlorine": (0.2, 0.5, True),
}
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


def category_of(bands: tuple[Band, ...], value: float) -> Band:
    out = bands[0]
    for b in bands:
        if b.lower is not None and value >= b.lower:
            out = b
    return out
