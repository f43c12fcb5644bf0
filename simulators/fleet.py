"""The virtual fleet: device ids, districts, positions and per-device parameters.

Everything is drawn from the scenario's seed, so the same scenario always yields
the same devices (the gateway registry import and the run must agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kotacerdas.catalogue import Catalogue, load_catalogue

from simulators.scenario import SITE_TYPES, Scenario



@dataclass
class KindFleet:
    """All devices of one kind, as parallel arrays (index = device row in signal arrays)."""

    kind: str
    interval_ms: int
    ids: list[str]
    district: list[str]
    lat: np.ndarray
    lon: np.ndarray
    phase_ms: np.ndarray      # offset of each device's report slots within the interval
    seq0: np.ndarray          # first sequence number (devices have been running a while)
    site: np.ndarray          # waste bins: index into SITE_TYPES; others 0
    level: np.ndarray         # per-device multiplicative site factor for the main signal
    rng_key: int

    @property
    def n(self) -> int:
        return len(self.ids)


def _kind_seed(seed: int, kind: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, salt, *kind.encode()])


def build_fleet(sc: Scenario, catalogue: Catalogue | None = None) -> dict[str, KindFleet]:
    cat = catalogue or load_catalogue()
    fleets: dict[str, KindFleet] = {}
    nd = len(sc.districts)
    dlat = np.array([d.lat for d in sc.districts])
    dlon = np.array([d.lon for d in sc.districts])
    mix_names = [s for s in SITE_TYPES]
    mix = np.array([sc.bin_mix.get(s, 0.0) for s in mix_names])
    mix = mix / mix.sum()
    for ks in sc.kinds:
        _ = cat[ks.kind]
        rng = _kind_seed(sc.seed, ks.kind)
        n = ks.count
        # round-robin over districts so every district gets devices even in tiny fleets
        di = (np.arange(n) + rng.integers(nd)) % nd
        # ~1.5 km scatter around the kecamatan centroid
        lat = np.round(dlat[di] + rng.normal(0, 0.012, n), 5)
        lon = np.round(dlon[di] + rng.normal(0, 0.012, n), 5)
        interval_ms = int(round(ks.interval_s * 1000))
        # millisecond phases: no two devices share a clock tick, and a device's own
        # timestamps never collide across faults (clock skews use odd offsets too)
        phase = rng.integers(0, interval_ms, n)
        seq0 = rng.integers(0, 50_000, n)
        # containers (a catalogue fill level) stand at sites whose mix sets how fast they fill
        site = rng.choice(len(mix_names), size=n, p=mix) if cat[ks.kind].fill_level else np.zeros(n, dtype=int)
        level = rng.lognormal(0.0, 0.25, n)
        ids = [f"{sc.device_prefix}-{cat[ks.kind].short_id}-{i + 1:05d}" for i in range(n)]
        fleets[ks.kind] = KindFleet(
            kind=ks.kind, interval_ms=interval_ms, ids=ids,
            district=[sc.districts[i].name for i in di], lat=lat, lon=lon,
            phase_ms=phase.astype(np.int64), seq0=seq0.astype(np.int64), site=site, level=level,
            rng_key=int(rng.integers(2**31)),
        )
    return fleets


def device_records(sc: Scenario, catalogue: Catalogue | None = None) -> list[dict]:
    """The device list the gateway imports: ``{"device","kind","city","district","lat","lon","department"}``."""
    cat = catalogue or load_catalogue()
    out = []
    for kind, f in build_fleet(sc, cat).items():
        dept = cat[kind].department
        for i in range(f.n):
            out.append({
                "device": f.ids[i], "kind": kind, "city": sc.city, "district": f.district[i],
                "lat": float(f.lat[i]), "lon": float(f.lon[i]), "department": dept,
            })
    for kind, count in sc.firmware_devices.items():
        dept = cat[kind].department
        for i, d in enumerate(firmware_device_ids(sc, kind, count, cat)):
            dist = sc.districts[i % len(sc.districts)]
            out.append({"device": d, "kind": kind, "city": sc.city, "district": dist.name,
                        "lat": dist.lat, "lon": dist.lon, "department": dept})
    return out


def firmware_device_ids(sc: Scenario, kind: str, count: int, catalogue: Catalogue | None = None) -> list[str]:
    short = (catalogue or load_catalogue())[kind].short_id
    return [f"{sc.device_prefix}-fw-{short}-{i + 1:03d}" for i in range(count)]
