"""History of a sensor kind over a time range, at the resolution the retention policies keep.

Ingest keeps three resolutions (ingest/schema.py): raw readings in the default policy for
``settings.ingest.raw_retention``, 1-minute aggregates in ``agg_1m`` for
``agg_1m_retention`` and 1-hour aggregates in ``agg_1h`` for ``agg_1h_retention``
(aggregate fields: ``f`` mean, ``f_min``, ``f_max``, ``n`` readings). A request names a
resolution or ``auto``; a range that starts before a resolution's retention is refused
with the resolutions that do reach that far back.

While the raw readings of a range are still kept, 1-minute and 1-hour rows are computed from them
at request time (the continuous query's own aggregates, in a subquery) instead of read from
``agg_1m``/``agg_1h``: a continuous query aggregates only the interval that just ended, so readings
that arrive late (a gateway's store-and-forward after an outage, a replayed day) never reach the
aggregate policies, and a 1-hour request over them answered nothing while the raw data was there.
Older ranges, where only the aggregates are kept, read the policies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from kotacerdas import measurements as M
from kotacerdas.catalogue import Kind
from kotacerdas.settings import Settings

RESOLUTIONS = ("raw", "1m", "1h")
_POLICY = {"raw": None, "1m": "agg_1m", "1h": "agg_1h"}
# auto picks the finest resolution whose page of rows still spans a useful stretch of time
AUTO_MAX_SPAN_MS = {"raw": 2 * 86_400_000, "1m": 60 * 86_400_000}

_DUR = re.compile(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)")
_UNIT_MS = {"ns": 1e-6, "u": 1e-3, "µ": 1e-3, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000}


class HistoryError(ValueError):
    """A request the retention policies cannot answer (the API maps it to 422)."""


def duration_ms(text: str) -> float:
    """InfluxQL duration ("30d", "1h30m", "INF") in ms; INF and 0 (= infinite in InfluxDB) -> inf."""
    t = text.strip()
    if t.upper() == "INF" or t == "0" or t == "0s":
        return float("inf")
    parts = _DUR.findall(t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise ValueError(f"not an InfluxQL duration: {text!r}")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def retention_ms(settings: Settings) -> dict[str, float]:
    i = settings.ingest
    return {"raw": duration_ms(i.raw_retention), "1m": duration_ms(i.agg_1m_retention),
            "1h": duration_ms(i.agg_1h_retention)}


def choose(resolution: str, start_ms: int, end_ms: int, now_ms: int, retention: dict[str, float]) -> str:
    """The resolution to read: the requested one if its retention reaches ``start``, else an error."""
    reach = [r for r in RESOLUTIONS if start_ms >= now_ms - retention[r]]
    if resolution == "auto":
        for r in reach:
            if end_ms - start_ms <= AUTO_MAX_SPAN_MS.get(r, float("inf")):
                return r
        if reach:
            return reach[-1]
        raise HistoryError("no resolution is kept that far back")
    if resolution not in RESOLUTIONS:
        raise HistoryError(f"resolution must be auto or one of {', '.join(RESOLUTIONS)}")
    if resolution not in reach:
        raise HistoryError(f"resolution {resolution} is kept for {_human(retention[resolution])} only; "
                           f"for this start use {' or '.join(reach) or 'nothing (older than every policy)'}")
    return resolution


def _human(ms: float) -> str:
    return "ever" if ms == float("inf") else f"{ms / 86_400_000:g} days"


@dataclass(frozen=True)
class HistoryQuery:
    select: str  # InfluxQL for one page
    count: str  # InfluxQL counting the rows of the whole range
    value_columns: tuple[str, ...]


def columns_for(kind: Kind, resolution: str, fields: Sequence[str]) -> tuple[str, ...]:
    if resolution == "raw":
        return tuple(fields)
    out: list[str] = []
    for f in fields:
        out += [f, f"{f}_min", f"{f}_max"]
    return (*out, "n")


INTERVAL_MS = {"1m": 60_000, "1h": 3_600_000}


def from_raw(resolution: str, start_ms: int, now_ms: int, retention: dict[str, float]) -> bool:
    """Aggregate the raw readings at request time: an aggregate resolution over a range whose raw
    readings are still kept (the bucket holding ``start`` included)."""
    if resolution not in INTERVAL_MS:
        return False
    return start_ms - start_ms % INTERVAL_MS[resolution] >= now_ms - retention["raw"]


def build(kind: Kind, resolution: str, fields: Sequence[str], where_tags: str, start_ms: int, end_ms: int,
          limit: int, offset: int, raw_aggregate: bool = False) -> HistoryQuery:
    """``where_tags``: already-escaped tag conditions (``"device" = '...' AND ...``) or "".
    ``raw_aggregate``: compute a 1m/1h resolution from the raw readings (see :func:`from_raw`);
    the range then starts at the beginning of its first interval, so every row is a whole one."""
    cols = columns_for(kind, resolution, fields)
    if raw_aggregate and resolution in INTERVAL_MS:
        start_ms -= start_ms % INTERVAL_MS[resolution]
        cond = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms" + (f" AND {where_tags}" if where_tags else "")
        agg = M.aggregate_terms(fields)  # as ingest's continuous queries aggregate them
        sub = (f'SELECT {", ".join(agg)} FROM "{kind.measurement}" WHERE {cond} '
               f'GROUP BY time({resolution}), "device", "city", "district" fill(none)')
        sel = ", ".join(f'"{c}"' for c in cols)
        q = (f'SELECT {sel}, "device", "city", "district" FROM ({sub}) '
             f"ORDER BY time ASC LIMIT {int(limit)} OFFSET {int(offset)}")
        return HistoryQuery(q, f'SELECT count("n") FROM ({sub})', cols)
    rp = _POLICY[resolution]
    src = f'"{rp}"."{kind.measurement}"' if rp else f'"{kind.measurement}"'
    cond = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms" + (f" AND {where_tags}" if where_tags else "")
    sel = ", ".join(f'"{c}"' for c in cols)
    q = (f'SELECT {sel}, "device", "city", "district" FROM {src} WHERE {cond} '
         f"ORDER BY time ASC LIMIT {int(limit)} OFFSET {int(offset)}")
    count_field = "n" if resolution != "raw" else fields[0]
    cq = f'SELECT count("{count_field}") FROM {src} WHERE {cond}'
    return HistoryQuery(q, cq, cols)
