"""GeoJSON of dataset rows (station coordinates come from kotacerdas.stations)."""

from __future__ import annotations

from typing import Any, Sequence

from kotacerdas.stations import StationIndex

__all__ = ["StationIndex", "to_geojson"]


def to_geojson(rows: Sequence[dict[str, Any]], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946: coordinates [lon, lat], WGS84) of rows with lat/lon.

    Rows without coordinates are left out and counted in ``meta.unlocated``.
    """
    feats, unlocated = [], 0
    for r in rows:
        lat, lon = r.get("lat"), r.get("lon")
        if lat is None or lon is None:
            unlocated += 1
            continue
        props = {k: v for k, v in r.items() if k not in ("lat", "lon")}
        feats.append({"type": "Feature", "id": r.get("device"),
                      "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props})
    return {"type": "FeatureCollection", "features": feats, "meta": {**(meta or {}), "unlocated": unlocated}}
