"""InfluxDB 1.6.7 memory and write rate by number of series: the storage side of docs/scale.md.

For each series count a private influxd (the project's config, devtools/stack.py) under a temp
dir gets ``--points`` points per series of the catalogue's air measurement (the widest kind),
written by one client in batches of 5,000 gzip lines. Printed per count: write rate (points/s),
influxd RSS after the writes, and MiB per 1,000 series. The baseline in the same run is the
smallest count: the ratio columns show what more series cost per point and in memory.

    flock /tmp/kc-bench.lock .venv/bin/python bench/influx_series_memory.py --series 1000,10000,50000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.settings import InfluxSettings
from devtools.stack import InfluxProcess, free_port

from ingest.convert import tag_prefix


def _write(c: InfluxClient, lines: list[str]) -> int:
    """A busy influxd answers 500 "timeout" while it still applies the write: retrying is idempotent."""
    for attempt in range(5):
        try:
            c.write(lines, precision="ns")
            return len(lines)
        except InfluxError as exc:
            if exc.status not in (0, 500) or attempt == 4:
                raise
            time.sleep(1 + attempt)
    return 0


def run(n_series: int, points: int, tmp: Path) -> dict:
    kind = max(load_catalogue(), key=lambda k: len(k.fields))
    fields = ",".join(f"{f.name}={float(f.typical)!r}" for f in kind.fields)
    ix = InfluxProcess(tmp / f"ix{n_series}", free_port(), rpc_port=free_port()).start()
    try:
        with InfluxClient(InfluxSettings(url=ix.url, database="bench", timeout_s=120)) as c:
            c.create_database()
            prefixes = [tag_prefix(kind.measurement, {"city": f"city{i % 100:03d}", "device": f"dev-{i:06d}",
                                                      "district": f"d{i % 50:02d}", "kind": kind.name})
                        for i in range(n_series)]
            t_base = (int(time.time()) - 86_400) * 10**9
            lines: list[str] = []
            written = 0
            t0 = time.monotonic()
            for p in range(points):
                ts = t_base + p * 60 * 10**9
                for pre in prefixes:
                    lines.append(f"{pre} {fields},seq={p}i {ts}")
                    if len(lines) == 5000:
                        written += _write(c, lines)
                        lines = []
            if lines:
                written += _write(c, lines)
            secs = time.monotonic() - t0
            time.sleep(2)
            rss = psutil.Process(ix.pid()).memory_info().rss
            got = c.scalar(f'SELECT count("seq") FROM "{kind.measurement}"')
        return {"series": n_series, "points": written, "stored": got, "write_points_s": round(written / secs),
                "influxd_rss_mib": round(rss / 2**20), "mib_per_1k_series": round(rss / 2**20 / (n_series / 1000), 1)}
    finally:
        ix.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", default="1000,10000,50000")
    ap.add_argument("--points", type=int, default=10, help="points per series")
    a = ap.parse_args()
    from tqdm import tqdm

    rows = []
    with tempfile.TemporaryDirectory(prefix="kc-series-") as td:
        for n in tqdm([int(x) for x in a.series.split(",")], desc="series counts"):
            rows.append(run(n, a.points, Path(td)))
            tqdm.write(json.dumps(rows[-1]))
    base = rows[0]
    for r in rows:
        print(f"{r['series']:>7} series: {r['write_points_s']:>7} points/s ({r['write_points_s'] / base['write_points_s']:.2f}x), "
              f"influxd {r['influxd_rss_mib']} MiB ({r['mib_per_1k_series']} MiB per 1,000 series)")
    print(json.dumps(rows))
    return 0 if all(r["stored"] == r["points"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
