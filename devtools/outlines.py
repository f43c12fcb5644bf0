"""Derive the public page's base-map outlines from an openly licensed boundary file.

The page (dashboards/public/) draws city outlines under its station map. The outlines are data,
``dashboards/public/outlines.geojson``: simplified here (Douglas-Peucker in metres) from the source
polygons, with the source and licence written into every feature, so the page can show the
attribution. Not product code: run by hand when the source changes::

    python -m devtools.outlines --out dashboards/public/outlines.geojson --tolerance-m 150 \\
        depok=/path/3276.geojson cirebon=/path/3274.geojson

Source used (docs/dashboards.md "Base map"): yusufsyaifudin/wilayah-indonesia,
data/geojson/regency/{3276,3274}.geojson at commit fe3e180df212511685971ef97c9933e90af42d90,
licence ODbL 1.0 as the repository states (polygons from OpenStreetMap via the Overpass API).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

# 6371 km: mean Earth radius; equirectangular metres are exact enough within one city
M_PER_DEG = math.pi * 6_371_000 / 180

SOURCE = ("OpenStreetMap contributors, via yusufsyaifudin/wilayah-indonesia "
          "data/geojson/regency (commit fe3e180df212511685971ef97c9933e90af42d90)")
LICENSE = "ODbL-1.0"
LICENSE_URL = "https://opendatacommons.org/licenses/odbl/1-0/"
ATTRIBUTION = "© OpenStreetMap contributors (ODbL)"


def _seg_dist_m(p: Sequence[float], a: Sequence[float], b: Sequence[float], coslat: float) -> float:
    """Distance (m) of point p from segment a-b; points are (lon, lat) degrees."""
    px, py = p[0] * coslat, p[1]
    ax, ay = a[0] * coslat, a[1]
    bx, by = b[0] * coslat, b[1]
    dx, dy = bx - ax, by - ay
    L2 = dx * dx + dy * dy
    t = 0.0 if L2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / L2))
    return math.hypot(px - ax - t * dx, py - ay - t * dy) * M_PER_DEG


def simplify(ring: Sequence[Sequence[float]], tolerance_m: float) -> list[list[float]]:
    """Douglas-Peucker over one closed ring of (lon, lat): keeps every vertex farther than
    ``tolerance_m`` from the simplified line, the first/last vertex and the vertex farthest from
    it (so a closed ring never collapses to a line). Returns a closed ring."""
    pts = [list(map(float, p[:2])) for p in ring]
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    if len(pts) <= 4:
        return pts
    coslat = math.cos(math.radians(sum(p[1] for p in pts) / len(pts)))
    far = max(range(len(pts)), key=lambda i: math.hypot((pts[i][0] - pts[0][0]) * coslat, pts[i][1] - pts[0][1]))
    keep = {0, far, len(pts) - 1}
    stack = [(0, far), (far, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        k = max(range(i + 1, j), key=lambda m: _seg_dist_m(pts[m], pts[i], pts[j], coslat))
        if _seg_dist_m(pts[k], pts[i], pts[j], coslat) > tolerance_m:
            keep.add(k)
            stack += [(i, k), (k, j)]
    return [pts[i] for i in sorted(keep)]


def rounded(ring: list[list[float]], decimals: int = 5) -> list[list[float]]:
    """~1 m at 5 decimals: finer than the tolerance, so rounding changes nothing visible."""
    return [[round(x, decimals), round(y, decimals)] for x, y in ring]


def outline_feature(city: str, src: dict[str, Any], tolerance_m: float) -> dict[str, Any]:
    feat = src["features"][0]
    geom = feat["geometry"]
    polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    out = [[rounded(simplify(poly[0], tolerance_m))] for poly in polys]  # outer rings only
    return {"type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": out[0]} if len(out) == 1
            else {"type": "MultiPolygon", "coordinates": out},
            "properties": {"city": city, "name": feat["properties"].get("name", city),
                           "level": "city (kota)", "simplified_m": tolerance_m,
                           "source": SOURCE, "license": LICENSE, "license_url": LICENSE_URL,
                           "attribution": ATTRIBUTION}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help="city=path/to/source.geojson")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tolerance-m", type=float, default=150.0)
    a = ap.parse_args(argv)
    feats = []
    for arg in a.sources:
        city, _, path = arg.partition("=")
        feats.append(outline_feature(city, json.loads(Path(path).read_text("utf-8")), a.tolerance_m))
    doc = {"type": "FeatureCollection", "license": LICENSE, "license_url": LICENSE_URL,
           "attribution": ATTRIBUTION, "features": feats}
    a.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", "utf-8")
    for f in feats:
        rings = f["geometry"]["coordinates"] if f["geometry"]["type"] == "Polygon" else \
            [r for p in f["geometry"]["coordinates"] for r in p]
        print(f["properties"]["city"], sum(len(r) for r in rings), "vertices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
