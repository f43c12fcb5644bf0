"""Line-protocol escaping read back from the real InfluxDB 1.x: what we write is what we get.

Values come from hypothesis (collected first, then written in ONE /write per
test so the database round trip stays cheap) plus a fixed list of the nasty
cases. Where InfluxDB cannot store a character (newline in a tag, a backslash
before a separator), the expectation is the documented substitution
(``lineprotocol.stored_key``), never a failed write or a silently different value.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from kotacerdas import lineprotocol as lp

NASTY = [
    "a b", "a,b", "a=b", 'a"b', "a\\b", "a\\", "a\\\\", "\\", "\\\\\\", "a\\ b", "a\\,b", "a\\=b", "x\\\\y",
    " lead", "trail ", "  ", ",", "=", '"', "'", "a\nb", "\n", "a\r\nb", "a\tb", "ü日本💧", "Kebayoran Baru, Jakarta=Selatan",
    "a\\\nb", 'say "hi", ok=1', "\\ ", "#hash", "null", "\x7f", "\u200b", "\ufeffbom", "a\\\\ ", "日\\",
    'a\\"b', 'a\\\\"b', '\\"', '"\\',
]

# Everything a person or a registry could type, including separators, quotes, backslashes and line breaks.
# Values are built from tokens, separators as likely as arbitrary unicode runs, so
# nearly every value mixes backslashes, quotes, separators and line breaks with text.
_special = st.sampled_from([" ", ",", "=", '"', "'", "\\", "\\\\", "\n", "\r", "\t", "#", "\x00"])
values = st.lists(
    st.one_of(_special, st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=3)),
    min_size=1, max_size=8,
).map("".join)
COLLECT = hsettings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def collect(strategy) -> list:
    out: list = []

    @COLLECT
    @given(strategy)
    def gather(x):
        out.append(x)

    gather()
    return out


def _rows(influx, q: str) -> list[dict]:
    return [dict(zip(s.columns, row)) for s in influx.series(q) for row in s.values]


def test_tag_values_and_string_fields_read_back_identical(influx):
    vals = list(dict.fromkeys(NASTY + collect(values)))
    lines = [lp.format_line("rt", {"v": v, "i": str(i)}, {"s": v, "n": i}, 1_000 + i) for i, v in enumerate(vals)]
    influx.write(lines)  # one request; raises on any line InfluxDB cannot parse
    rows = {int(r["i"]): r for r in _rows(influx, 'SELECT "s", "n", "v", "i" FROM "rt"')}
    assert sorted(rows) == list(range(len(vals))), "every point stored"
    bad = []
    for i, v in enumerate(vals):
        r = rows[i]
        if r["s"] != v or r["v"] != lp.stored_key(v) or r["n"] != i:
            bad.append((v, r["v"], r["s"]))
    assert not bad, bad[:10]
    tag_values = {r[1] for s in influx.series('SHOW TAG VALUES FROM "rt" WITH KEY = "v"') for r in s.values}
    assert tag_values == {lp.stored_key(v) for v in vals}


def test_keys_and_field_keys_read_back_identical(influx):
    vals = list(dict.fromkeys(NASTY + collect(values)))[:150]
    # prefixes keep keys away from the reserved name "time" and from each other
    lines = [lp.format_line("keys", {f"k{v}": "x"}, {f"f{v}": 1.0}, 1_000 + i) for i, v in enumerate(vals)]
    influx.write(lines)
    tag_keys = {r[0] for s in influx.series('SHOW TAG KEYS FROM "keys"') for r in s.values}
    field_keys = {r[0] for s in influx.series('SHOW FIELD KEYS FROM "keys"') for r in s.values}
    assert tag_keys == {lp.stored_key(f"k{v}") for v in vals}
    assert field_keys == {lp.stored_key(f"f{v}") for v in vals}


def test_measurement_names_with_separators(influx):
    names = ["m a", "m,a", "m=a", 'm"a', "m\\a", "m\\", "日本 air", 'm\\"a', 'm\\\\"a']
    influx.write([lp.format_line(n, {"t": "x"}, {"f": 1.0}, 1) for n in names])
    got = {r[0] for s in influx.series("SHOW MEASUREMENTS") for r in s.values}
    expected = {n.replace("\\", lp.BACKSLASH_SUBSTITUTE) if n.endswith("\\") else n for n in names}
    assert got == expected


def test_substitutions_are_the_documented_ones():
    """Newlines in tags become a space; a backslash InfluxDB 1.x cannot store becomes U+FF3C; the rest is kept."""
    assert lp.stored_key("a\nb") == "a b"
    assert lp.stored_key("a\\") == "a\uff3c"
    assert lp.stored_key("a\\ b") == "a\uff3c b"
    assert lp.stored_key("a\\b") == "a\\b"
    assert lp.stored_key("a\rb") == "a\rb"
    assert lp.escape_key("a\nb") == "a\\ b"
    assert lp.escape_string_field("a\nb\\\"") == '"a\nb\\\\\\""'


def test_lone_surrogates_never_make_a_write_raise(influx):
    line = lp.format_line("sur", {"t": "a\ud800b"}, {"s": "x\udfffy"}, 1)
    influx.write([line])
    r = _rows(influx, 'SELECT "s", "t" FROM "sur"')
    assert r and r[0]["t"] == "a\ufffdb" and r[0]["s"] == "x\ufffdy"


def test_unstorable_numbers_are_dropped_not_written():
    assert lp.format_line("m", {"t": "x"}, {"a": float("nan"), "b": float("inf"), "c": None}) is None
    line = lp.format_line("m", {"t": "", "u": None}, {"a": float("nan"), "b": 2.5, "c": 3, "d": True})
    assert line == "m b=2.5,c=3i,d=true"
