"""Deploy tooling: config.json validation and the mpremote command lines (no board here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware import cli, deploy
from kotacerdas.settings import Settings


def test_mpremote_commands(tmp_path: Path) -> None:
    bundle = tmp_path / "build" / "air"
    cmds = deploy.mpremote_commands(bundle, tmp_path / "c.json", port="/dev/ttyUSB0", mpremote="mpremote")
    assert cmds[0][:3] == ["mpremote", "connect", "/dev/ttyUSB0"]
    flat = [" ".join(c[3:]) for c in cmds]
    assert flat == ["fs mkdir :/kc_drivers", "fs mkdir :/data", f"fs cp -r {bundle.as_posix()}/. :/",
                    f"fs cp {tmp_path / 'c.json'} :/config.json", "reset"]


def test_device_config_validated_before_flashing(settings: Settings) -> None:
    doc = deploy.device_config(settings, "waste_bin", "BIN-042", "bogor", "kota-wifi", "s3cret", user="BIN-042",
                               password="pw")
    assert doc["mqtt"]["host"] == settings.mqtt.host and doc["mqtt"]["user"] == "BIN-042"
    assert doc["root"] == settings.mqtt.topic_root and doc["wifi"]["password"] == "s3cret"
    with pytest.raises(ValueError, match="device id"):
        deploy.device_config(settings, "air", "bad/id#", "depok", "x", "y")
    with pytest.raises(ValueError, match="kind"):
        deploy.device_config(settings, "volcano", "V1", "depok", "x", "y")


@pytest.mark.io
def test_cli_deploy_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "wifi.txt"
    pw.write_text("hunter2\n")
    out_cfg = tmp_path / "cfg" / "AIR-7.json"
    rc = cli.main(["deploy", "--kind", "air", "--device", "AIR-7", "--port", "/dev/ttyACM0", "--wifi-ssid", "kota",
                   "--wifi-password-file", str(pw), "--config-out", str(out_cfg), "--dry-run"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "connect /dev/ttyACM0 fs cp -r" in printed and ":/config.json" in printed
    assert "hunter2" not in printed  # secrets stay in the 0600 config file, off the terminal and argv
    doc = json.loads(out_cfg.read_text())
    assert doc["wifi"] == {"ssid": "kota", "password": "hunter2"} and doc["kind"] == "air"
    assert out_cfg.stat().st_mode & 0o777 == 0o600


def test_cli_deploy_refuses_bad_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy", "--kind", "air", "--device", "no spaces", "--dry-run", "--no-build"]) == 2
    assert "invalid device config" in capsys.readouterr().err
