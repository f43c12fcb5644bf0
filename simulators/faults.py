"""Fault planning with ground truth: every injected event becomes a label.

Faults are planned once per run from the scenario seed (so labels are known
before the first message is sent), then applied by the stream generator:
value faults to the (devices, time) arrays, message faults to single messages.

Label line (JSON): ``{"device","kind","field","start","end","type"}``; ``start``/``end``
are device timestamps in ms (inclusive) snapped to the device's report slots;
``field`` is null for message-level faults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dc_field
from typing import Any, Iterable, Mapping

import numpy as np

from kotacerdas import standards
from kotacerdas.catalogue import Catalogue, Kind
from kotacerdas.contract import Reason

from simulators import hardcases
from simulators.fleet import KindFleet
from simulators.scenario import Scenario

VALUE_FAULTS = ("spike", "flatline", "drift", "offset")
# faults whose messages the gateway refuses, with the reason it gives
BAD_REASON = {
    "duplicate": Reason.DUPLICATE,
    "out_of_range": Reason.OUT_OF_RANGE,
    "unknown_device": Reason.UNKNOWN_DEVICE,
}
# malformed variants, cycled per event, with the contract's reason for each
MALFORMED_VARIANTS = (
    ("truncated_json", Reason.MALFORMED_JSON),
    ("not_utf8", Reason.NOT_UTF8),
    ("missing_seq", Reason.MISSING_KEY),
    ("nan_value", Reason.NOT_FINITE),
    ("string_value", Reason.WRONG_TYPE),
    ("unknown_field", Reason.UNKNOWN_FIELD),
    ("json_array", Reason.NOT_AN_OBJECT),
    ("bad_version", Reason.UNSUPPORTED_VERSION),
)


@dataclass
class Label:
    device: str
    kind: str
    field: str | None
    start: int
    end: int
    type: str
    run: str = ""  # the simulator run (kotacerdas/simrun.py): labels of another run are refused
    # False: the fault left no trace in what the device sent (every reading in the window the same
    # as without it: a negative step on a field already at its range floor, a flat line on a field
    # that stood still anyway, every reading dropped): no detector can see it, so none is scored on it
    trace: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass
class Fault:
    """One planned event; ``labels`` are what the labels file records for it."""

    type: str
    kind: str
    row: int                       # device row in the kind's fleet (-1: a ghost device)
    start: int                     # ms, snapped to the device's slots
    end: int
    field: str | None = None
    params: dict[str, Any] = dc_field(default_factory=dict)
    labels: list[Label] = dc_field(default_factory=list)


@dataclass
class FaultPlan:
    faults: list[Fault]

    @property
    def labels(self) -> list[Label]:
        return [lb for f in self.faults for lb in f.labels]

    def of_kind(self, kind: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind]


def slot_ts(f: KindFleet, row: int, start_ms: int, k: int) -> int:
    return int(start_ms + f.phase_ms[row] + k * f.interval_ms)


def n_slots(f: KindFleet, row: int, start_ms: int, end_ms: int) -> int:
    return int((end_ms - start_ms - f.phase_ms[row]) // f.interval_ms) + 1


def _eligible_fields(cat: Catalogue, kind: str) -> list[str]:
    # a field with a zero-width expected span (e.g. the bin tilt switch) has no "normal" to drift from
    return [fl.name for fl in cat[kind].fields if fl.expected_hi > fl.expected_lo]


def plan_faults(
    sc: Scenario, fleets: dict[str, KindFleet], cat: Catalogue, start_ms: int, end_ms: int
) -> FaultPlan:
    rng = np.random.default_rng([sc.seed, 99])
    kinds = [k for k in fleets if fleets[k].n]
    faults: list[Fault] = []
    used_slots: set[tuple[str, int, int]] = set()  # one message fault per slot, so effects never overlap
    seasonal_taken: set = set()  # hardcases.plan: one seasonal case per (type, device, field, day)
    span = end_ms - start_ms

    def pick_device(kind_choices: list[str]) -> tuple[str, KindFleet, int]:
        kind = kind_choices[int(rng.integers(len(kind_choices)))]
        fl = fleets[kind]
        return kind, fl, int(rng.integers(fl.n))

    def window(fl: KindFleet, row: int, lo_frac: float, hi_frac: float, min_slots: int = 2) -> tuple[int, int, int, int]:
        """A window of the device's slots: (k0, k1, ts0, ts1), inclusive, kept inside the span."""
        total = n_slots(fl, row, start_ms, end_ms)
        length = int(max(min_slots, round(rng.uniform(lo_frac, hi_frac) * span / fl.interval_ms)))
        length = min(length, max(1, total - 2))
        k0 = int(rng.integers(1, max(2, total - length)))
        k1 = min(total - 1, k0 + length - 1)
        return k0, k1, slot_ts(fl, row, start_ms, k0), slot_ts(fl, row, start_ms, k1)

    def free_slot(fl: KindFleet, kind: str, row: int) -> tuple[int, int] | None:
        total = n_slots(fl, row, start_ms, end_ms)
        for _ in range(50):
            # never the last slot: an out-of-order message needs a successor
            k = int(rng.integers(0, max(1, total - 1)))
            if (kind, row, k) not in used_slots and total >= 2:
                used_slots.add((kind, row, k))
                return k, slot_ts(fl, row, start_ms, k)
        return None

    for ftype, count in sc.faults.items():
        for i in range(count):
            params: dict[str, Any]
            if ftype in VALUE_FAULTS:
                kind, fl, row = pick_device(kinds)
                fname = _eligible_fields(cat, kind)[int(rng.integers(len(_eligible_fields(cat, kind))))]
                fld = cat[kind].field(fname)
                espan = fld.expected_hi - fld.expected_lo
                sign = 1.0 if rng.random() < 0.7 else -1.0
                if ftype == "spike":
                    slot = free_slot(fl, kind, row)
                    if slot is None:
                        continue
                    k0 = k1 = slot[0]
                    t0 = t1 = slot[1]
                    params = {"delta": sign * rng.uniform(0.4, 0.8) * espan}
                elif ftype == "flatline":
                    k0, k1, t0, t1 = window(fl, row, 0.1, 0.3, 3)
                    params = {}
                elif ftype == "drift":
                    k0, k1, t0, t1 = window(fl, row, 0.2, 0.5, 4)
                    params = {"total": sign * rng.uniform(0.15, 0.35) * espan}
                else:
                    k0, k1, t0, t1 = window(fl, row, 0.2, 0.5, 3)
                    params = {"delta": sign * rng.uniform(0.1, 0.25) * espan}
                f = Fault(ftype, kind, row, t0, t1, fname, params)
                f.labels.append(Label(fl.ids[row], kind, fname, t0, t1, ftype))
            elif ftype in ("dropout", "offline", "clock_skew"):
                kind, fl, row = pick_device(kinds)
                lo, hi = {"dropout": (0.05, 0.15), "offline": (0.1, 0.2), "clock_skew": (0.1, 0.3)}[ftype]
                k0, k1, t0, t1 = window(fl, row, lo, hi, 2)
                params = {}
                if ftype == "clock_skew":
                    skew = int(rng.integers(20_000, 200_000)) * (1 if rng.random() < 0.3 else -1)
                    if skew % fl.interval_ms == 0:  # a skew of whole intervals would collide with the device's own stamps
                        skew += 1
                    params = {"skew_ms": skew}
                f = Fault(ftype, kind, row, t0, t1, None, params)
                f.labels.append(Label(fl.ids[row], kind, None, t0, t1, ftype))
            elif ftype in ("out_of_order", "duplicate", "malformed", "out_of_range"):
                kind, fl, row = pick_device(kinds)
                slot = free_slot(fl, kind, row)
                if slot is None:
                    continue
                k, t = slot
                fname = None
                params = {"k": k}
                if ftype == "malformed":
                    variant, reason = MALFORMED_VARIANTS[i % len(MALFORMED_VARIANTS)]
                    params.update(variant=variant, reason=reason)
                elif ftype == "out_of_range":
                    fnames = list(cat[kind].field_names)
                    fname = fnames[int(rng.integers(len(fnames)))]
                    fld = cat[kind].field(fname)
                    width = fld.hi - fld.lo
                    # beyond the physical range (what a broken ADC or a wrong scale factor produces)
                    params["value"] = fld.hi + width * rng.uniform(0.2, 1.0) if fld.lo <= 0 or rng.random() < 0.5 \
                        else fld.lo - width * rng.uniform(0.2, 1.0)
                    params["reason"] = Reason.OUT_OF_RANGE
                elif ftype == "duplicate":
                    params.update(delay_ms=int(rng.integers(500, 5000)), reason=Reason.DUPLICATE)
                f = Fault(ftype, kind, row, t, t, fname, params)
                f.labels.append(Label(fl.ids[row], kind, fname, t, t, ftype))
            elif ftype == "unknown_device":
                kind = kinds[int(rng.integers(len(kinds)))]
                t = int(start_ms + rng.integers(0, span))
                ghost = f"{sc.device_prefix}-ghost-{cat[kind].short_id}-{i + 1:03d}"
                f = Fault(ftype, kind, -1, t, t, None, {"device": ghost, "reason": Reason.UNKNOWN_DEVICE,
                                                       "seq": int(rng.integers(0, 1000))})
                f.labels.append(Label(ghost, kind, None, t, t, ftype))
            elif ftype == "pollution_episode":
                # an episode the index (ISPU) would show: a kind whose catalogue entry has one
                air = _fleet_of(cat.with_index(), fleets)
                if air is None:
                    continue
                faults.append(_pollution(rng, air, cat, start_ms, end_ms))
                continue
            elif ftype == "contamination":
                # a breach of regulated limits: a kind whose catalogue entry has limits
                wet = _fleet_of(cat.with_limits(), fleets)
                if wet is None:
                    continue
                fl = wet
                row = int(rng.integers(fl.n))
                k0, k1, t0, t1 = window(fl, row, 0.1, 0.3, 3)
                # both draws always happen: a catalogue without one of the fields keeps the same plan
                drawn = {"ph": float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0)),
                         "turbidity": float(rng.uniform(50.0, 300.0))}
                shift = {n: d for n, d in drawn.items() if n in regulated_fields(cat[fl.kind])}
                f = Fault(ftype, fl.kind, row, t0, t1, None, {"shift": shift})
                for fname in shift:
                    f.labels.append(Label(fl.ids[row], fl.kind, fname, t0, t1, ftype))
            elif ftype in hardcases.TYPES:
                hard = hardcases.plan(ftype, rng, cat, kinds, fleets, window, start_ms, end_ms, Fault, Label,
                                      utc_offset_h=sc.utc_offset_h, taken=seasonal_taken)
                if hard is None:
                    continue
                f = hard
            else:
                continue
            faults.append(f)
    for f in faults:
        _label_partners(f, cat)
    # a slot fault inside a dropout/offline window of the same device would never be sent: drop it and its label
    gaps = [(f.kind, f.row, f.start, f.end) for f in faults if f.type in ("dropout", "offline")]

    def hidden(f: Fault) -> bool:
        if "k" not in f.params and f.type != "spike":
            return False
        last = f.start + (fleets[f.kind].interval_ms if f.type == "out_of_order" else 0)
        return any(k == f.kind and r == f.row and s <= last and f.start <= e for k, r, s, e in gaps)

    return FaultPlan([f for f in faults if not hidden(f)])


# A pollution episode (a fire, a jammed arterial road) raises the combustion tracers together; the
# index's other pollutants follow other physics (O3 is even titrated away by fresh NO). Applied to
# those of them the kind's index is computed from.
EPISODE_POLLUTANTS = ("pm25", "no2")


def index_pollutants(kind: Kind) -> tuple[str, ...]:
    """The kind's fields its air-quality index (catalogue ``index``) is computed from."""
    return tuple(n for n in standards.ISPU_POLLUTANTS if kind.has_field(n)) if kind.index else ()


def regulated_fields(kind: Kind) -> tuple[str, ...]:
    """The kind's fields its regulated limit set (catalogue ``limits``) covers."""
    return tuple(n for n in standards.WATER_LIMITS if kind.has_field(n)) if kind.limits else ()


def _fleet_of(kinds: tuple[Kind, ...], fleets: Mapping[str, KindFleet]) -> KindFleet | None:
    """The first non-empty fleet of ``kinds`` in the scenario (None if it has none)."""
    return next((fleets[k.name] for k in kinds if k.name in fleets and fleets[k.name].n), None)


def _pollution(rng: np.random.Generator, fl: KindFleet, cat: Catalogue, start_ms: int, end_ms: int) -> Fault:
    """PM2.5 and NO2 rising together across a centre station and its neighbours (e.g. a fire or a traffic jam)."""
    span = end_ms - start_ms
    centre = int(rng.integers(fl.n))
    km = np.hypot((fl.lat - fl.lat[centre]) * 111.0, (fl.lon - fl.lon[centre]) * 110.6)
    near = np.argsort(km)
    n_aff = int(min(fl.n, max(3, np.sum(km <= 3.0))))
    rows = near[:n_aff]
    dur = min(rng.uniform(1.5, 4.0) * 3_600_000, 0.5 * span)
    t0 = int(start_ms + rng.uniform(0.1, 0.9) * (span - dur))
    amp = float(rng.uniform(2.0, 4.0))
    f = Fault("pollution_episode", fl.kind, centre, t0, int(t0 + dur), None,
              {"rows": rows.tolist(), "km": km[rows].tolist(), "amp": amp, "dur": dur})
    fields = [n for n in EPISODE_POLLUTANTS if n in index_pollutants(cat[fl.kind])]
    f.params["fields"] = fields
    for r, d in zip(rows.tolist(), km[rows].tolist()):
        # farther stations see it later and weaker: the plume spreads at ~12 km/h
        s = t0 + int(d * 300_000)
        e = int(s + dur)
        k0 = max(0, -(-(s - start_ms - int(fl.phase_ms[r])) // fl.interval_ms))
        k1 = (e - start_ms - int(fl.phase_ms[r])) // fl.interval_ms
        k1 = min(k1, n_slots(fl, r, start_ms, end_ms) - 1)
        if k1 < k0:
            continue
        for fname in fields:
            f.labels.append(Label(fl.ids[r], fl.kind, fname, slot_ts(fl, r, start_ms, k0),
                                  slot_ts(fl, r, start_ms, int(k1)), "pollution_episode"))
    return f


def _label_partners(f: Fault, cat: Catalogue) -> None:
    """Label, beside each labelled field, the fields tied to it by a derivation (a bin's fill and
    its distance, TDS and conductivity): the engine applies the fault through the measured one, so
    a user sees both change."""
    if "k" in f.params:  # a single wire message altered after the device built it (out_of_range): one field
        return
    have = {(lb.device, lb.field, lb.start) for lb in f.labels}
    for lb in list(f.labels):
        if lb.field is None or lb.kind not in cat or not cat[lb.kind].has_field(lb.field):
            continue
        for other in cat[lb.kind].partners(lb.field):
            if (lb.device, other, lb.start) not in have:
                f.labels.append(replace(lb, field=other))
                have.add((lb.device, other, lb.start))


def write_labels(path: str, labels: Iterable[Label], run: str = "") -> int:
    """One JSON line per label, each stamped with ``run`` (the run id)."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for lb in labels:
            fh.write((replace(lb, run=run) if run else lb).to_json() + "\n")
            n += 1
    return n


def read_labels(path: str) -> list[Label]:
    with open(path, encoding="utf-8") as fh:
        return [Label(**json.loads(line)) for line in fh if line.strip()]
