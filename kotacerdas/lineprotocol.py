"""InfluxDB line protocol: escaping and formatting (shared by ingest and analytics).

Escaping rules (InfluxDB 1.x "Line protocol reference", Special characters):
measurement names escape comma and space; tag keys, tag values and field keys
escape comma, equals sign and space; string field values are double-quoted with
``"`` and ``\\`` backslash-escaped. Empty tag values are not allowed: such tags are dropped.

What InfluxDB 1.6.7 actually stores was established by experiment
(tests/reliability/test_lineprotocol_roundtrip.py writes to the real daemon and
reads back); where it cannot store a character, the substitution is fixed here:

* Tag keys/values, field keys, measurements: the parser's scanner treats ``\\``
  as "skip the next byte", but only ``\\,``, ``\\=`` and ``\\ `` are unescaped;
  ``\\\\`` is NOT unescaped (it is stored as two backslashes). So a backslash
  followed by an ordinary character is written as-is and reads back identical,
  while a backslash that ends the value or stands right before a comma, ``=``,
  space or newline cannot be represented at all (the write fails with "invalid
  tag format"). Such a backslash is replaced by U+FF3C FULLWIDTH REVERSE SOLIDUS
  (``＼``), which still reads as a backslash to a person.
* Field keys (not tags) also unescape ``\\"`` to ``"``, so there a backslash
  right before a double quote is written doubled and reads back identical
  (:func:`escape_field_key`); measurement names are unescaped that way twice, so
  there it is written tripled.
* Newlines (``\\n``) cannot be stored in tag keys/values, field keys or
  measurement names (line protocol is newline-delimited): each is replaced by a
  space (escaped). Carriage returns and tabs are stored as they are.
* String field values DO keep raw newlines: InfluxDB 1.x's scanner honours the
  double quotes, and stores ``\\n`` inside a string literally (not as a newline).
  Consequence for callers: a formatted line may contain a newline inside a quoted
  string field, so never split :func:`format_lines` output on ``\\n`` to recover
  points; keep lines as the list :func:`format_line` returned.
* Lone UTF-16 surrogates (which ``json.loads`` accepts from ``"\\ud800"``) cannot
  be encoded as UTF-8 and are replaced by U+FFFD so a write never raises.
* Not representable and left to the caller: a measurement starting with ``#``
  (the line is a comment and silently ignored), empty keys, and the key ``time``
  (InfluxDB refuses the point with a 400 "partial write").
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

BACKSLASH_SUBSTITUTE = "\uff3c"
NEWLINE_SUBSTITUTE = " "

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": "\\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": "\\ "})
# a backslash that would escape the character after it (or the separator after the value)
_BAD_BS_KEY = re.compile(r"\\(?=[ ,=\n]|\Z)")
_BAD_BS_MEAS = re.compile(r"\\(?=[ ,\n]|\Z)")
_BS_QUOTE = re.compile(r'\\(?=")')


def _utf8_safe(s: str) -> str:
    if s.isascii():  # the hot path: ids, catalogue names
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def escape_measurement(s: str) -> str:
    if "\\" in s:
        # measurement names are unescaped twice for `\"`: that backslash needs two more
        s = _BS_QUOTE.sub(r"\\\\\\", _BAD_BS_MEAS.sub(BACKSLASH_SUBSTITUTE, s))
    return _utf8_safe(s).translate(_MEAS)


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys (see the module docstring for the substitutions)."""
    if "\\" in s:
        s = _BAD_BS_KEY.sub(BACKSLASH_SUBSTITUTE, s)
    return _utf8_safe(s).translate(_KEY)


def escape_field_key(s: str) -> str:
    """Field keys: as :func:`escape_key`, plus a backslash before ``"`` doubled (InfluxDB unescapes ``\\"`` there)."""
    if "\\" in s:
        s = _BS_QUOTE.sub(r"\\\\", _BAD_BS_KEY.sub(BACKSLASH_SUBSTITUTE, s))
    return _utf8_safe(s).translate(_KEY)


def stored_key(s: str) -> str:
    """What InfluxDB 1.x will return for tag key/value or field key ``s`` written via :func:`escape_key`."""
    if "\\" in s:
        s = _BAD_BS_KEY.sub(BACKSLASH_SUBSTITUTE, s)
    return _utf8_safe(s).replace("\n", NEWLINE_SUBSTITUTE)


def escape_string_field(s: str) -> str:
    return '"' + _utf8_safe(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


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
            fparts.append(f"{escape_field_key(k)}={fv}")
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
