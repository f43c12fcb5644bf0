"""Every InfluxDB measurement the platform writes: name, tags, fields and their types, in one place.

Writers encode through :meth:`Measurement.line` (one encoder, :func:`kotacerdas.lineprotocol.format_line`
underneath): an unknown tag or field key raises :class:`SchemaError` at once instead of creating a
stray series, and each value is coerced to the field's declared type, so ``compliant=True`` and
``compliant=1`` store the same integer and a float field never becomes an integer one (InfluxDB
refuses a later point whose field type differs). Readers (dashboards, the open-data API, tests)
take measurement and field names from here.

Two writers build lines by hand for speed and are checked against these schemas by tests instead:
ingest's telemetry / dead-letter / device-status converter (``ingest/convert.py``) and the
analytics ``qc`` exceptions loop.

Time precision: every writer here uses milliseconds except ingest (nanoseconds, so a dead letter's
time can carry a sub-millisecond discriminator); see each writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from kotacerdas.catalogue import Catalogue, Kind
from kotacerdas.errors import ContractError
from kotacerdas.lineprotocol import format_line

__all__ = [
    "ALERTS", "ALL", "AQI_US", "BIN_FORECAST", "DEADLETTER", "DEVICE_STATUS", "ISPU", "KC_PIPELINE",
    "PARAMETER_ALL", "POLLUTANT_MAX", "QC", "QC_EPISODE", "RAW_META_FIELDS", "RAW_TAGS", "WATER_COMPLIANCE",
    "FieldType", "Measurement", "SchemaError", "aggregate_terms", "by_name", "query_problems", "raw",
]

FieldType = Literal["float", "int", "str"]

_COERCE = {"float": float, "int": int, "str": str}


class SchemaError(ContractError):
    """A point that does not fit its measurement's schema (a programming error, not bad input)."""


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: Mapping[str, FieldType]
    doc: str = ""
    written_by: str = ""
    _tagset: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tagset", frozenset(self.tags))

    def names(self, *names: str) -> tuple[str, ...]:
        """``names`` unchanged if each is a field or tag of this measurement (readers selecting columns)."""
        unknown = [n for n in names if n not in self.fields and n not in self._tagset]
        if unknown:
            raise SchemaError(f"{self.name}: no field or tag {unknown}")
        return names

    def line(self, tags: Mapping[str, str], fields: Mapping[str, object], ts: int | None = None) -> str | None:
        """One line of this measurement (None if no field is storable, e.g. all NaN)."""
        if not self._tagset.issuperset(tags):
            raise SchemaError(f"{self.name}: unknown tag(s) {sorted(set(tags) - self._tagset)}")
        out: dict[str, object] = {}
        for k, v in fields.items():
            t = self.fields.get(k)
            if t is None:
                raise SchemaError(f"{self.name}: unknown field {k!r}")
            if v is None:
                continue
            if t == "float":
                out[k] = float(v)  # type: ignore[arg-type]
            elif t == "int":
                out[k] = int(v)  # type: ignore[call-overload]
            else:
                out[k] = str(v)
        return format_line(self.name, tags, out, ts)


# ------------------------------------------------------------------ raw telemetry (one per kind)

RAW_TAGS = ("city", "device", "district", "kind")
# what ingest adds to every telemetry point beside the catalogue's fields
RAW_META_FIELDS: Mapping[str, FieldType] = {
    "battery": "float", "seq": "int", "fw": "str", "rssi": "int", "gw_lag_ms": "int",
}


def aggregate_terms(fields: Sequence[str]) -> list[str]:
    """InfluxQL select terms of the 1-minute / 1-hour aggregates of raw telemetry: per field ``f``
    its mean as ``f``, ``f_min``, ``f_max``, then ``n`` = readings (count of ``seq``). Ingest's
    continuous queries and the open-data history's request-time aggregation both use these."""
    def q(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    out: list[str] = []
    for f in fields:
        out += [f"mean({q(f)}) AS {q(f)}", f"min({q(f)}) AS {q(f + '_min')}", f"max({q(f)}) AS {q(f + '_max')}"]
    return [*out, 'count("seq") AS "n"']


def raw(kind: Kind) -> Measurement:
    """The raw telemetry measurement of a catalogue kind (``kind.measurement``)."""
    fields: dict[str, FieldType] = {f: "float" for f in kind.field_names}
    fields.update(RAW_META_FIELDS)
    return Measurement(kind.measurement, RAW_TAGS, fields, f"raw {kind.name} telemetry, device time", "ingest")


# ------------------------------------------------------------------ ingest

DEVICE_STATUS = Measurement(
    "device_status", ("city", "device", "district", "kind"),
    {"state": "str", "online": "int", "stale": "int", "last_seen_ms": "int", "battery": "float", "fw": "str"},
    "the gateway's device lifecycle (retained devstatus), at receive time", "ingest",
)
DEADLETTER = Measurement(
    "deadletter", ("reason", "stage"),
    {"count": "int", "detail": "str", "size": "int", "topic": "str"},
    "every dead letter of every stage, with its reason", "ingest",
)
KC_PIPELINE = Measurement(
    "kc_pipeline", ("instance", "service"),
    {"received": "int", "written": "int", "spooled": "int", "deadlettered": "int", "lag_ms": "float",
     "batch_latency_ms": "float", "spool_bytes": "int"},
    "a service's counters every stats interval", "ingest",
)

# ------------------------------------------------------------------ analytics

_SITE = ("city", "device", "district")

QC = Measurement(
    "qc", (*_SITE, "field", "kind", "test"), {"flag": "int", "score": "float"},
    "QARTOD flags other than good (kotacerdas.standards.QARTOD_*), one point per reading x test", "analytics",
)
QC_EPISODE = Measurement(
    "qc_episode", (*_SITE, "field", "kind", "fault"),
    {"end_ms": "int", "peak_ms": "int", "peak_flag": "int", "peak_score": "float", "peak_test": "str",
     "samples": "int", "open": "int"},
    "alarm episodes (analytics/episodes.py): one point per run of suspect/fail verdicts of one fault type "
    "(`fault`: range, flatline, spike, shift, gap, seasonal, multivariate) on one series, at its onset (the "
    "first flagged grid bin); end_ms / peak_ms = grid bins (epoch ms); peak_flag 3/4; peak_score in the "
    "units of peak_test (a `qc` test); samples = flagged bins; open = 1 while it may still grow (rewritten "
    "by later passes, same series and time)", "analytics",
)
ISPU = Measurement(
    "ispu", (*_SITE, "pollutant"),
    {"value": "float", "category": "str", "category_level": "int", "concentration": "float",
     "provisional": "int", "hours": "int", "samples": "int"},
    "ISPU sub-indices per pollutant and their max (pollutant=max); provisional = fewer than 75 % valid hourly "
    "means in the averaging period (analytics/averaging.py), hours = valid hourly means, samples = readings",
    "analytics",
)
# the `pollutant` tag of the station index row (max over the pollutants' sub-indices)
POLLUTANT_MAX = "max"
AQI_US = Measurement("aqi_us", ISPU.tags, ISPU.fields, "US EPA AQI, same layout as ispu", "analytics")
WATER_COMPLIANCE = Measurement(
    "water_compliance", (*_SITE, "parameter"),
    {"value": "float", "limit_lo": "float", "limit_hi": "float", "compliant": "int"},
    "Permenkes 2/2023 compliance per parameter, and parameter=all (value = breaches)", "analytics",
)
# the `parameter` tag of the overall row (value = parameters in breach)
PARAMETER_ALL = "all"
BIN_FORECAST = Measurement(
    "bin_forecast", _SITE,
    {"fill": "float", "fill_rate": "float", "hours_to_full": "float", "full_by_tomorrow": "int", "priority": "int"},
    "fill forecast and collection priority (1 = first)", "analytics",
)
ALERTS = Measurement(
    "alerts", ("department", "device", "rule", "severity", "city", "district"),
    {"state": "str", "value": "float", "alert_id": "str", "text_id": "str", "text_en": "str",
     # the context an analyst filters and reads by (issue 16), as the delivered alert carries it
     "lat": "float", "lon": "float", "observed_ms": "int", "pollutant": "str", "concentration": "float",
     "concentration_unit": "str", "threshold": "float", "averaging_s": "float"},
    "alert transitions (open / update / resolved) with location, measurement and threshold", "analytics",
)

ALL: tuple[Measurement, ...] = (
    DEVICE_STATUS, DEADLETTER, KC_PIPELINE, QC, QC_EPISODE, ISPU, AQI_US, WATER_COMPLIANCE, BIN_FORECAST, ALERTS,
)


def by_name(cat: Catalogue) -> dict[str, Measurement]:
    """Every measurement, raw telemetry of each catalogue kind included, by name."""
    out = {m.name: m for m in ALL}
    out.update((k.measurement, raw(k)) for k in cat)
    return out


_FROM = re.compile(r'\bFROM\s+"([^"]+)"', re.IGNORECASE)
_ALIAS = re.compile(r'\bAS\s+"([^"]+)"', re.IGNORECASE)
_QUOTED = re.compile(r'"([^"]+)"')


def query_problems(query: str, cat: Catalogue) -> list[str]:
    """What an InfluxQL query names that its measurements do not have (empty = consistent).

    Every double-quoted identifier must be a measurement it reads, a field or tag of one of
    them, or an alias the query itself defines; so a renamed field or measurement breaks the
    tests of every reader instead of leaving a panel silently empty.
    """
    known = by_name(cat)
    read = _FROM.findall(query)
    out = [f"unknown measurement {m!r}" for m in read if m not in known]
    allowed = set(read) | set(_ALIAS.findall(query))
    for m in read:
        if m in known:
            allowed |= set(known[m].fields) | set(known[m].tags)
    out += [f"{n!r} is no field or tag of {read}" for n in dict.fromkeys(_QUOTED.findall(query)) if n not in allowed]
    return out
