"""Shared knowledge stays in kotacerdas/: no package names a derived measurement by a string
literal, none picks per-kind behaviour by comparing with a kind's name, and none writes an MQTT channel
name out (``contract.CH_*``).

Measurement names come from kotacerdas.measurements (``M.ISPU.name``), per-kind behaviour from
catalogue properties (``kind.index``, ``kind.limits``, ``kind.fill_level``). The scan reads the
source tokens (not comments), so a reappearing ``FROM "ispu"``, ``format_line("qc", ...)`` or
``kind.name == "air"`` fails here with its file and line.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from kotacerdas import contract
from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parents[1]
# firmware/ is left out: the device code runs on MicroPython without kotacerdas (its schema module
# is generated from the catalogue) and a board's sensor suite is per kind by nature.
PACKAGES = ("analytics", "bench", "dashboards", "devtools", "gateway", "ingest", "simulators")

# (path, literal, the source line must contain this) -> why the literal is not the shared fact
ALLOWED: dict[tuple[str, str, str], str] = {
    ("dashboards/definitions.py", "ispu", '"ispu", unit="none"'):
        "the geomap colours by the panels' column alias for the station index (AS \"ispu\"), not by "
        "the measurement; the query reads FROM M.ISPU.name",
    ("dashboards/definitions.py", "ispu", '"options": "ispu"'):
        "table override matching that column alias",
    ("dashboards/definitions.py", "ispu", '"time", "ispu", "category"'):
        "expected result columns: the alias again",
    ("dashboards/public.py", "ispu", '"ispu": [{'):
        "key of the /v1/legend JSON the public page reads (a public API field, not a measurement)",
    ("dashboards/definitions.py", "air", 'UID["air"]'):
        "key of the dashboard-uid table (the board is named air), not a catalogue comparison",
    ("dashboards/definitions.py", "water", 'UID["water"]'):
        "key of the dashboard-uid table (the board is named water), not a catalogue comparison",
    ("gateway/adapters.py", "status", 'parts[1] == "status"'):
        "ESPHome's own availability topic ({prefix}/{node}/status), a vendor topic, not our channel",
    ("dashboards/ngsi.py", "status", 'f.fiware == "status"'):
        "the FIWARE WasteContainer attribute named status (Smart Data Models), not a channel",
    ("gateway/cli.py", "config", 'args.action == "config"'):
        "the CLI sub-command named config",
    ("gateway/cli.py", "status", 'args.action == "status"'):
        "the CLI sub-command named status",
}

# calls that take a channel: a literal channel there is the contract's name written out again
_CHANNEL_CALLS = frozenset({"device_topic", "device_subscription", "platform_filter", "publish_to_device",
                            "pf", "t"})

_FROM = re.compile(r'FROM\s+\\?"([A-Za-z_0-9]+)\\?"')


def _literal(tok: tokenize.TokenInfo) -> object:
    try:
        return ast.literal_eval(tok.string)
    except (ValueError, SyntaxError):
        return None  # f-strings


def _is_comparison(toks: list[tokenize.TokenInfo], i: int) -> bool:
    """A string token used as ``x == "s"``, ``"s" != x``, ``x in ("s", ...)``-free forms,
    ``m["s"]`` (subscript) or ``m.get("s")``."""
    prev = toks[i - 1] if i else None
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if nxt is not None and (nxt.string in ("==", "!=") or (nxt.type == tokenize.NAME and nxt.string in ("in", "not"))):
        return True
    if prev is None:
        return False
    if prev.string in ("==", "!="):
        return True
    if prev.string == "[" and i >= 2 and (toks[i - 2].type == tokenize.NAME or toks[i - 2].string in (")", "]")):
        return i + 2 < len(toks) and nxt is not None and nxt.string == "]"
    return prev.string == "(" and i >= 2 and toks[i - 2].string == "get"


def _findings() -> list[tuple[str, str, str, int]]:
    """(path, kind of finding, literal, line number) for every suspicious literal."""
    cat = load_catalogue()
    measurements = {m.name for m in M.ALL}
    # "alerts" and "deadletter" are also MQTT platform channels (home: kotacerdas.contract), so a bare
    # literal of those is ambiguous; for them only query text and format_line(...) count
    bare = measurements - set(contract.PLATFORM_CHANNELS)
    kinds = set(cat.kind_names) | {k.measurement for k in cat}
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            src = path.read_text("utf-8")
            toks = [t for t in tokenize.generate_tokens(io.StringIO(src).readline)
                    if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                                      tokenize.DEDENT)]
            for i, tok in enumerate(toks):
                if tok.type != tokenize.STRING:
                    continue
                value = _literal(tok)
                writer = i >= 2 and toks[i - 1].string == "(" and toks[i - 2].string == "format_line"
                if value in bare or (writer and value in measurements):
                    out.append((rel, "measurement name", str(value), tok.start[0]))
                elif value in kinds and _is_comparison(toks, i):
                    out.append((rel, "kind-name comparison", str(value), tok.start[0]))
                out += [(rel, "measurement in a query", m, tok.start[0])
                        for m in _FROM.findall(tok.string) if m in measurements]
            out += [(rel, "channel literal", ch, line) for ch, line in _channel_literals(ast.parse(src))]
    return out


def _channel_literals(tree: ast.AST) -> list[tuple[str, int]]:
    """(channel, line) of an MQTT channel name written as a string where it is compared with a topic
    level (``channel == "deadletter"``, ``"norm" in parts``) or passed to a topic builder."""
    channels = set(contract.DEVICE_CHANNELS) | set(contract.PLATFORM_CHANNELS)

    def hits(nodes: list[ast.expr]) -> list[tuple[str, int]]:
        return [(n.value, n.lineno) for n in nodes
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in channels]

    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            out += hits([node.left, *node.comparators])
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in _CHANNEL_CALLS:
                out += hits(list(node.args))
    return out


def _allowed(rel: str, literal: str, line: str) -> tuple[str, str, str] | None:
    return next((key for key in ALLOWED if key[0] == rel and key[1] == literal and key[2] in line), None)


def test_no_measurement_name_or_kind_comparison_outside_kotacerdas() -> None:
    used, bad = set(), []
    for rel, what, literal, lineno in _findings():
        line = (ROOT / rel).read_text("utf-8").splitlines()[lineno - 1]
        key = _allowed(rel, literal, line)
        if key is None:
            bad.append(f"{rel}:{lineno}: {what} {literal!r}: {line.strip()}")
        else:
            used.add(key)
    assert not bad, "use kotacerdas.measurements / catalogue properties / contract.CH_* instead:\n" + "\n".join(bad)
    # an entry nothing needs any more is removed, so the list stays a list of real exceptions
    assert set(ALLOWED) == used, f"stale allow-list entries: {sorted(set(ALLOWED) - used)}"


def test_the_scan_finds_what_it_forbids(tmp_path: Path) -> None:
    src = ('q = f\'SELECT "value" FROM "ispu"\'\n'
           'if kind.name == "air":\n    pass\n'
           'k = cat["water"]\n'
           'x = fleets.get("waste_bin")\n'
           'counts["alerts"] = 1\n'
           'SIZES = {"air": 300}\n'
           'tags = ("air",)\n')
    toks = [t for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    comparisons = [t.string for i, t in enumerate(toks) if t.type == tokenize.STRING and _is_comparison(toks, i)]
    assert comparisons == ['"air"', '"water"', '"waste_bin"', '"alerts"']  # not the dict key nor the tuple
    assert _FROM.findall(toks[2].string) == ["ispu"]


def test_the_scan_finds_channel_literals() -> None:
    src = ('if channel == "deadletter":\n    pass\n'
           'ok = "norm" in parts\n'
           'contract.platform_filter(root, "alerts")\n'
           'contract.device_topic(root, c, k, d, contract.CH_ACK)\n'
           'x = {"status": 1}["status"]\n'
           'print("cmd")\n')
    assert _channel_literals(ast.parse(src)) == [("deadletter", 1), ("norm", 3), ("alerts", 4)]
