"""The compose bundle: parses, mounts what exists, and agrees with the generated provisioning.

No Docker engine is available here: this does NOT start containers (docs/deploy.md says so).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kotacerdas.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _binds(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out.append((src, dst))
    return out


def test_services_and_mounted_paths_exist(compose):
    svcs = compose["services"]
    assert {"mosquitto", "influxdb", "grafana", "gateway", "ingest", "analytics", "api"} <= set(svcs)
    # deploy the InfluxDB version line the suite tests: Debian's package, as scripts/bootstrap.sh installs it
    ix = svcs["influxdb"]["build"]
    dockerfile = (DEPLOY / ix["context"] / ix["dockerfile"]).read_text()
    assert "apt-get install" in dockerfile and " influxdb " in dockerfile
    assert "influxdb" in (DEPLOY.parent / "scripts/bootstrap.sh").read_text()
    binds = [b for s in svcs.values() for b in _binds(s)]
    assert len(binds) >= 5
    for src, _ in binds:
        assert (DEPLOY / src).exists(), f"compose mounts {src}, which does not exist"
    assert (DEPLOY / "mosquitto/mosquitto.conf").exists()
    build = svcs["gateway"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()


def test_grafana_mounts_the_generated_provisioning(compose):
    g = dict((dst, src) for src, dst in _binds(compose["services"]["grafana"]))
    prov = yaml.safe_load((DEPLOY / g["/etc/grafana/provisioning/dashboards"] / "kotacerdas.yaml").read_text())
    # the provider reads exactly where compose mounts the dashboards
    assert prov["providers"][0]["options"]["path"] in g
    dash_dir = DEPLOY / g[prov["providers"][0]["options"]["path"]]
    assert sorted(p.name for p in dash_dir.glob("*.json")) == ["kc-air.json", "kc-fleet.json", "kc-pipeline.json",
                                                              "kc-waste.json", "kc-water.json"]
    ds = yaml.safe_load((DEPLOY / g["/etc/grafana/provisioning/datasources"] / "kotacerdas.yaml").read_text())
    url = ds["datasources"][0]["url"]
    assert url == "http://influxdb:8086"  # the compose service name and InfluxDB's port
    # the gazetteer the geomap panels look up is mounted under Grafana's public dir
    gaz = [dst for src, dst in _binds(compose["services"]["grafana"]) if "gazetteer" in dst][0]
    assert gaz.endswith("public/gazetteer/kotacerdas-devices.json")
    assert compose["services"]["grafana"]["environment"]["GF_DATE_FORMATS_DEFAULT_TIMEZONE"] == "Asia/Jakarta"


def test_service_environment_maps_onto_settings(compose, monkeypatch):
    for name in ("gateway", "ingest", "analytics", "api"):
        env = compose["services"][name]["environment"]
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        s = load_settings()
        assert s.mqtt.host == "mosquitto" and s.influx.url == "http://influxdb:8086"
        assert s.state_dir == Path("/var/lib/kotacerdas")
        if name == "api":
            assert s.api.host == "0.0.0.0"
        for k in env:
            monkeypatch.delenv(k)
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line.startswith("KC_"):
            k, v = line.split("=", 1)
            monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.mqtt.username == "kc-platform" and s.api.rate_limit_per_minute == 600
