"""Hard cases for the detectors: faults that real deployments show and normal behaviour that looks like one.

Labelled faults (each becomes labels, like :mod:`simulators.faults`):
- ``level_shift``: a step that stays until the end of the run (a sensor re-mounted, a new
  calibration, a fouled probe): detected at its onset, then the new level is the normal one;
- ``slow_drift``: a small drift over most of the run (0.05-0.15 of the expected span over
  60-90 % of it): slower than the ``drift`` fault, close to the noise per hour;
- ``correlated``: every eligible field of one device shifts at the same moment for a while
  (a power or grounding fault of the board, a flooded enclosure): one label per field.

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

LABELLED = ("level_shift", "slow_drift", "correlated")
NUISANCES = ("burst", "quantised_flat")
TYPES = LABELLED + NUISANCES

BURST_FIELDS = ("pm25", "pm10", "no2", "co")
SLOW_FIELDS = ("temperature", "ph", "conductivity", "tds")


def plan(ftype: str, rng: np.random.Generator, cat: Catalogue, kinds: list[str], fleets: dict,
         window: Callable, start_ms: int, end_ms: int, fault_cls: type, label_cls: type) -> Any:
    """One planned event of ``ftype`` (a :class:`simulators.faults.Fault`), or None when no device fits.

    ``window(fl, row, lo_frac, hi_frac, min_slots)`` -> (k0, k1, t0, t1): the fault plan's window picker.
    """
    eligible = {k: [f.name for f in cat[k].fields if f.expected_hi > f.expected_lo] for k in kinds}
    if ftype == "burst":
        kinds = [k for k in kinds if any(n in BURST_FIELDS for n in eligible[k])]
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
    else:  # quantised_flat
        slow = [n for n in names if n in SLOW_FIELDS]
        name = slow[int(rng.integers(len(slow)))]
        minutes = rng.uniform(30, 90)
        _, _, t0, _ = window(fl, row, 0.0, 0.0, 1)
        f = fault_cls(ftype, kind, row, t0, int(t0 + minutes * 60_000), name, {})
    return f


def apply(f: Any, raw: dict[str, np.ndarray], ts: np.ndarray, value_at_start: Callable[[str], float]) -> None:
    """Apply one planned hard case to the value arrays ``raw`` (field -> (devices, slots)) in place.

    ``value_at_start(field)``: the device's noise-free value at ``f.start`` (for ``quantised_flat``).
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
        raw[f.field][r, m] = value_at_start(f.field)
