"""`kotacerdas gateway registry|provision` through the real command-line entry point."""

from __future__ import annotations

import json

import pytest

from kotacerdas.cli import main as kc

from gateway.passwords import verify_password
from tests.gateway.helpers import devices


@pytest.fixture
def env(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("KC_GATEWAY__REGISTRY_PATH", str(settings.gateway.registry_path))
    monkeypatch.setenv("KC_MQTT__TOPIC_ROOT", settings.mqtt.topic_root)
    f = tmp_path / "devices.json"
    f.write_text(json.dumps(devices()))
    return f


def test_registry_lifecycle_from_the_cli(env, capsys, tmp_path):
    creds = tmp_path / "creds.json"
    assert kc(["gateway", "registry", "import", str(env), "--credentials-out", str(creds)]) == 0
    assert "imported 6 devices" in capsys.readouterr().out
    assert sorted(json.loads(creds.read_text())) == sorted(d["device"] for d in devices())
    assert kc(["gateway", "registry", "import", str(env)]) == 0  # idempotent: same devices, no new credentials
    assert "(0 new credentials" in capsys.readouterr().out

    assert kc(["gateway", "registry", "register", "air-77", "--kind", "air", "--city", "depok",
               "--district", "sukmajaya", "--lat", "-6.39", "--lon", "106.83"]) == 0
    reg = json.loads(capsys.readouterr().out)
    assert reg["department"] == "environment_agency" and reg["mqtt_password"]
    assert kc(["gateway", "registry", "rotate-credentials", "air-77"]) == 0
    rot = json.loads(capsys.readouterr().out)
    assert rot["mqtt_password"] != reg["mqtt_password"]
    assert kc(["gateway", "registry", "decommission", "air-77"]) == 0
    assert "decommissioned" in capsys.readouterr().out
    assert kc(["gateway", "registry", "list", "--json"]) == 0
    listed = {d["device"]: d for d in json.loads(capsys.readouterr().out)}
    assert len(listed) == 7 and listed["air-77"]["status"] == "decommissioned"
    assert listed["air-77"]["has_credentials"] is False and "password_hash" not in listed["air-77"]


def test_cli_refuses_bad_input_clearly(env, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"device": "x", "kind": "volcano", "city": "depok"}]))
    assert kc(["gateway", "registry", "import", str(bad)]) == 1
    assert "unknown kind 'volcano'" in capsys.readouterr().err
    bad.write_text('{"device": "x"}')
    assert kc(["gateway", "registry", "import", str(bad)]) == 2
    assert kc(["gateway", "registry", "decommission", "nobody"]) == 1
    assert "no device 'nobody'" in capsys.readouterr().err


def test_register_twice_needs_update_and_coordinates_are_checked(env, capsys):
    args = ["gateway", "registry", "register", "air-78", "--kind", "air", "--city", "depok"]
    assert kc(args) == 0
    pw = json.loads(capsys.readouterr().out)["mqtt_password"]
    assert kc(args + ["--district", "beji"]) == 1
    assert "exists; --update" in capsys.readouterr().err
    assert kc(args + ["--district", "beji", "--update"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["district"] == "beji" and out["mqtt_password"] is None  # credentials kept, not re-issued
    assert pw
    assert kc(["gateway", "registry", "register", "air-79", "--kind", "air", "--city", "depok", "--lat", "95"]) == 1
    assert "lat 95.0 is not a coordinate" in capsys.readouterr().err


def test_device_config_from_the_cli(env, capsys):
    assert kc(["gateway", "registry", "import", str(env)]) == 0
    capsys.readouterr()
    assert kc(["gateway", "registry", "config", "air-0", "--tasmota-map", "DS18B20-2.Temperature=temperature",
               "--tz-offset-s", "28800", "--interval-s", "120", "--threshold", "pm25=0,150"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg == {"interval_s": 120.0, "thresholds": {"pm25": [0.0, 150.0]}, "tz_offset_s": 28800,
                   "tasmota_map": {"DS18B20-2.Temperature": "temperature"}}
    # merged with what the device has; a value the firmware would refuse changes nothing
    assert kc(["gateway", "registry", "config", "air-0", "--esphome-map", "kolam_pm=pm25"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["tz_offset_s"] == 28800
    assert kc(["gateway", "registry", "config", "air-0", "--interval-s", "0.001"]) == 1
    assert "interval_s must be 5..86400" in capsys.readouterr().err
    assert kc(["gateway", "registry", "config", "air-0", "--threshold", "pm25"]) == 1
    assert "not KEY=VALUE" in capsys.readouterr().err
    assert kc(["gateway", "registry", "config", "air-0", "--clear", "tasmota_map"]) == 0
    assert "tasmota_map" not in json.loads(capsys.readouterr().out)["config"]


def test_provision_writes_broker_files(env, capsys, tmp_path, settings):
    assert kc(["gateway", "registry", "import", str(env)]) == 0
    out = tmp_path / "prov"
    assert kc(["gateway", "provision", "--out", str(out), "--port", "18883", "--tls-port", "18884"]) == 0
    root = settings.mqtt.topic_root
    acl = (out / "acl_file").read_text()
    assert f"user air-0\ntopic write {root}/v1/depok/air/air-0/telemetry\n" in acl
    assert f"topic read {root}/v1/depok/air/air-0/cmd" in acl
    users = [line.split(":", 1)[0] for line in (out / "password_file").read_text().splitlines()]
    assert set(users) >= {"kc-gateway", "kc-ingest", "air-0", "wastebin-1"}
    svc = json.loads((out / "service-credentials.json").read_text())
    gw_hash = dict(line.split(":", 1) for line in (out / "password_file").read_text().splitlines())["kc-gateway"]
    assert verify_password(svc["kc-gateway"], gw_hash)
    conf = (out / "mosquitto-auth.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 18884 127.0.0.1" in conf and "certfile" in conf
    assert (out / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert oct((out / "server.key").stat().st_mode & 0o777) == "0o600"


def test_registry_changes_rewrite_the_broker_files_when_configured(env, capsys, tmp_path, monkeypatch):
    prov = tmp_path / "live"
    monkeypatch.setenv("KC_GATEWAY__PROVISION_DIR", str(prov))
    assert kc(["gateway", "registry", "register", "water-42", "--kind", "water", "--city", "depok"]) == 0
    assert "user water-42" in (prov / "acl_file").read_text()
    assert kc(["gateway", "registry", "decommission", "water-42"]) == 0
    assert "water-42" not in (prov / "password_file").read_text()


def test_bad_setting_and_unwritable_provision_dir_are_messages_not_tracebacks(env, monkeypatch, capsys, tmp_path):
    """An operator's typo in a KC_* variable names the variable (exit 2, as for bad arguments); a
    provision directory that cannot be written says so (exit 1)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert kc(["gateway", "provision", "--out", str(blocker / "broker"), "--no-tls"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway provision:") and "Traceback" not in err
    monkeypatch.setenv("KC_GATEWAY__FORWARD_BATCH", "0")
    assert kc(["gateway", "registry", "list"]) == 2
    err = capsys.readouterr().err
    assert "KC_GATEWAY__FORWARD_BATCH" in err and "greater than or equal to 1" in err, err
    monkeypatch.setenv("KC_GATEWAY__FORWARD_BATCH", "500")
    monkeypatch.setenv("KC_MQTT__PORT", "abc")
    assert kc(["gateway", "registry", "list"]) == 2
    assert "KC_MQTT__PORT" in capsys.readouterr().err
