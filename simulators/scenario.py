"""Scenario files (TOML): which city, how many devices of each kind, how long, which faults.

A scenario is either a path to a ``.toml`` file or the name of one shipped in
``simulators/scenarios/``. Report intervals default to the catalogue's; field
lists always come from the catalogue.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kotacerdas.catalogue import Catalogue, load_catalogue

from simulators import hardcases

FAULT_TYPES = (
    "spike", "flatline", "drift", "offset", "dropout", "duplicate", "out_of_order", "malformed",
    "clock_skew", "offline", "pollution_episode", "contamination",
)
# Fault kinds a scenario may ask for that are not label types of their own but messages
# the gateway must refuse (they are labelled, with these types, too).
EXTRA_BAD_TYPES = ("out_of_range", "unknown_device")
# hard cases for the detectors (simulators/hardcases.py): labelled faults and unlabelled nuisances
HARD_CASES = hardcases.TYPES
ALL_FAULTS = FAULT_TYPES + EXTRA_BAD_TYPES + HARD_CASES
# waste-bin sites; fill rates and collection rounds per site in simulators/signals.py BIN_SITES
SITE_TYPES = ("market", "household", "communal")

# The gateway refuses timestamps older than the contract's max age (7 days): keep a margin.
MAX_SPAN_S = 6 * 24 * 3600
# A scenario marked ``dry_run_only`` is never published (the gateway would refuse most of it), so it may
# cover the weeks of history a seasonal test needs (analytics/seasonal.py keeps 28 days).
MAX_DRY_SPAN_S = 35 * 24 * 3600


class ScenarioError(ValueError):
    """The scenario file is invalid; the message says which key."""


@dataclass(frozen=True)
class District:
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class KindSpec:
    kind: str
    count: int
    interval_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    city: str
    seed: int
    span_s: float
    duration_s: float
    qos: int
    device_prefix: str
    kinds: tuple[KindSpec, ...]
    districts: tuple[District, ...]
    utc_offset_h: float
    bin_mix: dict[str, float]
    faults: dict[str, int]
    firmware_devices: dict[str, int] = field(default_factory=dict)
    chunk_s: float = 900.0
    dry_run_only: bool = False  # weeks of simulated time for `--dry-run` only: never published

    @property
    def acceleration(self) -> float:
        """Simulated seconds per wall second."""
        return self.span_s / self.duration_s

    def with_duration(self, duration_s: float) -> "Scenario":
        """Same acceleration, another wall duration (the simulated span scales with it)."""
        span = min(self.acceleration * duration_s, MAX_DRY_SPAN_S if self.dry_run_only else MAX_SPAN_S)
        return _replace(self, duration_s=float(duration_s), span_s=float(span))

    def with_seed(self, seed: int) -> "Scenario":
        return _replace(self, seed=int(seed))

    def with_qos(self, qos: int) -> "Scenario":
        return _replace(self, qos=int(qos))


def _replace(s: Scenario, **kw: Any) -> Scenario:
    from dataclasses import replace

    return replace(s, **kw)


def _scenario_dir() -> Path:
    return Path(str(resources.files("simulators").joinpath("scenarios")))


def list_scenarios() -> list[tuple[str, str]]:
    """(name, description) of every shipped scenario."""
    out = []
    for p in sorted(_scenario_dir().glob("*.toml")):
        try:
            out.append((p.stem, load_scenario(str(p)).description))
        except ScenarioError as exc:
            out.append((p.stem, f"INVALID: {exc}"))
    return out


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ScenarioError(f"scenario file {name_or_path!r} not found")
        return p
    shipped = _scenario_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        names = ", ".join(n for n, _ in list_scenarios())
        raise ScenarioError(f"no scenario {name_or_path!r} (shipped: {names})")
    return shipped


def _cities() -> dict[str, Any]:
    return tomllib.loads(resources.files("simulators").joinpath("cities.toml").read_text("utf-8"))


def load_scenario(name_or_path: str, catalogue: Catalogue | None = None) -> Scenario:
    path = resolve(name_or_path)
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(doc, default_name=path.stem, catalogue=catalogue)


def parse_scenario(doc: dict[str, Any], default_name: str = "scenario", catalogue: Catalogue | None = None) -> Scenario:
    cat = catalogue or load_catalogue()
    try:
        city = str(doc.get("city", "depok"))
        span = float(doc.get("span_s", 3600))
        duration = float(doc.get("duration_s", span))
        dry_only = bool(doc.get("dry_run_only", False))
        if not (0 < span <= (MAX_DRY_SPAN_S if dry_only else MAX_SPAN_S)):
            raise ScenarioError(f"span_s must be in (0, {MAX_SPAN_S}] (the gateway refuses readings older than 7 days),"
                                f" or (0, {MAX_DRY_SPAN_S}] with dry_run_only = true")
        if duration <= 0:
            raise ScenarioError("duration_s must be > 0")
        qos = int(doc.get("qos", 1))
        if qos not in (0, 1):
            raise ScenarioError("qos must be 0 or 1")
        kinds = []
        for kname, spec in (doc.get("kinds") or {}).items():
            if kname not in cat:
                raise ScenarioError(f"kinds.{kname}: not a catalogue kind ({', '.join(cat.kind_names)})")
            count = int(spec.get("count", 0))
            interval = float(spec.get("interval_s", cat[kname].report_interval_s))
            if count < 0 or interval <= 0:
                raise ScenarioError(f"kinds.{kname}: count must be >= 0 and interval_s > 0")
            if count:
                kinds.append(KindSpec(kname, count, interval))
        if not kinds:
            raise ScenarioError("no devices: add [kinds.<kind>] count = N")
        cities = _cities()
        if "districts" in doc:
            districts = tuple(District(str(d["name"]), float(d["lat"]), float(d["lon"])) for d in doc["districts"])
            utc_offset = float(doc.get("utc_offset_h", 7))
        elif city in cities:
            c = cities[city]
            districts = tuple(District(str(d["name"]), float(d["lat"]), float(d["lon"])) for d in c["districts"])
            utc_offset = float(doc.get("utc_offset_h", c.get("utc_offset_h", 7)))
        else:
            raise ScenarioError(f"city {city!r} has no built-in districts: list [[districts]] name/lat/lon")
        if not districts:
            raise ScenarioError("at least one district is needed")
        mix = {k: float(v) for k, v in (doc.get("bins") or {"market": 0.1, "household": 0.7, "communal": 0.2}).items()}
        unknown_sites = set(mix) - set(SITE_TYPES)
        if unknown_sites or sum(mix.values()) <= 0:
            raise ScenarioError(f"bins: site types are {'/'.join(SITE_TYPES)} with positive shares ({unknown_sites})")
        faults = {k: int(v) for k, v in (doc.get("faults") or {}).items()}
        unknown_faults = set(faults) - set(ALL_FAULTS)
        if unknown_faults:
            raise ScenarioError(f"faults: unknown type(s) {sorted(unknown_faults)}; known: {', '.join(ALL_FAULTS)}")
        fw = {k: int(v) for k, v in (doc.get("firmware") or {}).items()}
        for k in fw:
            if k not in cat:
                raise ScenarioError(f"firmware.{k}: not a catalogue kind")
        return Scenario(
            name=str(doc.get("name", default_name)),
            description=str(doc.get("description", "")),
            city=city,
            seed=int(doc.get("seed", 0)),
            span_s=span,
            duration_s=duration,
            qos=qos,
            device_prefix=str(doc.get("device_prefix", default_name)),
            kinds=tuple(kinds),
            districts=districts,
            utc_offset_h=utc_offset,
            bin_mix=mix,
            faults=faults,
            firmware_devices=fw,
            chunk_s=float(doc.get("chunk_s", 900.0)),
            dry_run_only=dry_only,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"invalid scenario: {exc}") from exc
