"""The message stream of a run: chunks of simulated time -> signals -> faults -> wire messages.

Pure (no I/O): given a scenario and "now", yields :class:`Msg` in publish order.
The simulated window ends at ``now`` (start = now - span) so no timestamp is ever
in the future and none older than the span (the gateway's 7-day limit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from kotacerdas import contract, simrun
from kotacerdas.catalogue import Catalogue, Kind, load_catalogue
from kotacerdas.contract import Reason

from simulators import hardcases, signals
from simulators.faults import Fault, FaultPlan, plan_faults
from simulators.fleet import KindFleet, build_fleet
from simulators.scenario import Scenario

FW_VERSION = simrun.SIM_FW

GOOD, BAD, STATUS, LWT = "good", "bad", "status", "lwt"


@dataclass(slots=True)
class Msg:
    t: int                      # simulated publish time (ms); the stream is ordered by it
    topic: str
    payload: bytes
    cls: str                    # good | bad | status | lwt (a device dropping off: last will)
    kind: str | None = None
    bad_type: str | None = None
    reason: Reason | None = None
    retain: bool = False
    device: str | None = None


@dataclass
class Run:
    """A planned run: fleet, weather and faults for one scenario and one "now"."""

    sc: Scenario
    root: str
    now_ms: int
    cat: Catalogue = field(default_factory=load_catalogue)

    def __post_init__(self) -> None:
        self.end_ms = int(self.now_ms)
        self.start_ms = int(self.now_ms - self.sc.span_s * 1000)
        self.fleets: dict[str, KindFleet] = build_fleet(self.sc, self.cat)
        self.weather = signals.Weather(self.sc.seed, self.start_ms, self.end_ms, self.sc.utc_offset_h)
        self.plan: FaultPlan = plan_faults(self.sc, self.fleets, self.cat, self.start_ms, self.end_ms)
        # the run id rides in every simulated device's firmware string (kotacerdas/simrun.py)
        self.run_id = simrun.run_id(self.sc.name, self.sc.seed, self.root, self.start_ms)
        self.fw = simrun.fw_for(self.run_id)
        self._traced: set[int] = set()  # id() of the value-fault labels a sent reading showed
        self._row_of = {k: {d: i for i, d in enumerate(f.ids)} for k, f in self.fleets.items()}
        self.topics = {
            k: [contract.telemetry_topic(self.root, self.sc.city, k, d) for d in f.ids] for k, f in self.fleets.items()
        }

    @property
    def labels(self):
        """The planned labels (before any message is made; ``trace`` not yet known)."""
        return self.plan.labels

    def labels_seen(self) -> list:
        """The labels with ``trace`` set: False for a value fault no sent reading showed (known once
        :meth:`messages` has been consumed; a fault not reached by a stopped run shows none either)."""
        return [replace(lb, trace=id(lb) in self._traced) if lb.type in VALUE_FAULTS and lb.field else lb
                for lb in self.plan.labels]

    def estimate_messages(self) -> int:
        n = sum(f.n * (int(self.sc.span_s * 1000 // f.interval_ms) + 1) for f in self.fleets.values())
        return n + sum(self.sc.faults.get(t, 0) for t in ("duplicate", "unknown_device"))

    # ------------------------------------------------------------ stream

    def messages(self, births: bool = True) -> Iterator[Msg]:
        pending: list[Msg] = []
        if births:
            for kind, f in self.fleets.items():
                for dev in f.ids:
                    yield Msg(self.start_ms - 1, contract.status_topic(self.root, self.sc.city, kind, dev),
                              contract.encode_status("online", self.start_ms - 1, fw=self.fw), STATUS,
                              kind=kind, retain=True, device=dev)
        chunk_ms = int(self.sc.chunk_s * 1000)
        extra = self._extra_messages()
        c0 = self.start_ms
        ci = 0
        while c0 <= self.end_ms:
            c1 = c0 + chunk_ms
            batch = pending
            for kind in self.fleets:
                batch.extend(self._chunk(kind, c0, min(c1, self.end_ms + 1), ci))
            batch.extend(m for m in extra if c0 <= m.t < c1)
            batch.sort(key=_by_t)
            cut = 0
            while cut < len(batch) and batch[cut].t < c1:
                cut += 1
            yield from batch[:cut]
            pending = batch[cut:]
            c0, ci = c1, ci + 1
        pending.extend(m for m in extra if m.t >= c0)
        pending.sort(key=_by_t)
        yield from pending

    def _extra_messages(self) -> list[Msg]:
        """Messages not tied to a report slot: ghosts, and status changes of devices going offline."""
        out = []
        for f in self.plan.faults:
            if f.type == "unknown_device":
                kind = self.cat[f.kind]
                dev = f.params["device"]
                vals = {fl.name: float(signals.quantise(fl, np.array(fl.typical))) for fl in kind.fields}
                payload = contract.encode_telemetry(f.start, f.params["seq"], vals,
                                                    battery=3.9 if kind.battery else None, fw=self.fw)
                out.append(Msg(f.start, contract.telemetry_topic(self.root, self.sc.city, f.kind, dev), payload, BAD,
                               kind=f.kind, bad_type="unknown_device", reason=Reason.UNKNOWN_DEVICE, device=dev))
            elif f.type == "offline":
                fl = self.fleets[f.kind]
                dev = fl.ids[f.row]
                topic = contract.status_topic(self.root, self.sc.city, f.kind, dev)
                # the will fires right after the device's last reading before the window
                out.append(Msg(f.start - fl.interval_ms + 1, topic,
                               contract.encode_status("offline", f.start - fl.interval_ms + 1, reason="lwt"),
                               LWT, kind=f.kind, retain=True, device=dev))
                out.append(Msg(f.end + 1, topic, contract.encode_status("online", f.end + 1, fw=self.fw),
                               STATUS, kind=f.kind, retain=True, device=dev))
        return out

    def _chunk(self, kind_name: str, c0: int, c1: int, ci: int) -> list[Msg]:
        fl = self.fleets[kind_name]
        kind = self.cat[kind_name]
        step = fl.interval_ms
        k_lo = max(0, (c0 - self.start_ms) // step - 1)
        k_hi = (c1 - self.start_ms) // step + 1
        ks = np.arange(k_lo, k_hi + 1, dtype=np.int64)
        ts = self.start_ms + fl.phase_ms[:, None] + ks[None, :] * step          # (devices, slots)
        valid = (ts >= c0) & (ts < c1) & (ts <= self.end_ms)
        if not valid.any():
            return []
        rng = np.random.default_rng([self.sc.seed, fl.rng_key, ci])
        raw = signals.generate(kind, fl, ts, self.weather, self.sc.utc_offset_h, rng)
        faults = self.plan.of_kind(kind_name)
        clean = {f.name: raw[f.name].copy() for f in kind.fields if f.derived_from or f.name in _sources(kind)}
        untouched = {f.name: signals.quantise(f, raw[f.name]) for f in kind.fields}
        self._apply_value_faults(kind_name, fl, faults, raw, ts)
        signals.carry_to_source(kind, raw, clean)  # a derived field's fault goes through its measured source
        vals = {f.name: signals.quantise(f, raw[f.name]) for f in kind.fields}
        bat = signals.quantise(self.cat.battery, signals.battery(fl, ts, self.start_ms)) if kind.battery else None
        rssi = (-60 - (fl.phase_ms[:, None] % 30) - rng.integers(0, 8, ts.shape)).astype(np.int64)
        stamp = ts.copy()
        for f in faults:
            r = f.row
            if f.type in ("dropout", "offline"):
                valid[r] &= ~((ts[r] >= f.start) & (ts[r] <= f.end))
            elif f.type == "clock_skew":
                m = (ts[r] >= f.start) & (ts[r] <= f.end)
                stamp[r, m] += f.params["skew_ms"]
        self._trace(kind_name, faults, vals, untouched, ts, valid)
        special: dict[tuple[int, int], Fault] = {}
        for f in faults:
            if "k" in f.params and k_lo <= f.params["k"] <= k_hi:
                special[(f.row, int(f.params["k"] - k_lo))] = f
        rows, cols = np.nonzero(valid)
        names = kind.field_names
        matrix = np.stack([vals[n][rows, cols] for n in names], axis=1).tolist()
        t_list = ts[rows, cols].tolist()
        st_list = stamp[rows, cols].tolist()
        seq_list = (fl.seq0[rows] + ks[cols]).tolist()
        rssi_list = rssi[rows, cols].tolist()
        bat_list = bat[rows, cols].tolist() if bat is not None else None
        topics = self.topics[kind_name]
        out: list[Msg] = []
        enc = contract.encode_telemetry
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
            fields = dict(zip(names, matrix[i]))
            b = bat_list[i] if bat_list is not None else None
            sf = special.get((r, c)) if special else None
            if sf is None:
                out.append(Msg(t_list[i], topics[r], enc(st_list[i], seq_list[i], fields, battery=b, fw=self.fw,
                                                         rssi=rssi_list[i]), GOOD, kind_name))
                continue
            out.extend(self._special(sf, kind_name, fl, r, t_list[i], st_list[i], seq_list[i], fields, b,
                                     rssi_list[i], topics[r]))
        return out

    def _trace(self, kind_name: str, faults: list[Fault], vals: dict, untouched: dict, ts: np.ndarray,
               valid: np.ndarray) -> None:
        """Mark the value-fault labels a reading of this chunk shows: one sent reading in the label's
        window that differs from what the device would have sent without the fault."""
        rows = self._row_of[kind_name]
        for f in faults:
            if f.type not in VALUE_FAULTS:
                continue
            for lb in f.labels:
                if lb.field is None or id(lb) in self._traced or lb.field not in vals:
                    continue
                r = rows[lb.device]
                m = valid[r] & (ts[r] >= lb.start) & (ts[r] <= lb.end)
                if m.any() and bool(np.any(vals[lb.field][r, m] != untouched[lb.field][r, m])):
                    self._traced.add(id(lb))

    def _special(self, f: Fault, kind: str, fl: KindFleet, r: int, t: int, stamp: int, seq: int,
                 fields: dict, bat, rssi: int, topic: str) -> list[Msg]:
        enc = contract.encode_telemetry
        dev = fl.ids[r]
        if f.type == "out_of_order":
            # delivered after the device's next reading (e.g. a retry after a lost ack)
            return [Msg(t + fl.interval_ms + 1, topic, enc(stamp, seq, fields, battery=bat, fw=self.fw, rssi=rssi),
                        GOOD, kind, device=dev)]
        if f.type == "duplicate":
            p = enc(stamp, seq, fields, battery=bat, fw=self.fw, rssi=rssi)
            return [Msg(t, topic, p, GOOD, kind, device=dev),
                    Msg(t + f.params["delay_ms"], topic, p, BAD, kind, "duplicate", Reason.DUPLICATE, device=dev)]
        if f.type == "out_of_range":
            bad = dict(fields)
            assert f.field is not None
            fld = self.cat[kind].field(f.field)
            bad[f.field] = float(signals.quantise(fld, np.array(f.params["value"]), clip=False))
            return [Msg(t, topic, enc(stamp, seq, bad, battery=bat, fw=self.fw, rssi=rssi), BAD, kind,
                        "out_of_range", Reason.OUT_OF_RANGE, device=dev)]
        if f.type == "malformed":
            payload = malformed_payload(f.params["variant"], stamp, seq, fields, bat)
            return [Msg(t, topic, payload, BAD, kind, "malformed", f.params["reason"], device=dev)]
        if f.type == "spike":  # value already altered in the arrays; the slot is special only to keep slots unique
            return [Msg(t, topic, enc(stamp, seq, fields, battery=bat, fw=self.fw, rssi=rssi), GOOD, kind,
                        device=dev)]
        raise AssertionError(f"unexpected slot fault {f.type}")

    def _apply_value_faults(self, kind_name: str, fl: KindFleet, faults: list[Fault], raw: dict, ts: np.ndarray) -> None:
        kind = self.cat[kind_name]
        for f in faults:
            r = f.row
            if f.type in ("spike", "offset", "flatline", "drift"):
                assert f.field is not None
                m = (ts[r] >= f.start) & (ts[r] <= f.end)
                if not m.any():
                    continue
                v = raw[f.field]
                if f.type in ("spike", "offset"):
                    v[r, m] += f.params["delta"]
                elif f.type == "drift":
                    v[r, m] += f.params["total"] * (ts[r, m] - f.start) / max(1, f.end - f.start)
                else:
                    # stuck at the (noise-free) value the sensor had when it stuck
                    one = signals.generate(kind, _row(fl, r), np.array([[f.start]], dtype=np.int64), self.weather,
                                           self.sc.utc_offset_h, None)
                    v[r, m] = float(one[f.field][0, 0])
            elif f.type in hardcases.TYPES:
                def clean(name: str, t: np.ndarray, f: Fault = f) -> np.ndarray:
                    one = signals.generate(kind, _row(fl, f.row), np.asarray(t, dtype=np.int64)[None, :], self.weather,
                                           self.sc.utc_offset_h, None)
                    return one[name][0]
                hardcases.apply(f, raw, ts, clean)
            elif f.type == "contamination":
                m = (ts[r] >= f.start) & (ts[r] <= f.end)
                if not m.any():
                    continue
                x = (ts[r, m] - f.start) / max(1, f.end - f.start)
                shape = np.minimum(1.0, 4.0 * x) * np.minimum(1.0, 4.0 * (1.0 - x)) + 0.25  # ramp up, plateau, ramp down
                shape = np.minimum(shape, 1.0)
                for fname, delta in f.params["shift"].items():  # the regulated fields it hits (faults.py)
                    raw[fname][r, m] += delta * shape
            elif f.type == "pollution_episode":
                dur = f.params["dur"]
                for row, km in zip(f.params["rows"], f.params["km"]):
                    s = f.start + int(km * 300_000)
                    x = (ts[row] - s) / dur
                    m = (x >= 0) & (x <= 1)
                    if not m.any():
                        continue
                    gain = 1.0 + f.params["amp"] * math.exp(-km / 3.0) * np.sin(np.pi * x[m]) ** 0.5
                    for fname in f.params["fields"]:  # the index pollutants it raises (faults.py)
                        raw[fname][row, m] *= gain


# faults that change the values a device measures (labelled per field); the others change messages
VALUE_FAULTS = frozenset(("spike", "offset", "flatline", "drift", "contamination", "pollution_episode")
                         + hardcases.LABELLED)


def _sources(kind: Kind) -> set[str]:
    return {f.derived_from for f in kind.derived()}


def _row(fl: KindFleet, r: int) -> KindFleet:
    sl = slice(r, r + 1)
    return KindFleet(fl.kind, fl.interval_ms, fl.ids[sl], fl.district[sl], fl.lat[sl], fl.lon[sl], fl.phase_ms[sl],
                     fl.seq0[sl], fl.site[sl], fl.level[sl], fl.rng_key)


def _by_t(m: Msg) -> int:
    return m.t


def malformed_payload(variant: str, ts: int, seq: int, fields: dict, bat) -> bytes:
    good = contract.encode_telemetry(ts, seq, fields, battery=bat, fw=FW_VERSION)
    first = next(iter(fields))
    if variant == "truncated_json":
        return good[: len(good) // 2]
    if variant == "not_utf8":
        return b"\xff\xfe" + good
    if variant == "json_array":
        return json.dumps(list(fields.values())).encode()
    doc = json.loads(good)
    if variant == "missing_seq":
        del doc["seq"]
    elif variant == "nan_value":
        doc["fields"][first] = float("nan")
    elif variant == "string_value":
        doc["fields"][first] = str(doc["fields"][first])
    elif variant == "unknown_field":
        doc["fields"]["bogus_sensor"] = 1.0
    elif variant == "bad_version":
        doc["v"] = 99
    else:
        raise ValueError(f"unknown malformed variant {variant!r}")
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
