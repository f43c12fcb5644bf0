"""FIWARE Smart Data Model entities in NGSI-LD, from the open-data rows.

Attribute names, units and scales come from the catalogue's ``fiware``,
``fiware_scale``, ``fiware_unit`` and ``measurand`` (each cited there against the
models' schema.json / spec.md). Only attributes the model defines are written: a
field without one (the bin's raw ultrasonic distance) is left out, never renamed into
an invented attribute. NGSI-LD representation per ETSI GS CIM 009 (Property /
GeoProperty / Relationship, ``unitCode``, ``observedAt``) as in the models' "LD
Example" sections.
"""

from __future__ import annotations

from typing import Any, Sequence

from kotacerdas.catalogue import Kind

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
MEDIA_TYPE = "application/ld+json"

# WasteContainer.status enum (dataModel.WasteManagement WasteContainer/schema.json)
_TILT_STATUS = {0: "ok", 1: "dropped"}


def context(kind: Kind) -> list[str]:
    return [f"https://raw.githubusercontent.com/smart-data-models/{kind.fiware_model}/master/context.jsonld",
            CORE_CONTEXT]


def entity_id(kind: Kind, city: str | None, device: str) -> str:
    return f"urn:ngsi-ld:{kind.fiware_type}:{city or 'unknown'}:{device}"


def _prop(value: Any, observed_at: str | None, unit: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"type": "Property", "value": value}
    if unit:
        p["unitCode"] = unit
    if observed_at:
        p["observedAt"] = observed_at
    return p


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def entity(kind: Kind, row: dict[str, Any], *, index: dict[str, Any] | None = None,
           provider: str | None = None, key_values: bool = False) -> dict[str, Any]:
    """One entity of ``kind.fiware_type`` from a latest-readings row (catalogue field names and units).

    ``index`` (air only): ``{"value": ISPU, "description": ...}`` becomes ``airQualityIndex``.
    ``key_values``: the simplified representation (NGSI-LD ``options=keyValues``).
    """
    t = row.get("time")
    ent: dict[str, Any] = {"id": entity_id(kind, row.get("city"), str(row["device"])), "type": kind.fiware_type}
    attrs: dict[str, Any] = {}
    units: dict[str, str] = {}
    measurands: list[str] = []
    for f in kind.fields:
        v = _number(row.get(f.name))
        if v is None:
            continue
        if f.measurand:
            # "<measurand>, <observedValue>, <unitCode>, <description>" (WaterQualityObserved spec.md)
            measurands.append(f"{f.measurand}, {v * f.fiware_scale:g}, {f.fiware_unit}, {f.sensor or f.name}")
            continue
        if not f.fiware:
            continue
        if kind.fiware_type == "WasteContainer" and f.fiware == "status":
            attrs["status"] = _TILT_STATUS.get(int(round(v)), "unknown")
            continue
        attrs[f.fiware] = round(v * f.fiware_scale, 9)
        if f.fiware_unit:
            units[f.fiware] = f.fiware_unit
    if measurands:
        attrs["measurand"] = measurands
    if index and index.get("value") is not None and kind.fiware_type == "AirQualityObserved":
        attrs["airQualityIndex"] = int(index["value"])  # schema: integer >= 0
        if index.get("description"):
            attrs["description"] = index["description"]
    if row.get("district"):
        attrs["areaServed"] = row["district"]  # GSMA-Commons, in all three models
        attrs["address"] = {"addressLocality": row["district"], "addressRegion": row.get("city"),
                            "addressCountry": "ID"}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    lat, lon = row.get("lat"), row.get("lon")
    location = {"type": "Point", "coordinates": [lon, lat]} if lat is not None and lon is not None else None
    device_ref = f"urn:ngsi-ld:Device:{row['device']}"
    if key_values:
        ent.update({"dateObserved": t, **attrs})
        if location:
            ent["location"] = location
        ent["refDevice"] = [device_ref] if kind.fiware_type == "WasteContainer" else device_ref
        if provider:
            ent["dataProvider"] = provider
        ent["@context"] = context(kind)
        return ent
    if t:
        ent["dateObserved"] = {"type": "Property", "value": {"@type": "DateTime", "@value": t}}
    for k, v in attrs.items():
        ent[k] = _prop(v, t if k not in ("address", "areaServed", "description") else None, units.get(k, ""))
    if location:
        ent["location"] = {"type": "GeoProperty", "value": location}
    ent["refDevice"] = {"type": "Relationship",
                        "object": [device_ref] if kind.fiware_type == "WasteContainer" else device_ref}
    if provider:
        ent["dataProvider"] = {"type": "Property", "value": provider}
    ent["@context"] = context(kind)
    return ent


def entities(kind: Kind, rows: Sequence[dict[str, Any]], *, indices: dict[str, dict[str, Any]] | None = None,
             provider: str | None = None, key_values: bool = False) -> list[dict[str, Any]]:
    return [entity(kind, r, index=(indices or {}).get(str(r["device"])), provider=provider, key_values=key_values)
            for r in rows]
