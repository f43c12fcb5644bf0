"""Hard cases for the detectors: faults that real deployments show and normal behaviour that looks like one.

Labelled faults (each becomes labels, like :mod:`simulators.faults`):
- ``level_shift``: a step that stays until the end of the run (a sensor re-mounted, a new
  calibration, a fouled probe): detected at its onset, then the new level is the normal one;
- ``slow_drift``: a small drift over most of the run (0.05-0.15 of the expected span over
  60-90 % of it): slower than the ``drift`` fault, close to the noise per hour;
- ``correlated``: every eligible field of one device shifts at the same moment for a while
  (a power or grounding fault of the board, a flooded enclosure): one label per field.
- ``night_at_day_level``: through one local night (22:00-05:00) a field with a daily cycle
  (temperature, humidity, ozone) reads the level it had 12 hours earlier, in the afternoon (a
  sensor clock 12 h off, a heater or a sun-lit housing): every value is normal for some hour of
  the day, only not for this one; at least 8 days into the run (a seasonal test's warm-up);
- ``no_weekly_dip``: through one local weekend day a traffic pollutant (PM2.5, NO2, CO) stays at
  its weekday level (the weekend factor undone: a mislabelled day, a diversion route); at least
  two weeks into the run (an hour-of-week baseline needs two earlier weeks).

Unlabelled nuisances (normal behaviour an alarm on which is a false alarm):
- ``burst``: a short burst of a pollutant at one station (a truck idling, a fire lit next to
  the sensor: 2-8 samples at 2-5x the level), the bursty, heavy-tailed side of air data;
- ``quantised_flat``: the true value of a slow field (water temperature, pH) stands still for
  30-90 minutes, so the quantised reading repeats exactly: a flat line that is no fault.

Planned from the scenario's ``[faults]`` counts, with the run's seed, in
:func:`simulators.faults.plan_faults`; applied to the (devices, slots) value arrays by
:func:`apply` in the stream generator.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kotacerdas.catalogue import Catalogue

LABELLED = ("level_shift", "slow_drift", "correlated", "night_at_day_level", "no_weekly_dip")
NUISANCES = ("burst", "quantised_flat")
TYPES = LABELLED + NUISANCES

BURST_FIELDS = ("pm25", "pm10", "no2", "co")
SLOW_FIELDS = ("temperature", "ph", "conductivity", "tds")
DAILY_FIELDS = ("temperature", "humidity", "o3")  # the simulator's strongest daily cycles (signals.py)
WEEKLY_FIELDS = ("pm25", "no2", "co")  # the fields its weekend factor lowers
NIGHT_H = (22.0, 7.0)  # local start hour, hours
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _local_days(rng: np.random.Generator, start_ms: int, end_ms: int, utc_offset_h: float, first_day: int,
                weekend: bool) -> int | None:
    """Start (UTC ms) of a random local day at least ``first_day`` whole days after ``start_ms`` that ends,
    with the night after it, before ``end_ms`` (a weekend day if ``weekend``); None when the run has none."""
    off = int(utc_offset_h * HOUR_MS)
    d0 = (start_ms + off) // DAY_MS + first_day + 1  # local day numbers (days since 1970-01-01 local)
    d1 = (end_ms + off) // DAY_MS - 2
    days = [d for d in range(d0, d1 + 1) if not weekend or (d + 3) % 7 >= 5]  # 1970-01-01 was a Thursday
    if not days:
        return None
    return int(days[int(rng.integers(len(days)))] * DAY_MS - off)


def plan(ftype: str, rng: np.random.Generator, cat: Catalogue, kinds: list[str], fleets: dict,
         window: Callable, start_ms: int, end_ms: int, fault_cls: type, label_cls: type,
         utc_offset_h: float = 7.0, taken: set | None = None) -> Any:
    """One planned event of ``ftype`` (a :class:`simulators.faults.Fault`), or None when no device fits.

    ``window(fl, row, lo_frac, hi_frac, min_slots)`` -> (k0, k1, t0, t1): the fault plan's window picker.
    ``taken``: (type, kind, row, field, start) of the seasonal cases planned so far in this run; one is
    never planned twice (the weekend factor would be undone twice), up to 20 draws.
    """
    if ftype in ("night_at_day_level", "no_weekly_dip") and taken is not None:
        for _ in range(20):
            f = plan(ftype, rng, cat, kinds, fleets, window, start_ms, end_ms, fault_cls, label_cls, utc_offset_h)
            key = None if f is None else (ftype, f.kind, f.row, f.field, f.start)
            if key is None or key not in taken:
                if key is not None:
                    taken.add(key)
                return f
        return None
    eligible = {k: [f.name for f in cat[k].fields if f.expected_hi > f.expected_lo] for k in kinds}
    if ftype == "burst":
        kinds = [k for k in kinds if any(n in BURST_FIELDS for n in eligible[k])]
    elif ftype in ("night_at_day_level", "no_weekly_dip"):
        want = DAILY_FIELDS if ftype == "night_at_day_level" else WEEKLY_FIELDS
        kinds = [k for k in kinds if any(n in want for n in eligible[k]) and not cat[k].fill_level]
    elif ftype == "quantised_flat":
        # containers (a catalogue fill level) sit flat for hours anyway; analytics tolerates that per kind
        kinds = [k for k in kinds if any(n in SLOW_FIELDS for n in eligible[k]) and not cat[k].fill_level]
    if not kinds:
        return None
    kind = kinds[int(rng.integers(len(kinds)))]
    fl = fleets[kind]
    row = int(rng.integers(fl.n))
    names = eligible[kind]
    sign = 1.0 if rng.random() < 0.6 else -1.0

    def espan(name: str) -> float:
        f = cat[kind].field(name)
        return f.expected_hi - f.expected_lo

    if ftype == "level_shift":
        name = names[int(rng.integers(len(names)))]
        k0, _, t0, _ = window(fl, row, 0.05, 0.2, 2)
        t1 = end_ms
        params: dict[str, Any] = {"delta": sign * rng.uniform(0.1, 0.2) * espan(name)}
        f = fault_cls(ftype, kind, row, t0, t1, name, params)
        f.labels.append(label_cls(fl.ids[row], kind, name, t0, t1, ftype))
    elif ftype == "slow_drift":
        name = names[int(rng.integers(len(names)))]
        _, _, t0, t1 = window(fl, row, 0.6, 0.9, 4)
        f = fault_cls(ftype, kind, row, t0, t1, name, {"total": sign * rng.uniform(0.05, 0.15) * espan(name)})
        f.labels.append(label_cls(fl.ids[row], kind, name, t0, t1, ftype))
    elif ftype == "correlated":
        _, _, t0, t1 = window(fl, row, 0.1, 0.3, 3)
        deltas = {n: sign * rng.uniform(0.1, 0.2) * espan(n) for n in names}
        f = fault_cls(ftype, kind, row, t0, t1, None, {"deltas": deltas})
        for n in names:
            f.labels.append(label_cls(fl.ids[row], kind, n, t0, t1, ftype))
    elif ftype == "burst":
        name = [n for n in names if n in BURST_FIELDS][int(rng.integers(sum(n in BURST_FIELDS for n in names)))]
        steps = int(rng.integers(2, 9))
        _, _, t0, _ = window(fl, row, 0.0, 0.0, 1)
        f = fault_cls(ftype, kind, row, t0, t0 + (steps - 1) * fl.interval_ms, name, {"gain": rng.uniform(2.0, 5.0)})
    elif ftype in ("night_at_day_level", "no_weekly_dip"):
        from simulators.signals import WEEKEND_FACTOR  # signals -> fleet -> scenario -> this module

        night = ftype == "night_at_day_level"
        fields = [n for n in names if n in (DAILY_FIELDS if night else WEEKLY_FIELDS)]
        name = fields[int(rng.integers(len(fields)))]
        day = _local_days(rng, start_ms, end_ms, utc_offset_h, 8 if night else 14, weekend=not night)
        if day is None:
            return None
        t0 = day + int(NIGHT_H[0] * HOUR_MS) if night else day
        t1 = t0 + int((NIGHT_H[1] if night else 24.0) * HOUR_MS) - 1
        # snapped to the device's report slots, like every label
        phase = start_ms + int(fl.phase_ms[row])
        t0 = phase + -(-(t0 - phase) // fl.interval_ms) * fl.interval_ms
        t1 = phase + ((t1 - phase) // fl.interval_ms) * fl.interval_ms
        f = fault_cls(ftype, kind, row, t0, t1, name, {"lag_ms": 12 * HOUR_MS} if night else {"gain": 1.0 / WEEKEND_FACTOR})
        f.labels.append(label_cls(fl.ids[row], kind, name, t0, t1, ftype))
    else:  # quantised_flat
        slow = [n for n in names if n in SLOW_FIELDS]
        name = slow[int(rng.integers(len(slow)))]
        minutes = rng.uniform(30, 90)
        _, _, t0, _ = window(fl, row, 0.0, 0.0, 1)
        f = fault_cls(ftype, kind, row, t0, int(t0 + minutes * 60_000), name, {})
    return f


def apply(f: Any, raw: dict[str, np.ndarray], ts: np.ndarray, clean: Callable[[str, np.ndarray], np.ndarray]) -> None:
    """Apply one planned hard case to the value arrays ``raw`` (field -> (devices, slots)) in place.

    ``clean(field, t_ms)``: the device's noise-free values at the times ``t_ms`` (1-D), for
    ``quantised_flat`` (the value at ``f.start``) and ``night_at_day_level`` (12 h earlier).
    """
    r = f.row
    m = (ts[r] >= f.start) & (ts[r] <= f.end)
    if not m.any():
        return
    if f.type == "level_shift":
        raw[f.field][r, m] += f.params["delta"]
    elif f.type == "slow_drift":
        raw[f.field][r, m] += f.params["total"] * (ts[r, m] - f.start) / max(1, f.end - f.start)
    elif f.type == "correlated":
        for name, d in f.params["deltas"].items():
            if name in raw:
                raw[name][r, m] += d
    elif f.type == "burst":
        raw[f.field][r, m] *= f.params["gain"]
    elif f.type == "quantised_flat":
        raw[f.field][r, m] = clean(f.field, np.array([f.start]))[0]
    elif f.type == "night_at_day_level":  # this reading's noise on the level of 12 h earlier
        t = ts[r, m]
        raw[f.field][r, m] += clean(f.field, t - f.params["lag_ms"]) - clean(f.field, t)
    elif f.type == "no_weekly_dip":
        raw[f.field][r, m] *= f.params["gain"]
