"""``kotacerdas catalogue``: print the sensor catalogue as a table (or JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from rich.console import Console
from rich.table import Table

from kotacerdas.catalogue import load_catalogue


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas catalogue")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    cat = load_catalogue()
    if args.json:
        print(json.dumps({k.name: dataclasses.asdict(k) for k in cat}, indent=2))
        return 0
    con = Console()
    for kind in cat:
        t = Table(title=f"{kind.name}: {kind.title} ({kind.fiware_type}, every {kind.report_interval_s} s)")
        for col in ("field", "unit", "range", "expected", "resolution", "FIWARE", "sensor"):
            t.add_column(col)
        for f in kind.fields:
            t.add_row(f.name, f.unit, f"{f.lo:g}..{f.hi:g}", f"{f.expected_lo:g}..{f.expected_hi:g}", f"{f.resolution:g}", f.fiware or (f"measurand {f.measurand}" if f.measurand else "-"), f.sensor)
        con.print(t)
    return 0
