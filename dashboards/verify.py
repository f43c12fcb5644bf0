"""Execute every panel and variable query of the dashboards against InfluxDB, as Grafana would.

``kotacerdas dashboards verify`` and the tests use this; a problem is a string saying
which dashboard/panel returned what, so a failing check is readable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from kotacerdas.influx import InfluxClient, InfluxError, Series

from dashboards.model import Dashboard, Target
from dashboards.queries import interpolate


@dataclass
class QueryResult:
    dashboard: str
    panel: str
    query: str
    target: Target | None
    series: list[Series] = field(default_factory=list)
    error: str | None = None

    def problems(self) -> list[str]:
        where = f"{self.dashboard} / {self.panel}"
        if self.error:
            return [f"{where}: query failed: {self.error} ({self.query})"]
        if not self.series or not any(s.values for s in self.series):
            return [f"{where}: no data ({self.query})"]
        out = []
        t = self.target
        for s in self.series:
            if t is None:
                continue
            missing = [c for c in t.expect_columns if c not in s.columns]
            if missing:
                out.append(f"{where}: columns {s.columns} lack {missing}")
            if tuple(sorted(s.tags)) != tuple(sorted(t.expect_group_by)):
                out.append(f"{where}: grouped by {sorted(s.tags)}, expected {sorted(t.expect_group_by)}")
            value_cols = [i for i, c in enumerate(s.columns) if c != "time"]
            if not any(row[i] is not None for row in s.values for i in value_cols):
                out.append(f"{where}: series {s.tags} has only nulls")
        return out


def default_from_ms(d: Dashboard, to_ms: int) -> int:
    """The start of the dashboard's default time range (``now-6h`` etc.) relative to ``to_ms``."""
    rel = d.time_from.removeprefix("now-")
    return to_ms - _min_ms(rel)


def run(client: InfluxClient, dashboards: Sequence[Dashboard], *, from_ms: int | None, to_ms: int,
        variables: Mapping[str, Sequence[str] | None] | None = None) -> list[QueryResult]:
    """``from_ms=None``: each dashboard over its own default range, as it opens in Grafana."""
    results: list[QueryResult] = []
    for d in dashboards:
        start = from_ms if from_ms is not None else default_from_ms(d, to_ms)
        # variables this dashboard does not define are "All" for it
        vs = {v.name: (variables or {}).get(v.name) for v in d.variables}
        for v in d.variables:
            results.append(_exec(client, d.uid, f"variable {v.name}", v.query, None, start, to_ms, vs))
        for p in d.panels():
            for t in p.targets:
                results.append(_exec(client, d.uid, p.title, t.query, t, start, to_ms, vs, _min_ms(p.interval)))
    return results


def _min_ms(interval: str | None) -> int:
    if not interval:
        return 1000
    units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
    for u in ("ms", "s", "m", "h", "d"):
        if interval.endswith(u) and interval[: -len(u)].isdigit():
            return int(interval[: -len(u)]) * units[u]
    raise ValueError(f"bad panel interval {interval!r}")


def _exec(client: InfluxClient, uid: str, panel: str, raw: str, target: Target | None, from_ms: int, to_ms: int,
          vs: Mapping[str, Sequence[str] | None], min_ms: int = 1000) -> QueryResult:
    q = interpolate(raw, from_ms=from_ms, to_ms=to_ms, variables=vs, min_interval_ms=min_ms)
    try:
        return QueryResult(uid, panel, q, target, client.series(q))
    except InfluxError as exc:
        return QueryResult(uid, panel, q, target, error=str(exc))
