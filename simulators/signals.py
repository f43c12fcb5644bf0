"""Vectorised sensor signals: numpy arrays shaped (devices, time) per catalogue field.

Signals are closed-form functions of absolute time plus seeded noise, so a fleet
can be generated chunk by chunk (bounded memory) and any single instant can be
re-evaluated (a stuck sensor holds the value it had when it stuck).

Shapes of the day for a Jakarta-area city (Depok, WIB = UTC+7); the magnitudes
are plausible, not fitted:
- PM2.5 follows a monthly climatology for Depok (PM25_MONTHLY: annual mean ~41 ug/m3,
  dry-season months 50-57, wet-season months 17-24), builds up at night in the shallow
  boundary layer, adds the morning/evening rush, dips in the mixed afternoon, is lower on
  weekends and washed out by rain; the day's shape is normalised so the monthly means hold;
- NO2, CO and CO2 follow the traffic rush hours; ozone is photochemical (midday peak);
- rain events cluster in wet-season afternoons; they cool the air, but do NOT reach the
  treated-water network: its turbidity, TDS and chlorine stay inside the Permenkes 2/2023
  limits (kotacerdas/standards.py) with margin, so every non-compliance in a simulated
  network is an injected, labelled fault;
- waste bins fill at their site's rate (BIN_SITES: household ~8 %/day, communal ~55 %/day,
  market 60-150 %/day) and are emptied on the site's collection round.
The monthly means, diurnal shape and fill rates are the project's requested demo/test
figures (issue 16), plausible for the Jabodetabek area, not fitted to a measurement series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kotacerdas.catalogue import INDEX_FAMILIES, Field, Kind
from kotacerdas.derived import DERIVATIONS
from kotacerdas.standards import WATER_LIMITS

from simulators.fleet import SITE_TYPES, KindFleet

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TWO_PI = 2.0 * np.pi

# Fill rate (% of the bin per day: median, and the [lo, hi] the per-bin spread is clipped to) and
# collection round per site type: (period h, first collection hour, local time).
BIN_SITES = {
    "market": {"fill_per_day": 100.0, "lo": 60.0, "hi": 150.0, "period_h": 24.0, "first_h": 6.0},
    "household": {"fill_per_day": 8.0, "lo": 5.0, "hi": 12.0, "period_h": 84.0, "first_h": 7.0},
    "communal": {"fill_per_day": 55.0, "lo": 40.0, "hi": 75.0, "period_h": 48.0, "first_h": 8.0},
}

# PM2.5 monthly means for Depok, ug/m3, January..December (see the module docstring)
PM25_MONTHLY = (18.0, 17.0, 28.0, 42.0, 50.0, 52.0, 56.0, 57.0, 54.0, 50.0, 38.0, 24.0)
BIN_DEPTH_CM = 110.0          # from the sensor to the bottom of an empty bin, beyond the blind zone
BIN_BLIND_CM = 20.0           # JSN-SR04T blind zone (catalogue range lower bound)


@dataclass
class Clock:
    """Local-time views of a (devices, time) array of epoch milliseconds."""

    hour: np.ndarray        # local hour of day, float
    weekend: np.ndarray     # bool
    doy: np.ndarray         # day of year, float
    t_ms: np.ndarray

    @classmethod
    def of(cls, t_ms: np.ndarray, utc_offset_h: float) -> "Clock":
        local = t_ms.astype(np.float64) + utc_offset_h * HOUR_MS
        hour = (local / HOUR_MS) % 24.0
        days = np.floor(local / DAY_MS)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        doy = (local / DAY_MS) % 365.2425
        return cls(hour=hour, weekend=weekday >= 5, doy=doy, t_ms=t_ms)


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # wrap around midnight
    return np.exp(-0.5 * (d / width) ** 2)


def rush(hour: np.ndarray) -> np.ndarray:
    return 0.9 * _bump(hour, 7.5, 1.3) + 0.75 * _bump(hour, 18.5, 1.6)


def pm25_climatology(doy: np.ndarray) -> np.ndarray:
    """Monthly mean PM2.5 (ug/m3) interpolated smoothly between mid-months (periodic over the year)."""
    mid = (np.arange(12) + 0.5) * 365.2425 / 12
    x = np.concatenate([mid - 365.2425, mid, mid + 365.2425])
    y = np.tile(np.array(PM25_MONTHLY), 3)
    return np.interp(np.asarray(doy, dtype=np.float64), x, y)


def _pm_shape(hour: np.ndarray) -> np.ndarray:
    # night build-up under the shallow boundary layer (peak ~01:00), the rush hours, the mixed afternoon
    return 0.8 + 0.55 * _bump(hour, 1.0, 3.5) + 0.35 * rush(hour) - 0.35 * _bump(hour, 14.5, 2.5)


_PM_SHAPE_MEAN = float(_pm_shape(np.arange(0, 24, 0.05)).mean())
WEEKEND_FACTOR = 0.85  # traffic and PM on Saturday / Sunday against a weekday (the weekly dip)
_WEEK_MEAN = (5 + 2 * WEEKEND_FACTOR) / 7  # weekend factor's weekly mean


def dry_season(doy: np.ndarray) -> np.ndarray:
    """1 at the height of the dry season (~mid August), 0 in the wet season (~mid February)."""
    return 0.5 + 0.5 * np.cos(TWO_PI * (doy - 227.0) / 365.2425)


class Weather:
    """City-wide rain events drawn once per scenario from its seed."""

    def __init__(self, seed: int, start_ms: int, end_ms: int, utc_offset_h: float):
        rng = np.random.default_rng([seed, 7177])
        days = int(np.ceil((end_ms - start_ms + 2 * DAY_MS) / DAY_MS)) + 1
        starts, durs, peaks = [], [], []
        day0 = (start_ms // DAY_MS - 1) * DAY_MS
        for d in range(days):
            day_ms = day0 + d * DAY_MS
            doy = ((day_ms + utc_offset_h * HOUR_MS) / DAY_MS) % 365.2425
            wet = 1.0 - float(dry_season(np.array(doy)))
            # ~1 storm a day in the wet season, one every ~6 days in the dry season
            for _ in range(rng.poisson(0.15 + 0.85 * wet)):
                local_h = float(np.clip(rng.normal(15.5, 2.5), 0, 23.5))
                starts.append(day_ms + (local_h - utc_offset_h) * HOUR_MS)
                durs.append(rng.uniform(0.5, 3.0) * HOUR_MS)
                peaks.append(rng.uniform(0.3, 1.0))
        self.starts = np.array(starts, dtype=np.float64)
        self.durs = np.array(durs, dtype=np.float64)
        self.peaks = np.array(peaks, dtype=np.float64)

    def rain(self, t_ms: np.ndarray) -> np.ndarray:
        """Rain intensity 0..1 at each time (a smooth bump per event)."""
        out = np.zeros(t_ms.shape, dtype=np.float64)
        tf = t_ms.astype(np.float64)
        for s, d, p in zip(self.starts, self.durs, self.peaks):  # a handful of events per day, not per device
            x = (tf - s) / d
            inside = (x > 0) & (x < 1)
            if inside.any():
                out += np.where(inside, p * np.sin(np.pi * np.clip(x, 0, 1)), 0.0)
        return np.minimum(out, 1.0)


Model = Callable[[KindFleet, Clock, "Weather", Callable[[str], np.ndarray], Kind], dict[str, np.ndarray]]


def _air(f: KindFleet, c: Clock, w: Weather, noise: Callable[[str], np.ndarray], kind: Kind) -> dict[str, np.ndarray]:
    lv = f.level[:, None]
    r = rush(c.hour)
    wk = np.where(c.weekend, WEEKEND_FACTOR, 1.0)
    rain = w.rain(c.t_ms)
    typ = {fl.name: fl.typical for fl in kind.fields}
    out: dict[str, np.ndarray] = {}
    traffic = (0.55 + 0.9 * r) * wk
    shape = _pm_shape(c.hour) / _PM_SHAPE_MEAN * wk / _WEEK_MEAN
    pm25 = pm25_climatology(c.doy) * lv * shape * (1.0 - 0.6 * rain)
    out["pm25"] = pm25 * (1.0 + 0.08 * noise("pm25"))
    out["pm10"] = pm25 * 1.6 * (1.0 + 0.08 * noise("pm10"))
    out["no2"] = typ.get("no2", 40.0) * lv * (0.45 + 1.0 * r) * wk * (1.0 + 0.1 * noise("no2"))
    out["co"] = typ.get("co", 1500.0) * lv * (0.5 + 0.9 * r) * wk * (1.0 + 0.08 * noise("co"))
    out["co2"] = 415.0 + (typ.get("co2", 450.0) - 415.0) * 2.0 * lv * traffic + 4.0 * noise("co2")
    o3_sun = _bump(c.hour, 13.5, 2.5)
    out["o3"] = typ.get("o3", 60.0) * (0.25 + 1.3 * o3_sun) * (1.0 - 0.5 * rain) * (1.0 + 0.1 * noise("o3"))
    t_air = typ.get("temperature", 29.0) + 4.0 * np.cos(TWO_PI * (c.hour - 14.0) / 24.0) - 3.0 * rain
    out["temperature"] = t_air + 0.3 * noise("temperature")
    out["humidity"] = typ.get("humidity", 75.0) - 14.0 * np.cos(TWO_PI * (c.hour - 14.0) / 24.0) + 18.0 * rain \
        + 2.0 * noise("humidity")
    return out


def _water(f: KindFleet, c: Clock, w: Weather, noise: Callable[[str], np.ndarray], kind: Kind) -> dict[str, np.ndarray]:
    lv = f.level[:, None]
    typ = {fl.name: fl.typical for fl in kind.fields}
    day = np.cos(TWO_PI * (c.hour - 15.0) / 24.0)
    # treated, piped water: rain does not reach it (no runoff term); each site's level is kept
    # inside the drinking-water limits with margin, so only injected faults breach them
    lim = WATER_LIMITS
    temp = typ.get("temperature", 27.0) + 1.2 * day + 0.1 * noise("temperature")
    site_ph = np.clip((lv - 1.0) * 0.6, -0.4, 0.4)
    turb = np.clip(typ.get("turbidity", 2.0) * 0.5 * lv, 0.3, 0.5 * lim["turbidity"].hi)
    out = {
        "temperature": temp,
        "ph": typ.get("ph", 7.2) + site_ph + 0.08 * day + 0.03 * noise("ph"),
        "turbidity": turb * (1.0 + 0.05 * noise("turbidity")),
    }
    tds = np.clip(typ.get("tds", 180.0) * lv, 60.0, 0.75 * lim["tds"].hi) * (1.0 + 0.02 * noise("tds"))
    out["tds"] = tds  # conductivity is derived from it by generate(), as the firmware derives it
    # saturation DO falls with temperature (~7.9 mg/L at 28 C); daytime photosynthesis adds a little
    out["dissolved_oxygen"] = (14.6 - 0.24 * temp) * 0.97 + 0.3 * day + 0.08 * noise("dissolved_oxygen")
    cl_lo, cl_hi = lim["chlorine"].lo or 0.0, lim["chlorine"].hi
    cl = np.clip(typ.get("chlorine", 0.4) * lv, cl_lo + 0.25 * (cl_hi - cl_lo), cl_hi - 0.25 * (cl_hi - cl_lo))
    out["chlorine"] = cl * (0.97 + 0.03 * day) * (1.0 + 0.02 * noise("chlorine"))
    return out


def bin_fill(f: KindFleet, c: Clock) -> np.ndarray:
    """Fill % from the hours since the site's last collection (closed form, no state)."""
    rate = np.empty(f.n)
    period = np.empty(f.n)
    first = np.empty(f.n)
    for i, s in enumerate(SITE_TYPES):  # three site types, not per device
        m = f.site == i
        b = BIN_SITES[s]
        rate[m] = np.clip(b["fill_per_day"] * f.level[m], b["lo"], b["hi"]) / 24.0  # % per hour
        period[m] = b["period_h"]
        first[m] = b["first_h"]
    # bins of the same site type are collected in rounds, not all at once: stagger by phase
    stagger = (f.phase_ms % 3_600_000) / 3_600_000 * 2.0
    hours = c.t_ms.astype(np.float64) / HOUR_MS + 7.0  # local hours since epoch (WIB)
    since = (hours - first[:, None] - stagger[:, None]) % period[:, None]
    return np.clip(rate[:, None] * since + 3.0, 0.0, 100.0)


def _bin(f: KindFleet, c: Clock, w: Weather, noise: Callable[[str], np.ndarray], kind: Kind) -> dict[str, np.ndarray]:
    typ = {fl.name: fl.typical for fl in kind.fields}
    fill = bin_fill(f, c)
    distance = BIN_BLIND_CM + BIN_DEPTH_CM * (1.0 - fill / 100.0) + 0.8 * noise("distance")
    rain = w.rain(c.t_ms)
    return {  # the fill the device reports is derived from the distance by generate(), as the firmware does
        "distance": distance,
        "tilt": np.zeros(c.t_ms.shape),
        "temperature": typ.get("temperature", 30.0) + 4.0 * np.cos(TWO_PI * (c.hour - 14.0) / 24.0)
        + 2.0 * fill / 100.0 - 2.5 * rain + 0.3 * noise("temperature"),
    }


# The physical model behind a kind, by what the catalogue says the kind is (never by its name): urban
# air whose pollutants an index is computed from, treated water held to regulated limits, a container
# with a fill level. A kind none of these fit gets the generic signal (typical value and noise).
# every index family is computed from urban air pollutants: the one air model serves them all
MODELS_BY_INDEX: dict[str, Model] = dict.fromkeys(INDEX_FAMILIES, _air)
MODELS_BY_LIMITS: dict[str, Model] = {"drinking_water": _water}


def model_of(kind: Kind) -> Model | None:
    if kind.index:
        return MODELS_BY_INDEX[kind.index]
    if kind.limits:
        return MODELS_BY_LIMITS[kind.limits]
    return _bin if kind.fill_level else None


def generate(
    kind: Kind, fleet: KindFleet, t_ms: np.ndarray, weather: Weather, utc_offset_h: float,
    rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """Raw (unquantised) values for every catalogue field of ``kind``, shaped like ``t_ms``.

    ``rng=None`` gives the noise-free signal (used to evaluate a stuck sensor's value).
    """
    shape = t_ms.shape

    def noise(_name: str) -> np.ndarray:
        return rng.standard_normal(shape) if rng is not None else np.zeros(shape)

    c = Clock.of(t_ms, utc_offset_h)
    model = model_of(kind)
    values = model(fleet, c, weather, noise, kind) if model else {}
    out: dict[str, np.ndarray] = {}
    for fl in kind.fields:  # the catalogue decides the field list; unknown fields get a generic signal
        v = values.get(fl.name)
        if v is None:
            span = fl.expected_hi - fl.expected_lo
            v = fl.typical * fleet.level[:, None] + 0.02 * span * noise(fl.name)
        out[fl.name] = np.array(np.broadcast_to(v, shape), dtype=np.float64)  # writable: faults edit in place
    derive(kind, out)
    return out


# The simulated devices' geometry, passed to the catalogue's derivations (kotacerdas/derived.py):
# a bin's floor at BIN_BLIND_CM + BIN_DEPTH_CM from the sensor, its fill line at the blind zone.
DEVICE_GEOMETRY: dict[str, dict[str, float]] = {
    "fill_from_distance": {"depth_cm": BIN_BLIND_CM + BIN_DEPTH_CM, "full_cm": BIN_BLIND_CM},
}


def _derivation(f: Field) -> Callable[[np.ndarray], np.ndarray]:
    fn = DERIVATIONS[f.derivation]
    geometry = DEVICE_GEOMETRY.get(f.derivation, {})
    return lambda x: fn(x, **geometry)


def derive(kind: Kind, raw: dict[str, np.ndarray]) -> None:
    """Recompute, in place, every derived field of ``kind`` (catalogue ``derived_from``) from its
    measured source, exactly as the device does. ``raw``: field -> (devices, time) array."""
    for f in kind.derived():
        if f.derived_from in raw:
            raw[f.name] = _derivation(f)(raw[f.derived_from])


def carry_to_source(kind: Kind, raw: dict[str, np.ndarray], clean: dict[str, np.ndarray]) -> None:
    """Move every fault applied to a derived field onto the measured field it comes from, then
    re-derive it: a device cannot show a fill fault without the distance behind it.

    ``clean``: the same arrays before faults were applied. What faults did to the derived array
    is converted to source units at the source's typical value (the derivations are linear there)
    and added to the source, on top of the source's own faults (a board fault shifting both adds
    up there). Arrays are (devices, time).
    """
    for f in kind.derived():
        src = kind.field(f.derived_from)
        if f.name not in raw or src.name not in raw:
            continue
        conv = _derivation(f)
        extra = raw[f.name] - clean[f.name]
        if np.any(extra != 0.0):
            h = max(src.resolution, 1e-6 * abs(src.typical) or 1e-6)
            slope = float(conv(np.array(src.typical + h)) - conv(np.array(src.typical))) / h
            raw[src.name] = raw[src.name] + extra / slope
        raw[f.name] = conv(raw[src.name])


def battery(fleet: KindFleet, t_ms: np.ndarray, span_start_ms: int) -> np.ndarray:
    """Li-ion cell slowly discharging (solar top-up ignored): 4.15 V down ~0.02 V/day per device."""
    drain = 0.01 + 0.02 * (fleet.phase_ms % 1000) / 1000.0
    days = (t_ms - span_start_ms).astype(np.float64) / DAY_MS
    return np.clip(4.15 - 0.3 * fleet.level[:, None] * 0.1 - drain[:, None] * days, 3.3, 4.2)


def _decimals(res: float) -> int:
    text = repr(float(res))
    return len(text.split(".")[1].rstrip("0")) if "." in text and "e" not in text else 6


def quantise(fl: Field, v: np.ndarray, clip: bool = True) -> np.ndarray:
    """What the sensor would report: clipped to its physical range and rounded to its resolution."""
    if clip:
        v = np.clip(v, fl.lo, fl.hi)
    q = np.round(v / fl.resolution) * fl.resolution
    return np.round(q, _decimals(fl.resolution))
