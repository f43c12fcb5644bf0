"""Deploy tooling: config.json validation and the mpremote command lines (no board here)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from pydantic import SecretStr

from firmware import cli, deploy, release
from kotacerdas.settings import Settings


def test_mpremote_is_one_session_checking_version_and_removing_stale_py(tmp_path: Path) -> None:
    bundle = tmp_path / "build" / "air"
    (bundle / "kc_drivers").mkdir(parents=True)
    (bundle / "kc_node.mpy").write_bytes(b"M")
    (bundle / "kc_drivers" / "pms5003.mpy").write_bytes(b"M")
    (bundle / "main.py").write_text("")
    cmds = deploy.mpremote_commands(bundle, tmp_path / "c.json", port="/dev/ttyUSB0", ca_der=tmp_path / "ca.der")
    assert len(cmds) == 1  # one session: a failing step (wrong MicroPython) stops the rest
    argv = cmds[0]
    assert argv[:5] == [sys.executable, "-m", "mpremote", "connect", "/dev/ttyUSB0"]
    steps = " ".join(argv[5:]).split(" + ")
    assert steps[0].startswith("exec ") and "sys.implementation.version" in steps[0] and "raise SystemExit" in steps[0]
    assert "'/kc_node.py'" in steps[1] and "'/kc_drivers/pms5003.py'" in steps[1] and "main" not in steps[1]
    assert steps[2:] == [f"fs cp -r {bundle.as_posix()}/. :/", f"fs cp {tmp_path / 'c.json'} :/config.json",
                         f"fs cp {tmp_path / 'ca.der'} :/ca.der", "reset"]
    want = ".".join(map(str, release.MICROPYTHON_VERSION[:2]))
    assert f"built for {want}" in steps[0]


def test_tls_needs_a_ca_and_platform_credentials_stay_off_boards(settings: Settings) -> None:
    s = settings.model_copy(deep=True)
    s.mqtt.username = "platform-admin"
    s.mqtt.password = SecretStr("platform-secret")
    with pytest.raises(ValueError, match="CA"):
        deploy.device_config(s, "air", "AIR-1", "depok", "x", "y", tls=True)
    doc = deploy.device_config(s, "air", "AIR-1", "depok", "x", "y")
    assert doc["mqtt"]["user"] is None and doc["mqtt"]["password"] is None
    assert "platform-secret" not in json.dumps(doc)
    doc = deploy.device_config(s, "air", "AIR-1", "depok", "x", "y", user="AIR-1", password="own", tls=True, tls_ca=True)
    assert doc["mqtt"]["tls_ca"] == "/ca.der" and doc["fw"] == release.FIRMWARE_VERSION


def test_device_config_validated_before_flashing(settings: Settings) -> None:
    doc = deploy.device_config(settings, "waste_bin", "BIN-042", "bogor", "kota-wifi", "s3cret", user="BIN-042",
                               password="pw")
    assert doc["mqtt"]["host"] == settings.mqtt.host and doc["mqtt"]["user"] == "BIN-042"
    assert doc["root"] == settings.mqtt.topic_root and doc["wifi"]["password"] == "s3cret"
    assert doc["ap_password"] != deploy.device_config(settings, "air", "A-2", "depok", "x", "y")["ap_password"]
    kept = deploy.device_config(settings, "air", "A-2", "depok", "x", "y", extra={"ap_password": "from-label-1"})
    assert kept["ap_password"] == "from-label-1"
    with pytest.raises(ValueError, match="ap_password"):
        deploy.device_config(settings, "air", "A-2", "depok", "x", "y", extra={"ap_password": "short"})
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
    assert "connect /dev/ttyACM0 exec" in printed and "+ fs cp -r" in printed and ":/config.json" in printed
    assert "hunter2" not in printed  # secrets stay in the 0600 config file, off the terminal and argv
    doc = json.loads(out_cfg.read_text())
    assert doc["wifi"] == {"ssid": "kota", "password": "hunter2"} and doc["kind"] == "air"
    # the set-up AP's WPA2 passphrase: made per device, printed for the label
    assert re.fullmatch(r"[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}", doc["ap_password"])
    assert f"label: set-up Wi-Fi kc-setup-AIR-7 password {doc['ap_password']}" in printed
    assert out_cfg.stat().st_mode & 0o777 == 0o600


def test_cli_deploy_refuses_bad_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy", "--kind", "air", "--device", "no spaces", "--dry-run", "--no-build"]) == 2
    assert "invalid device config" in capsys.readouterr().err
    assert cli.main(["deploy", "--kind", "air", "--device", "AIR-1", "--tls", "--dry-run", "--no-build"]) == 2
    assert "--tls-ca" in capsys.readouterr().err
