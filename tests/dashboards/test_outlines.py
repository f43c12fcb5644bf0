"""The base-map outlines under the public page's station map: the simplifier, and the data file it
made (licence carried, closed rings, and the right place on Earth)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from devtools import outlines

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "dashboards" / "public" / "outlines.geojson"


def _inside(pt: tuple[float, float], ring: list[list[float]]) -> bool:
    """Even-odd ray casting; pt and ring vertices are (lon, lat)."""
    x, y = pt
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _wobbly_circle(n: int = 400) -> list[list[float]]:
    """A ~3 km circle around Depok with a 30 m wobble every vertex."""
    lat0, lon0, r_m = -6.4, 106.82, 3000.0
    coslat = math.cos(math.radians(lat0))
    ring = []
    for i in range(n):
        a = 2 * math.pi * i / n
        r = r_m + 30.0 * (1 if i % 2 else -1)
        ring.append([lon0 + r * math.cos(a) / outlines.M_PER_DEG / coslat, lat0 + r * math.sin(a) / outlines.M_PER_DEG])
    ring.append(ring[0])
    return ring


def test_simplify_keeps_every_vertex_within_tolerance():
    ring = _wobbly_circle()
    coslat = math.cos(math.radians(-6.4))
    for tol in (50.0, 100.0, 300.0):
        out = outlines.simplify(ring, tol)
        assert out[0] == out[-1] and 4 <= len(out) < len(ring)
        for p in ring:  # the largest miss of an original vertex from the simplified ring
            miss = min(outlines._seg_dist_m(p, a, b, coslat) for a, b in zip(out, out[1:]))
            assert miss <= tol + 1e-6, (tol, miss)
    # a tolerance below the wobble keeps (nearly) every vertex; a coarse one few
    assert len(outlines.simplify(ring, 10.0)) > 300 and len(outlines.simplify(ring, 300.0)) < 30


def test_simplify_never_collapses_a_ring():
    square = [[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]
    out = outlines.simplify(square, 5000.0)  # tolerance far above the square's size
    assert out[0] == out[-1] and len(out) >= 3


def test_outline_file_carries_its_licence_and_closed_rings():
    doc = json.loads(DATA.read_text("utf-8"))
    assert doc["license"] == "ODbL-1.0" and "OpenStreetMap" in doc["attribution"]
    cities = {f["properties"]["city"]: f for f in doc["features"]}
    assert set(cities) == {"depok", "cirebon"}
    for f in doc["features"]:
        p = f["properties"]
        assert p["license"] == "ODbL-1.0" and "wilayah-indonesia" in p["source"] and p["simplified_m"] > 0
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and 10 <= len(ring) <= 120


def test_outlines_sit_where_the_cities_are():
    doc = json.loads(DATA.read_text("utf-8"))
    ring = {f["properties"]["city"]: f["geometry"]["coordinates"][0] for f in doc["features"]}
    # every Depok kecamatan centroid the simulators use lies inside the Depok outline, or within
    # 1 km of it: they are approximate (simulators/cities.toml); Tapos' sits 0.6 km past the east edge
    geo = tomllib.loads((ROOT / "simulators" / "cities.toml").read_text("utf-8"))
    coslat = math.cos(math.radians(-6.4))
    inside = 0
    for d in geo["depok"]["districts"]:
        pt = (d["lon"], d["lat"])
        edge_m = min(outlines._seg_dist_m(pt, a, b, coslat) for a, b in zip(ring["depok"], ring["depok"][1:]))
        inside += _inside(pt, ring["depok"])
        assert _inside(pt, ring["depok"]) or edge_m < 1000, (d["name"], edge_m)
    assert inside >= 10
    assert not _inside((106.8272, -6.1754), ring["depok"])  # Monas, Jakarta: 25 km north
    assert _inside((108.5570, -6.7320), ring["cirebon"])  # Cirebon city centre (Kejaksan)
    assert not _inside((106.82, -6.40), ring["cirebon"])
    # Depok spans ~20 x 16 km; the simplified outline keeps that size
    lons, lats = [p[0] for p in ring["depok"]], [p[1] for p in ring["depok"]]
    assert (max(lons) - min(lons)) * outlines.M_PER_DEG * math.cos(math.radians(-6.4)) == pytest.approx(20_800, rel=0.1)
    assert (max(lats) - min(lats)) * outlines.M_PER_DEG == pytest.approx(16_200, rel=0.1)

