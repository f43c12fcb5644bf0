"""Check generated dashboards against our JSON Schema and the invariants a schema cannot state."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).parent / "schema" / "dashboard.schema.json"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(dashboard: dict[str, Any]) -> list[str]:
    out = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(dashboard)]
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        out.append("panel ids are not unique")
    for p in dashboard.get("panels", []):
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            out.append(f"panel {p.get('title')!r} overflows the 24-column grid")
    # panels must not overlap (Grafana silently pushes them around otherwise)
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard.get("panels", []):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    out.append(f"panel {p['title']!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = p["title"]
            else:
                continue
            break
    names = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for p in dashboard.get("panels", []):
        for t in p.get("targets", []):
            used = set(re.findall(r"\$(\w+)", t["query"])) - {"timeFilter", "__interval"}
            if used - names:
                out.append(f"panel {p['title']!r} uses undefined variables {sorted(used - names)}")
    return out
