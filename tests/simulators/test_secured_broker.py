"""The simulator against the project's own secured broker (provisioned password file, ACL, TLS).

A run the broker's ACL refuses must not report ``errors 0`` (MQTT 5 PUBACK reason codes are
counted), and with the registry's per-device credentials every device connects as itself.
"""

from __future__ import annotations

import json

import pytest

from kotacerdas import contract
from devtools.stack import free_port

from gateway.provision import GATEWAY_USER, provision
from gateway.registry import Registry
from simulators import cli
from simulators.fleet import device_records
from simulators.runner import Options, simulate
from tests.gateway.helpers import Collector, wait_for

from .helpers import small_scenario


@pytest.fixture
def secured(settings, private_broker, tmp_path):
    sc = small_scenario(faults={}, duration_s=2, qos=1)
    with Registry(settings.gateway.registry_path) as reg:
        _, pws = reg.import_devices(device_records(sc))
    port, tls_port = free_port(), free_port()
    out = tmp_path / "provision"
    paths = provision(settings, out, port=port, tls_port=tls_port)
    private_broker(extra_config=paths["broker_config"].read_text(), port=port)
    creds = json.loads(paths["service_credentials"].read_text())
    (tmp_path / "creds.json").write_text(json.dumps(pws))
    (tmp_path / "dash.pw").write_text(creds["kc-dashboards"] + "\n")
    return {"sc": sc, "port": port, "tls_port": tls_port, "out": out, "pws": pws, "creds": creds}


def _settings_for(settings, port, **over):
    s = settings.model_copy(deep=True)
    s.mqtt = s.mqtt.model_copy(update={"port": port, **over})
    return s


def test_acl_refusals_are_errors_not_silence(settings, secured):
    from pydantic import SecretStr

    # an account that may not write device topics: every publish is refused by the ACL (PUBACK 135)
    s = _settings_for(settings, secured["port"], username="kc-dashboards",
                      password=SecretStr(secured["creds"]["kc-dashboards"]))
    summary = simulate(secured["sc"], s, Options(rate=500, progress=False))
    total = summary["sent"] + summary["status_sent"]
    assert total > 0
    assert summary["errors"] == total, summary
    assert list(summary["refused"]) == ["puback: Not authorized"] and summary["refused"]["puback: Not authorized"] == total


def test_per_device_credentials_over_tls_deliver_everything(settings, secured, tmp_path, monkeypatch, capsys):
    from pydantic import SecretStr

    root = settings.mqtt.topic_root
    gw = Collector(_settings_for(settings, secured["port"], username=GATEWAY_USER,
                                 password=SecretStr(secured["creds"][GATEWAY_USER])).mqtt,
                   contract.device_subscription(root, "telemetry"))
    try:
        monkeypatch.setenv("KC_MQTT__TOPIC_ROOT", root)
        sc_file = tmp_path / "sc.json"
        # the CLI takes a scenario by name or .toml; write the fixture's scenario as TOML
        sc = secured["sc"]
        sc_toml = tmp_path / "t.toml"
        sc_toml.write_text(
            'name = "t"\ncity = "depok"\nseed = 7\nspan_s = 7200\nduration_s = 2\ndevice_prefix = "t"\nqos = 1\n'
            '[kinds.air]\ncount = 6\n[kinds.water]\ncount = 4\n[kinds.waste_bin]\ncount = 5\ninterval_s = 300\n')
        rc = cli.main(["run", str(sc_toml), "--rate", "500", "--no-progress", "--summary", str(sc_file),
                       "--port", str(secured["tls_port"]), "--tls-ca", str(secured["out"] / "ca.crt"),
                       "--credentials", str(tmp_path / "creds.json")])
        summary = json.loads(sc_file.read_text())
        assert rc == 0 and summary["errors"] == 0 and summary["refused"] == {}, summary
        assert summary["sent"] > 0 and sc.name == "t"
        assert wait_for(lambda: len(gw.msgs) == summary["sent"], timeout=20), (len(gw.msgs), summary["sent"])
        devices_seen = {t.split("/")[4] for t, _ in gw.msgs}
        assert devices_seen <= set(secured["pws"]) and len(devices_seen) == len(secured["pws"])
    finally:
        gw.close()


def test_a_device_without_credentials_is_counted_refused(settings, secured, tmp_path):
    pws = dict(secured["pws"])
    missing = sorted(pws)[0]
    del pws[missing]
    s = _settings_for(settings, secured["port"])
    summary = simulate(secured["sc"], s, Options(rate=500, progress=False, credentials=pws))
    assert summary["refused"] == {"connect: no credentials for the device": summary["errors"]} and summary["errors"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--port", "70000"], "--port 70000 is not 1..65535"),
    (["--tls-ca", "/nonexistent/ca.crt"], "no such file"),
    (["--credentials", "/nonexistent/creds.json"], "No such file"),
    (["--password-file", "/nonexistent/pw"], "No such file"),
    (["--rate", "-5"], "--rate -5.0 is negative"),
    (["--rate", "nan"], "--rate nan is negative or not a number"),
    (["--duration", "0"], "must be a finite number > 0"),
    (["--duration", "nan"], "must be a finite number > 0"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(["run", "demo", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_credentials_file_content(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text('["not", "a", "map"]')
    assert cli.main(["run", "demo", "--no-progress", "--credentials", str(f)]) == 2
    assert "expected" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "demo", "--port", "abc"])
    assert e.value.code == 2
