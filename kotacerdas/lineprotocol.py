"""InfluxDB line protocol: escaping and formatting (shared by ingest and analytics).

Escaping rules (InfluxDB 1.x "Line protocol reference", Special characters):
measurement names escape comma and space; tag keys, tag values and field keys
escape comma, equals sign and space; string field values are double-quoted with
``"`` and ``\\`` backslash-escaped. Newlines cannot be represented in tags or keys
and are replaced by a space here (line protocol is newline-delimited).
Empty tag values are not allowed: such tags are dropped.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})


def escape_measurement(s: str) -> str:
    return s.translate(_MEAS)


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys. A trailing backslash would escape the separator, so it is doubled."""
    out = s.translate(_KEY)
    return out + "\\" if out.endswith("\\") and not out.endswith("\\\\") else out


def escape_string_field(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_field_value(v: object) -> str | None:
    """Line-protocol field value; None for values that cannot be stored (NaN, inf, None)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else None
    if v is None:
        return None
    return escape_string_field(str(v))


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, object],
    ts: int | None = None,
) -> str | None:
    """One line; tags sorted by key (InfluxDB's recommendation). None if no storable field."""
    fparts = []
    for k, v in fields.items():
        fv = format_field_value(v)
        if fv is not None:
            fparts.append(f"{escape_key(k)}={fv}")
    if not fparts:
        return None
    head = escape_measurement(measurement)
    tag_s = "".join(
        f",{escape_key(k)}={escape_key(str(v))}" for k, v in sorted(tags.items()) if v not in (None, "")
    )
    line = f"{head}{tag_s} {','.join(fparts)}"
    return line if ts is None else f"{line} {int(ts)}"


def format_lines(rows: Iterable[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]) -> str:
    return "\n".join(ln for ln in (format_line(*r) for r in rows) if ln is not None)
