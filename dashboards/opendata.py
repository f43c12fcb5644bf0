"""Open-data datasets: what each public endpoint serves, as pure functions over InfluxDB rows.

In the spirit of Satu Data Indonesia (Perpres 39/2019): each dataset has a stable
identifier, a title, column metadata with units, a licence, and is downloadable as
JSON or CSV with paging. Only public, aggregated-free facts are served: latest
readings and indices per station; nothing about devices' credentials or networks
(rssi, firmware and gateway lag stay internal).
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from kotacerdas import measurements as M
from kotacerdas.catalogue import Catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.standards import ISPU_POLLUTANTS, ISPU_REGULATION

from dashboards.dcat import LICENSE_ID
from dashboards.stations import StationIndex

LICENSE = LICENSE_ID
LOOKBACK = "7d"  # a station silent for a week is no longer "latest"
# city/district/device names as tagged: letters, digits, space (kecamatan "Pancoran Mas"), _ . -
NAME_RE = r"^[A-Za-z0-9_.\- ]{1,64}$"
_NAME = re.compile(NAME_RE)
_NO_INDEX = StationIndex(None)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "string" | "number" | "integer" | "datetime"
    unit: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Dataset:
    id: str
    title: str
    description: str
    columns: tuple[Column, ...]
    fetch: Callable[[InfluxClient, dict[str, str]], list[dict[str, Any]]]
    sort_key: tuple[str, ...]
    update_s: float = 60.0  # how often the data behind it changes (DCAT accrualPeriodicity)
    kind: str | None = None  # the catalogue kind of a latest-readings dataset (NGSI-LD output)


def _lit(v: str) -> str:
    if not _NAME.match(v):  # the API layer validates too; this is the last line before InfluxQL
        raise ValueError(f"invalid filter value {v!r}")
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tag_conditions(filters: dict[str, str]) -> str:
    """``"k" = 'v' AND ...`` for the non-empty filters (validated names only)."""
    return " AND ".join(f'"{k}" = {_lit(v)}' for k, v in sorted(filters.items()) if v)


def _tag_where(filters: dict[str, str], extra: Sequence[str] = ()) -> str:
    parts = [*extra, *([tag_conditions(filters)] if tag_conditions(filters) else [])]
    parts.append(f"time > now() - {LOOKBACK}")
    return "WHERE " + " AND ".join(parts)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _latest_rows(client: InfluxClient, q: str, keep: Sequence[str], group: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for s in client.series(q):
        for v in s.values:
            rec = dict(zip(s.columns, v))
            row: dict[str, Any] = {g: s.tags.get(g, rec.get(g)) for g in group}
            row.update({"city": rec.get("city", s.tags.get("city")), "district": rec.get("district", s.tags.get("district")),
                        "time": _iso(rec.get("time"))})
            row.update({k: rec.get(k) for k in keep})
            rows.append(row)
    return rows


_LOCATION = (Column("lat", "number", "deg", "WGS84 latitude"), Column("lon", "number", "deg", "WGS84 longitude"))


def latest_readings(cat: Catalogue, kind_name: str, where: StationIndex = _NO_INDEX) -> Dataset:
    k = cat[kind_name]
    cols = (Column("device", "string"), Column("city", "string"), Column("district", "string"), *_LOCATION,
            Column("time", "datetime", description="device timestamp, UTC"),
            *(Column(f.name, "number", f.unit, f"{f.sensor}") for f in k.fields))

    def fetch(client: InfluxClient, filters: dict[str, str]) -> list[dict[str, Any]]:
        fields = ", ".join(f'"{f}"' for f in k.field_names)
        q = (f'SELECT {fields}, "city", "district" FROM "{k.measurement}" {_tag_where(filters)} '
             f'GROUP BY "device" ORDER BY time DESC LIMIT 1')
        rows = _latest_rows(client, q, k.field_names, ("device",))
        where.locate(rows)
        return rows

    return Dataset(f"{kind_name}-latest", f"Latest readings: {k.title}",
                   f"Most recent reading of every {k.title.lower()} (within {LOOKBACK}).", cols, fetch, ("device",),
                   update_s=k.report_interval_s, kind=kind_name)


def ispu(pollutant_default: str | None = None) -> Dataset:
    cols = (Column("device", "string"), Column("pollutant", "string",
                                                  description=f"{', '.join(ISPU_POLLUTANTS)}, or {M.POLLUTANT_MAX} "
                                                              "(station index)"),
            Column("city", "string"), Column("district", "string"), Column("time", "datetime"),
            Column("value", "number", "1", f"ISPU ({ISPU_REGULATION})"), Column("category", "string"),
            Column("category_level", "integer", description="1 Baik .. 5 Berbahaya"),
            Column("concentration", "number", "ug/m3", "24-hour mean of the valid hourly means"),
            Column("provisional", "integer", description="1 when fewer than 18 of the 24 hourly means were "
                                                         "valid (completeness rule, docs/analytics.md)"),
            Column("hours", "integer", "h", "valid hourly means in the 24 hours"),
            Column("samples", "integer", description="readings in the 24 hours"))
    keep = M.ISPU.names("value", "category", "category_level", "concentration", "provisional", "hours", "samples")
    selected = ", ".join(f'"{k}"' for k in keep)

    def fetch(client: InfluxClient, filters: dict[str, str]) -> list[dict[str, Any]]:
        q = (f'SELECT {selected}, "city", "district" FROM "{M.ISPU.name}" '
             f'{_tag_where(filters)} GROUP BY "device", "pollutant" ORDER BY time DESC LIMIT 1')
        return _latest_rows(client, q, keep, ("device", "pollutant"))

    return Dataset("air-ispu", "ISPU per station",
                   "Latest Indeks Standar Pencemar Udara per station and pollutant (pollutant=max: the station's index).",
                   cols, fetch, ("device", "pollutant"))


def water_compliance() -> Dataset:
    cols = (Column("device", "string"), Column("parameter", "string", description=f"catalogue field, or {M.PARAMETER_ALL}"),
            Column("city", "string"), Column("district", "string"), Column("time", "datetime"),
            Column("value", "number"), Column("limit_lo", "number"), Column("limit_hi", "number"),
            Column("compliant", "integer", description="1 within the limits, 0 not"))
    keep = M.WATER_COMPLIANCE.names("value", "limit_lo", "limit_hi", "compliant")
    selected = ", ".join(f'"{k}"' for k in keep)

    def fetch(client: InfluxClient, filters: dict[str, str]) -> list[dict[str, Any]]:
        q = (f'SELECT {selected}, "city", "district" FROM "{M.WATER_COMPLIANCE.name}" '
             f'{_tag_where(filters)} GROUP BY "device", "parameter" ORDER BY time DESC LIMIT 1')
        return _latest_rows(client, q, keep, ("device", "parameter"))

    return Dataset("water-compliance", "Water compliance per sampling point",
                   "Latest compliance of each sampling point with the drinking-water limits, per parameter.",
                   cols, fetch, ("device", "parameter"))


def bin_fill(cat: Catalogue) -> Dataset:
    k = cat.single(cat.with_fill_level(), "a fill level")
    forecast = M.BIN_FORECAST.names("hours_to_full", "full_by_tomorrow", "priority")
    cols = (Column("device", "string"), Column("city", "string"), Column("district", "string"),
            Column("time", "datetime"), Column("fill", "number", k.field(k.fill_level).unit),
            Column("hours_to_full", "number", "h", "forecast (analytics)"),
            Column("full_by_tomorrow", "integer"), Column("priority", "integer", description="collection rank, 1 first"))

    def fetch(client: InfluxClient, filters: dict[str, str]) -> list[dict[str, Any]]:
        q = (f'SELECT "{k.fill_level}" AS "fill", "city", "district" FROM "{k.measurement}" {_tag_where(filters)} '
             f'GROUP BY "device" ORDER BY time DESC LIMIT 1')
        rows = _latest_rows(client, q, ("fill",), ("device",))
        cols_fc = ", ".join(f'"{c}"' for c in forecast)
        fq = (f'SELECT {cols_fc} FROM "{M.BIN_FORECAST.name}" {_tag_where(filters)} '
              f'GROUP BY "device" ORDER BY time DESC LIMIT 1')
        fc = {s.tags["device"]: dict(zip(s.columns, s.values[0])) for s in client.series(fq) if s.values}
        for r in rows:
            f = fc.get(r["device"], {})
            r.update({c: f.get(c) for c in forecast})
        return rows

    return Dataset("waste-bins", "Waste bin fill levels",
                   "Latest fill level of every bin with the analytics forecast (hours to full, collection priority).",
                   cols, fetch, ("device",))


def is_online(online: Any, stale: Any, last_seen_ms: Any, interval_s: float, stale_after: float,
              now_ms: int) -> bool:
    """Shown online only if the gateway says online, not stale, and a message came within
    ``stale_after`` report intervals: a lifecycle "online" is not refreshed while a device
    silently stops, so the last message's age decides."""
    if online != 1 or stale == 1 or not isinstance(last_seen_ms, (int, float)):
        return False
    return now_ms - last_seen_ms <= stale_after * interval_s * 1000


def stations(cat: Catalogue, where: StationIndex = _NO_INDEX, stale_after: float = 3.0) -> Dataset:
    cols = (Column("device", "string"), Column("kind", "string", description=", ".join(cat.kind_names)),
            Column("city", "string"), Column("district", "string"), *_LOCATION,
            Column("time", "datetime", description="last lifecycle update"),
            Column("online", "integer", description=f"1 reporting (last message within {stale_after:g} report "
                                                    "intervals), 0 not"),
            Column("last_seen", "datetime", description="last message from the device, UTC"))
    intervals = {k.name: float(k.report_interval_s) for k in cat}
    keep = M.DEVICE_STATUS.names("online", "stale", "last_seen_ms", "kind")
    selected = ", ".join(f'"{k}"' for k in keep)

    def fetch(client: InfluxClient, filters: dict[str, str]) -> list[dict[str, Any]]:
        # battery and firmware stay internal: only whether a station reports is public
        q = (f'SELECT {selected}, "city", "district" FROM "{M.DEVICE_STATUS.name}" '
             f'{_tag_where(filters)} GROUP BY "device" ORDER BY time DESC LIMIT 1')
        rows = _latest_rows(client, q, keep, ("device",))
        now_ms = int(time.time() * 1000)
        for r in rows:
            seen = r.pop("last_seen_ms")
            r["online"] = int(is_online(r["online"], r.pop("stale"), seen, intervals.get(str(r["kind"]), 60.0),
                                        stale_after, now_ms))
            r["last_seen"] = _iso(seen)
        where.locate(rows)
        return rows

    return Dataset("stations", "Monitoring stations", "Every sensor station with its kind, location and "
                   "whether it is currently reporting.", cols, fetch, ("device",))


def all_datasets(cat: Catalogue, where: StationIndex = _NO_INDEX, stale_after: float = 3.0) -> dict[str, Dataset]:
    ds = [stations(cat, where, stale_after), *(latest_readings(cat, k.name, where) for k in cat), ispu(),
          water_compliance(), bin_fill(cat)]
    return {d.id: d for d in ds}


def page(rows: list[dict[str, Any]], sort_key: Sequence[str], limit: int, offset: int) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda r: tuple(str(r.get(k) or "") for k in sort_key))
    return rows[offset:offset + limit]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    # a text cell starting like a formula would be executed by spreadsheet programs
    # (OWASP "CSV injection"): prefix it with a quote; numbers (also negative) stay numbers
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def csv_header(c: Column) -> str:
    """``pm25 [ug/m3]``: the unit travels with the column into any spreadsheet."""
    return f"{c.name} [{c.unit}]" if c.unit else c.name


def to_csv(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_header(c) for c in columns])
    for r in rows:
        w.writerow([_cell(r.get(c.name)) for c in columns])
    return buf.getvalue()
