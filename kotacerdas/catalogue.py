"""Typed loader for the sensor catalogue (``catalogue.yaml``).

The catalogue is the single source of every sensor kind's field list, units,
physical ranges, resolutions and FIWARE names. Use :func:`load_catalogue` (cached)
and never re-type a field list elsewhere.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Mapping

import yaml

from kotacerdas.derived import DERIVATIONS


class CatalogueError(ValueError):
    """The catalogue file is inconsistent; raised at load time, never later."""


# the values a kind's `index` / `limits` may take (what analytics can compute; see catalogue.yaml)
INDEX_FAMILIES = ("ispu",)
LIMIT_SETS = ("drinking_water",)
# fits a device id (contract.DEVICE_RE) with the prefix and a 5-digit number around it
_SHORT_ID = re.compile(r"[a-z0-9_]{1,16}")


@dataclass(frozen=True)
class Field:
    name: str
    unit: str
    lo: float
    hi: float
    expected_lo: float
    expected_hi: float
    resolution: float
    typical: float
    fiware: str  # FIWARE Smart Data Model attribute; "" = the model has none
    sensor: str
    fiware_scale: float = 1.0  # catalogue unit -> the model's unit
    fiware_unit: str = ""  # UN/CEFACT code of the model's unit
    measurand: str = ""  # WaterQualityObserved `measurand` formula, when not an attribute
    resets: bool = False  # the value steps back by design (a bin emptied): steps and levels are no faults
    derived_from: str = ""  # the measured field the device computes this one from; "" = measured itself
    derivation: str = ""  # the conversion's name in kotacerdas/derived.py DERIVATIONS

    def in_range(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def quantise(self, value: float) -> float:
        """Round to the sensor's resolution (what a real device would report)."""
        steps = round(value / self.resolution)
        # round() again to kill binary noise such as 7.210000000000001; as many
        # decimals as the resolution itself has (0.0625 -> 4)
        text = repr(self.resolution)
        digits = len(text.split(".")[1]) if "." in text and "e" not in text else 6
        return round(steps * self.resolution, digits)


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    fiware_type: str
    fiware_model: str
    department: str
    measurement: str
    report_interval_s: int
    battery: bool
    fields: tuple[Field, ...]
    index: str = ""  # air-quality index family ("ispu") computed from the pollutant fields; "" = none
    limits: str = ""  # regulated limit set ("drinking_water") the fields are checked against; "" = none
    fill_level: str = ""  # the field that is a fill level in %; "" = the kind has none
    short_id: str = ""  # the kind's part of generated device ids; "" = the kind's name

    def __post_init__(self) -> None:
        if not self.short_id:
            object.__setattr__(self, "short_id", self.name)  # frozen: set once, here

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"kind {self.name!r} has no field {name!r}")

    def derived(self) -> tuple[Field, ...]:
        """The fields the device computes from another of its fields (``derived_from``)."""
        return tuple(f for f in self.fields if f.derived_from)

    def partners(self, name: str) -> tuple[str, ...]:
        """``name`` and the fields tied to it by a derivation (its source, or what is derived from it):
        what a user sees change when the sensor behind ``name`` misbehaves."""
        src = self.field(name).derived_from or name
        return (src,) + tuple(f.name for f in self.fields if f.derived_from == src)

    def has_field(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)

    def ranges(self) -> tuple[list[float], list[float]]:
        """(lo, hi) physical limits in ``field_names`` order, for vectorised checks."""
        return [f.lo for f in self.fields], [f.hi for f in self.fields]

    def expected_ranges(self) -> tuple[list[float], list[float]]:
        """(lo, hi) plausible limits in ``field_names`` order (suspect outside)."""
        return [f.expected_lo for f in self.fields], [f.expected_hi for f in self.fields]


@dataclass(frozen=True)
class Catalogue:
    version: int
    kinds: Mapping[str, Kind]
    battery: Field

    def __iter__(self) -> Iterator[Kind]:
        return iter(self.kinds.values())

    def __getitem__(self, name: str) -> Kind:
        return self.kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self.kinds

    @property
    def kind_names(self) -> tuple[str, ...]:
        return tuple(self.kinds)

    def with_index(self) -> tuple[Kind, ...]:
        return tuple(k for k in self if k.index)

    def with_limits(self) -> tuple[Kind, ...]:
        return tuple(k for k in self if k.limits)

    def with_fill_level(self) -> tuple[Kind, ...]:
        return tuple(k for k in self if k.fill_level)

    def single(self, kinds: tuple[Kind, ...], what: str) -> Kind:
        """The one kind of ``kinds`` (e.g. ``cat.with_index()``), for views built for exactly one kind:
        a second such kind needs a design decision there, not a silent pick."""
        if len(kinds) != 1:
            raise CatalogueError(f"one kind with {what} expected; the catalogue has {[k.name for k in kinds] or 'none'}")
        return kinds[0]


def _field(name: str, spec: Mapping, where: str) -> Field:
    try:
        lo, hi = (float(x) for x in spec["range"])
        elo, ehi = (float(x) for x in spec.get("expected", spec["range"]))
        f = Field(
            name=name,
            unit=str(spec["unit"]),
            lo=lo,
            hi=hi,
            expected_lo=elo,
            expected_hi=ehi,
            resolution=float(spec["resolution"]),
            typical=float(spec.get("typical", (lo + hi) / 2)),
            fiware="" if spec.get("fiware", name) is None else str(spec.get("fiware", name)),
            sensor=str(spec.get("sensor", "")),
            fiware_scale=float(spec.get("fiware_scale", 1.0)),
            fiware_unit=str(spec.get("fiware_unit", "")),
            measurand=str(spec.get("measurand", "")),
            resets=bool(spec.get("resets", False)),
            derived_from=str(spec.get("derived_from", "")),
            derivation=str(spec.get("derivation", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogueError(f"{where}.{name}: bad field spec ({exc})") from exc
    if not (f.lo < f.hi):
        raise CatalogueError(f"{where}.{name}: range min must be < max")
    if not (f.lo <= f.expected_lo <= f.expected_hi <= f.hi):
        raise CatalogueError(f"{where}.{name}: expected range must lie inside range")
    if not (f.lo <= f.typical <= f.hi):
        raise CatalogueError(f"{where}.{name}: typical outside range")
    if f.resolution <= 0:
        raise CatalogueError(f"{where}.{name}: resolution must be > 0")
    return f


def _check_derived(k: Kind) -> None:
    if not _SHORT_ID.fullmatch(k.short_id):
        raise CatalogueError(f"{k.name}: short_id {k.short_id!r} must be 1-16 of a-z, 0-9, _")
    if k.index and k.index not in INDEX_FAMILIES:
        raise CatalogueError(f"{k.name}: index {k.index!r} is not one of {INDEX_FAMILIES}")
    if k.limits and k.limits not in LIMIT_SETS:
        raise CatalogueError(f"{k.name}: limits {k.limits!r} is not one of {LIMIT_SETS}")
    if k.fill_level:
        if not k.has_field(k.fill_level):
            raise CatalogueError(f"{k.name}: fill_level {k.fill_level!r} is not one of its fields")
        if k.field(k.fill_level).unit != "%":
            raise CatalogueError(f"{k.name}: fill_level {k.fill_level!r} must be in %")
    for f in k.fields:
        if bool(f.derived_from) != bool(f.derivation):
            raise CatalogueError(f"{k.name}.{f.name}: derived_from and derivation go together")
        if f.derived_from and (not k.has_field(f.derived_from) or k.field(f.derived_from).derived_from):
            raise CatalogueError(f"{k.name}.{f.name}: derived_from {f.derived_from!r} is not a measured field")
        if f.derivation and f.derivation not in DERIVATIONS:
            raise CatalogueError(f"{k.name}.{f.name}: derivation {f.derivation!r} is not one of {sorted(DERIVATIONS)}")


def parse_catalogue(doc: Mapping) -> Catalogue:
    kinds: dict[str, Kind] = {}
    for kname, kspec in doc["kinds"].items():
        fields = tuple(_field(n, s, kname) for n, s in kspec["fields"].items())
        if not fields:
            raise CatalogueError(f"{kname}: no fields")
        kinds[kname] = Kind(
            name=kname,
            title=str(kspec.get("title", kname)),
            fiware_type=str(kspec["fiware_type"]),
            fiware_model=str(kspec.get("fiware_model", "")),
            department=str(kspec["department"]),
            measurement=str(kspec.get("measurement", kname)),
            report_interval_s=int(kspec["report_interval_s"]),
            battery=bool(kspec.get("battery", False)),
            fields=fields,
            index=str(kspec.get("index", "")),
            limits=str(kspec.get("limits", "")),
            fill_level=str(kspec.get("fill_level", "")),
            short_id=str(kspec.get("short_id", "")),
        )
        _check_derived(kinds[kname])
    shorts = [k.short_id for k in kinds.values()]
    if len(set(shorts)) != len(shorts):
        raise CatalogueError(f"short_id must differ between kinds: {sorted(shorts)}")
    battery = _field("battery", doc["common"]["battery"] | {"typical": 3.9}, "common")
    return Catalogue(version=int(doc["version"]), kinds=kinds, battery=battery)


@functools.lru_cache(maxsize=None)
def load_catalogue(path: str | None = None) -> Catalogue:
    """Load and validate the catalogue (the packaged one unless ``path`` is given)."""
    if path is None:
        text = resources.files("kotacerdas").joinpath("catalogue.yaml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_catalogue(yaml.safe_load(text))
