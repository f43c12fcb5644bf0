"""The generated dashboards: schema-valid, derived from the catalogue, standards' colours, links, time zone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue

from dashboards import standards as std
from dashboards.cli import main as cli_main
from dashboards.definitions import UID, all_dashboards
from dashboards.model import DATASOURCE_UID
from dashboards.units import UnknownUnit, grafana_unit, known_units
from dashboards.validate import problems


@pytest.fixture(scope="module")
def boards():
    return {d.uid: d for d in all_dashboards()}


def test_every_dashboard_is_valid_against_the_schema(boards):
    assert set(boards) == set(UID.values())
    for d in boards.values():
        assert problems(d.to_json()) == [], d.uid


@pytest.mark.parametrize("breakage, expect", [
    (lambda j: j["panels"][1]["gridPos"].update(x=20, w=12), "overflows"),
    (lambda j: j["panels"][1]["targets"][0].update(rawQuery=False), "rawQuery"),
    (lambda j: j["panels"][2].update(id=j["panels"][1]["id"]), "unique"),
    (lambda j: j.update(timezone="Europe/Berlin"), "timezone"),
    (lambda j: j["panels"][1]["targets"][0].update(query='SELECT 1 FROM "x" WHERE "a" =~ /^$nosuch$/'), "nosuch"),
    (lambda j: j["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["steps"].insert(0, {"color": "red", "value": 3}), "null"),
])
def test_schema_and_checks_catch_broken_dashboards(boards, breakage, expect):
    j = copy.deepcopy(boards["kc-air"].to_json())
    breakage(j)
    ps = problems(j)
    assert ps, "a broken dashboard passed validation"
    assert any(expect in p for p in ps), ps


def _paths(o, p=""):
    out = set()
    if isinstance(o, dict):
        for k, v in o.items():
            out.add(f"{p}/{k}")
            out |= _paths(v, f"{p}/{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out |= _paths(v, f"{p}[{i}]")
    return out


def test_grafana_schema_models_keep_every_key(boards):
    """Cross-check with Grafana's own schema: grafana-foundation-sdk's models are generated from
    Grafana's dashboard kind (CUE). Parsing our JSON into them and back drops every key the schema
    does not define, so nothing may be lost (a misspelt key such as "fieldconfig" would be)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard as SchemaDashboard

    for d in boards.values():
        ours = d.to_json()
        back = json.loads(json.dumps(SchemaDashboard.from_json(ours), cls=JSONEncoder))
        assert sorted(_paths(ours) - _paths(back)) == [], d.uid
    bad = copy.deepcopy(boards["kc-air"].to_json())
    bad["panels"][1]["fieldconfig"] = bad["panels"][1].pop("fieldConfig")
    back = json.loads(json.dumps(SchemaDashboard.from_json(bad), cls=JSONEncoder))
    assert "/panels[1]/fieldconfig" in _paths(bad) - _paths(back)


def test_timezone_links_and_variables(boards):
    for d in boards.values():
        j = d.to_json()
        assert j["timezone"] == "Asia/Jakarta"
        assert j["links"][0]["type"] == "dashboards" and j["links"][0]["keepTime"] and j["links"][0]["includeVars"]
        assert "kotacerdas" in j["tags"]
        names = [v["name"] for v in j["templating"]["list"]]
        if d.uid != "kc-pipeline":
            assert names == ["city", "district", "device"]
            # district depends on city, device on both (cascading variables)
            qs = {v["name"]: v["query"] for v in j["templating"]["list"]}
            assert "$city" in qs["district"] and "$district" in qs["device"]
        for p in j["panels"]:
            if p["type"] != "row":
                assert p["datasource"]["uid"] == DATASOURCE_UID
    # device cells link to the fleet dashboard with the device selected
    air = boards["kc-air"].to_json()
    urls = [ln["url"] for p in air["panels"] for ln in p.get("links", [])]
    assert any(u.startswith("/d/kc-fleet/") and "var-device=" in u for u in urls)


def test_telemetry_panels_follow_the_catalogue(boards):
    cat = load_catalogue()
    for kind, uid in (("air", "kc-air"), ("water", "kc-water"), ("waste_bin", "kc-waste")):
        k = cat[kind]
        panels = {p.title: p for p in boards[uid].panels()}
        for f in k.fields:
            if kind == "waste_bin" and f.name == "fill":
                p = panels["Fill level"]
            else:
                p = panels[f"{f.name} ({f.unit})"]
            assert p.unit == grafana_unit(f.unit)
            assert f'"{f.name}"' in p.targets[0].query and f'FROM "{k.measurement}"' in p.targets[0].query
    assert all(f.unit in known_units() for k in cat for f in k.fields)
    assert grafana_unit("ug/m3") == "conμgm3" and grafana_unit("Cel") == "celsius"
    with pytest.raises(UnknownUnit):
        grafana_unit("furlong/fortnight")


def test_ispu_colours_are_the_regulations(boards):
    # Permen LHK P.14/2020: Baik hijau, Sedang biru, Tidak Sehat kuning, Sangat Tidak Sehat merah, Berbahaya hitam
    assert [(b.label, b.color) for b in std.ISPU_BANDS] == [
        ("Baik", "green"), ("Sedang", "blue"), ("Tidak Sehat", "yellow"),
        ("Sangat Tidak Sehat", "red"), ("Berbahaya", "#000000")]
    assert std.category_of(std.ISPU_BANDS, 50).label == "Baik"
    assert std.category_of(std.ISPU_BANDS, 150).label == "Tidak Sehat"
    assert std.category_of(std.ISPU_BANDS, 301).label == "Berbahaya"
    geomap = next(p for p in boards["kc-air"].to_json()["panels"] if p["type"] == "geomap")
    steps = geomap["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "green", "value": None}, {"color": "blue", "value": 51}, {"color": "yellow", "value": 101},
                     {"color": "red", "value": 201}, {"color": "#000000", "value": 301}]
    layer = geomap["options"]["layers"][0]
    assert layer["location"] == {"mode": "lookup", "lookup": "device", "gazetteer": "public/gazetteer/kotacerdas-devices.json"}


def test_water_trends_show_the_permenkes_limits(boards):
    panels = {p.title: p for p in boards["kc-water"].panels()}
    assert panels["ph (pH)"].thresholds == [{"color": "red", "value": None}, {"color": "green", "value": 6.5},
                                            {"color": "red", "value": 8.5 + 1e-6}]
    assert panels["turbidity (NTU)"].thresholds == [{"color": "green", "value": None}, {"color": "red", "value": 3.0}]
    assert panels["tds (mg/L)"].thresholds[-1] == {"color": "red", "value": 300.0}
    assert panels["chlorine (mg/L)"].thresholds[1] == {"color": "green", "value": 0.2}
    # unregulated fields keep the catalogue's expected span
    do = load_catalogue()["water"].field("dissolved_oxygen")
    assert panels["dissolved_oxygen (mg/L)"].thresholds[1]["value"] == do.expected_lo


def test_build_writes_provisioning_and_dashboards(tmp_path: Path):
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps([{"device": "air-001", "kind": "air", "city": "depok", "district": "beji",
                                    "lat": -6.37, "lon": 106.83, "department": "environment_agency"},
                                   {"device": "x-no-coords", "kind": "air", "city": "depok", "district": "beji",
                                    "lat": None, "lon": None, "department": "environment_agency"}]))
    out = tmp_path / "bundle"
    assert cli_main(["build", "--out", str(out), "--influx-url", "http://influxdb:8086", "--database", "kc",
                     "--devices", str(devices)]) == 0
    ds = yaml.safe_load((out / "provisioning/datasources/kotacerdas.yaml").read_text())
    d0 = ds["datasources"][0]
    assert d0["type"] == "influxdb" and d0["uid"] == DATASOURCE_UID and d0["url"] == "http://influxdb:8086"
    assert d0["jsonData"]["dbName"] == "kc" and d0["jsonData"]["version"] == "InfluxQL"
    prov = yaml.safe_load((out / "provisioning/dashboards/kotacerdas.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    files = sorted(p.stem for p in (out / "dashboards").glob("*.json"))
    assert files == sorted(UID.values())
    for f in (out / "dashboards").glob("*.json"):
        assert problems(json.loads(f.read_text())) == []
    gaz = json.loads((out / "gazetteer/kotacerdas-devices.json").read_text())
    assert gaz == [{"key": "air-001", "latitude": -6.37, "longitude": 106.83, "name": "air-001 (beji, depok)"}]


def test_build_without_devices_warns_and_writes_a_loadable_gazetteer(tmp_path: Path, capsys):
    assert cli_main(["build", "--out", str(tmp_path)]) == 0
    assert "--devices" in capsys.readouterr().err
    gaz = json.loads((tmp_path / "gazetteer/kotacerdas-devices.json").read_text())
    assert len(gaz) == 1 and gaz[0]["key"] and "latitude" in gaz[0]  # never [] (Grafana reads data[0])


def test_committed_deploy_bundle_is_current(tmp_path: Path):
    """deploy/grafana is generated; it must match what the builders produce now."""
    repo = Path(__file__).resolve().parents[2]
    committed = repo / "deploy/grafana"
    out = tmp_path / "fresh"
    assert cli_main(["build", "--out", str(out), "--influx-url", "http://influxdb:8086", "--database", "kotacerdas",
                     "--devices", str(repo / "deploy/devices.example.json")]) == 0
    fresh = {p.relative_to(out): p.read_text() for p in out.rglob("*") if p.is_file()}
    old = {p.relative_to(committed): p.read_text() for p in committed.rglob("*") if p.is_file()}
    stale = [str(k) for k in fresh if old.get(k) != fresh[k]]
    assert not stale, f"regenerate with scripts in docs/dashboards.md; stale: {stale}"


def test_every_panel_query_names_only_schema_fields(boards):
    # field and measurement names in the query text must exist in kotacerdas/measurements.py
    cat = load_catalogue()
    bad = {}
    for d in all_dashboards(cat):
        queries = [t.query for r in d.rows for p in r.panels for t in p.targets] + [v.query for v in d.variables]
        for q in queries:
            if M.query_problems(q, cat):
                bad[q] = M.query_problems(q, cat)
    assert not bad
    assert len(queries) > 0


def test_query_check_catches_a_renamed_field_or_measurement():
    cat = load_catalogue()
    assert M.query_problems('SELECT last("value") AS "ispu" FROM "ispu" WHERE "pollutant" = \'max\'', cat) == []
    assert M.query_problems('SELECT last("fill") FROM (SELECT last("fill") AS "fill" FROM "waste_bin")', cat) == []
    assert M.query_problems('SELECT last("valeu") FROM "ispu"', cat) == ["'valeu' is no field or tag of ['ispu']"]
    assert M.query_problems('SELECT "value" FROM "ispu_v2"', cat)[0] == "unknown measurement 'ispu_v2'"
    assert M.query_problems('SELECT "pm25" FROM "water"', cat) == ["'pm25' is no field or tag of ['water']"]
