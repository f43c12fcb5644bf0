"""InfluxQL building blocks and Grafana's interpolation of them.

The dashboards use raw InfluxQL with Grafana's macros: ``$timeFilter``,
``$__interval`` and ``/^$var$/`` regex matches on template variables. The
verification tests execute every panel query the way Grafana would send it, so
:func:`interpolate` reproduces Grafana's InfluxDB datasource rules:

* ``$timeFilter`` -> ``time >= <from>ms and time <= <to>ms`` (absolute range, epoch ms),
* ``$__interval`` -> range / max data points, rounded to a "nice" interval,
* a variable inside a regex -> its value(s) regex-escaped, several joined as ``(a|b)``,
  "All" -> the variable's ``allValue`` (``.*`` here).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

DEVICE_VARS = ("city", "district", "device")

# Grafana's kbn.round_interval table: (upper bound of the raw interval in ms, chosen interval)
_NICE_MS: tuple[tuple[float, int], ...] = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (450000, 300000), (1050000, 600000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000),
)


def var_filter(names: Sequence[str] = DEVICE_VARS) -> str:
    return " AND ".join(f'"{n}" =~ /^${n}$/' for n in names)


def where(*extra: str, names: Sequence[str] = DEVICE_VARS) -> str:
    parts = [*extra]
    if names:
        parts.append(var_filter(names))
    parts.append("$timeFilter")
    return "WHERE " + " AND ".join(parts)


def tag_values(measurement: str, key: str, depends_on: Sequence[str] = ()) -> str:
    q = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"'
    if depends_on:
        q += " WHERE " + var_filter(depends_on)
    return q


def nice_interval_ms(range_ms: int, max_points: int = 1000, min_ms: int = 1000) -> int:
    # as Grafana: round first, then the panel's minimum interval wins outright
    raw = range_ms / max(max_points, 1)
    nice = next((n for bound, n in _NICE_MS if raw < bound), 604800000)
    return max(nice, min_ms)


def _fmt_ms(ms: int) -> str:
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _regex_escape(v: str) -> str:
    # Grafana escapes regex metacharacters in InfluxDB variable values (lodash-like escape)
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda m: "\\" + m.group(0), v)


def interpolate(
    query: str,
    *,
    from_ms: int,
    to_ms: int,
    variables: Mapping[str, Sequence[str] | None] | None = None,
    max_points: int = 1000,
    min_interval_ms: int = 1000,
) -> str:
    """The query as Grafana would send it. ``variables[name] = None`` means "All"."""
    q = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    q = q.replace("$__interval", _fmt_ms(nice_interval_ms(to_ms - from_ms, max_points, min_interval_ms)))
    for name, values in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        if values is None:
            text = ".*"
        elif len(values) == 1:
            text = _regex_escape(values[0])
        else:
            text = "(" + "|".join(_regex_escape(v) for v in values) + ")"
        q = re.sub(rf"\${re.escape(name)}\b", lambda _m: text, q)
    leftover = re.findall(r"\$\w+", q)
    if leftover:
        raise ValueError(f"uninterpolated variables {leftover} in {q!r}")
    return q
