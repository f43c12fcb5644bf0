"""Write dashboards as Grafana file provisioning: dashboard JSON, provider YAML, datasource YAML.

Layout under the output directory (mounted into Grafana by deploy/compose.yaml):

    provisioning/datasources/kotacerdas.yaml   InfluxDB (InfluxQL over the v1 API)
    provisioning/dashboards/kotacerdas.yaml    file provider reading dashboards/
    dashboards/<uid>.json                      one file per dashboard
    gazetteer/kotacerdas-devices.json          device coordinates for the geomap lookup layers

Provisioning format: grafana.com/docs/grafana/latest/administration/provisioning/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from dashboards.model import DATASOURCE_TYPE, DATASOURCE_UID, Dashboard

DASHBOARDS_IN_CONTAINER = "/var/lib/grafana/dashboards/kotacerdas"
FOLDER = "Kota Cerdas"


def datasource(url: str, database: str, name: str = "Kota Cerdas InfluxDB",
               user: str | None = None, password: str | None = None) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "name": name,
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": url,
        "isDefault": True,
        "editable": False,
        # InfluxQL against the v1 HTTP API; dbName is where Grafana >= 8 reads the database
        "jsonData": {"dbName": database, "httpMode": "GET", "version": "InfluxQL", "timeInterval": "10s"},
        "database": database,
    }
    if user:
        ds["user"] = user
        ds["secureJsonData"] = {"password": password or ""}
    return ds


def datasource_yaml(ds: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": 1, "datasources": [ds]}, sort_keys=False, allow_unicode=True)


def provider_yaml(path: str = DASHBOARDS_IN_CONTAINER) -> str:
    doc = {"apiVersion": 1, "providers": [{
        "name": "kotacerdas", "orgId": 1, "folder": FOLDER, "folderUid": "kotacerdas", "type": "file",
        "disableDeletion": False, "updateIntervalSeconds": 30, "allowUiUpdates": False,
        "options": {"path": path, "foldersFromFilesStructure": False},
    }]}
    return yaml.safe_dump(doc, sort_keys=False)


# Grafana's geomap gazetteer loader takes an array whose first element has `key` and `latitude`
# as the "worldmap points" format {key, latitude, longitude, name}
# (grafana/grafana public/app/plugins/panel/geomap/gazetteer/gazetteer.ts, worldmap.ts).
# It reads data[0] unguarded, so an empty array would break the map: a placeholder stands in.
PLACEHOLDER = {"key": "_no_devices", "latitude": 0.0, "longitude": 0.0,
               "name": "no device coordinates exported (kotacerdas dashboards build --devices)"}


def gazetteer(device_list: Sequence[dict]) -> list[dict]:
    """Grafana gazetteer (lookup) entries: key + latitude + longitude (+ name shown in tooltips)."""
    out = []
    for d in sorted(device_list, key=lambda d: d["device"]):
        if d.get("lat") is None or d.get("lon") is None:
            continue
        out.append({"key": d["device"], "latitude": float(d["lat"]), "longitude": float(d["lon"]),
                    "name": f"{d['device']} ({d.get('district', '')}, {d.get('city', '')})"})
    return out


def dump_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_bundle(out: Path, dashboards: Sequence[Dashboard], ds: dict[str, Any],
                 device_list: Sequence[dict] = ()) -> list[Path]:
    written: list[Path] = []

    def put(rel: str, text: str) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        written.append(p)

    put("provisioning/datasources/kotacerdas.yaml", datasource_yaml(ds))
    put("provisioning/dashboards/kotacerdas.yaml", provider_yaml())
    for d in dashboards:
        put(f"dashboards/{d.uid}.json", dump_json(d.to_json()))
    put("gazetteer/kotacerdas-devices.json", dump_json(gazetteer(device_list) or [PLACEHOLDER]))
    return written
