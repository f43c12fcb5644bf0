import json

import pytest

from simulators import cli
from simulators.firmware_mode import FirmwareUnavailable, check_available


@pytest.fixture
def env_for(settings, monkeypatch):
    # the CLI builds its own settings from the environment, as a real invocation does
    monkeypatch.setenv("KC_MQTT__HOST", settings.mqtt.host)
    monkeypatch.setenv("KC_MQTT__PORT", str(settings.mqtt.port))
    monkeypatch.setenv("KC_MQTT__TOPIC_ROOT", settings.mqtt.topic_root)
    monkeypatch.setenv("KC_STATE_DIR", str(settings.state_dir))
    return settings


def test_list_shows_shipped_scenarios(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "depok" in out


def test_devices_export(tmp_path):
    out = tmp_path / "devices.json"
    assert cli.main(["devices", "demo", "-o", str(out)]) == 0
    recs = json.loads(out.read_text())
    assert len(recs) == 15 and {r["kind"] for r in recs} == {"air", "water", "waste_bin"}


def test_run_dry_run_writes_summary_labels_and_messages(env_for, tmp_path, capsys):
    args = ["run", "demo", "--duration", "2", "--seed", "5", "--dry-run", str(tmp_path / "d.jsonl"),
            "--summary", str(tmp_path / "s.json"), "--labels", str(tmp_path / "l.jsonl"), "--no-progress"]
    assert cli.main(args) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["seed"] == 5 and s["sent"] > 0
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["topic"].endswith("/telemetry") for x in lines) == s["sent"]
    labels = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert labels and all(set(lb) == {"device", "kind", "field", "start", "end", "type", "run", "trace"} for lb in labels)


def test_dry_run_at_a_fixed_now_is_reproducible(env_for, tmp_path):
    # --now pins the simulated window: the same scenario, seed and now give the same bytes (the
    # multi-seed harness caches on it); another now gives another window
    def run(name: str, now: str) -> tuple[bytes, bytes, dict]:
        d, lab, s = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels", tmp_path / f"{name}.json"
        assert cli.main(["run", "demo", "--duration", "2", "--seed", "5", "--now", now, "--dry-run", str(d),
                         "--labels", str(lab), "--summary", str(s), "--no-progress"]) == 0
        return d.read_bytes(), lab.read_bytes(), json.loads(s.read_text())
    a, b = run("a", "2026-11-30T12:00:00Z"), run("b", "1796040000000")
    assert a[0] == b[0] and a[1] == b[1] and a[0]
    assert a[2]["window_end_ms"] == 1_796_040_000_000
    c = run("c", "2026-11-30T13:00:00+01:00")  # the same instant written with its offset
    assert c[0] == a[0]
    assert run("d", "2026-11-29T12:00:00Z")[0] != a[0]


def test_now_that_is_no_time_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "demo", "--now", "yesterday", "--dry-run", "x.jsonl"])
    assert exc.value.code == 2 and "neither epoch ms nor an ISO 8601 time" in capsys.readouterr().err


def test_run_publishes_with_qos0_and_rate(env_for, tmp_path):
    assert cli.main(["run", "demo", "--duration", "2", "--qos", "0", "--rate", "300", "--summary",
                     str(tmp_path / "s.json"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["qos"] == 0 and s["errors"] == 0 and s["sent"] > 0


@pytest.mark.io
def test_bad_scenario_and_unreachable_broker_fail_clearly(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[kinds.plasma]\ncount = 1\n')
    assert cli.main(["run", str(bad)]) == 2
    assert "not a catalogue kind" in capsys.readouterr().err
    from devtools.stack import free_port

    monkeypatch.setenv("KC_MQTT__PORT", str(free_port()))
    assert cli.main(["run", "demo", "--duration", "1", "--no-progress"]) == 4
    assert "cannot reach the MQTT broker" in capsys.readouterr().err
    monkeypatch.setenv("KC_MQTT__HOST", "no-such-broker.invalid")  # RFC 6761: never resolves
    assert cli.main(["run", "demo", "--duration", "1", "--no-progress"]) == 4
    assert "cannot reach the MQTT broker at no-such-broker.invalid" in capsys.readouterr().err


def test_firmware_mode_spawns_real_firmware_or_says_what_is_missing(env_for, tmp_path, capsys):
    import time

    from kotacerdas import contract

    from .test_publish import Collector

    sc = tmp_path / "fw.toml"
    sc.write_text('span_s = 60\nduration_s = 4\n[kinds.air]\ncount = 1\n[firmware]\nair = 1\n')
    try:
        check_available()
        available = True
    except FirmwareUnavailable:
        available = False
    root = env_for.mqtt.topic_root
    sub = Collector(env_for, f"{root}/v1/+/+/fw-fw-air-001/telemetry")
    try:
        rc = cli.main(["run", str(sc), "--summary", str(tmp_path / "s.json"), "--no-progress"])
        got = sub.wait_for(1, timeout=10) if available else []
    finally:
        sub.close()
    if not available:
        assert rc == 3
        assert "kotacerdas firmware virtual" in capsys.readouterr().err
        return
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["firmware"]["devices"] == 1 and s["firmware"]["failed"] == 0, s["firmware"]
    assert s["firmware"]["results"]["fw-fw-air-001"]["delivered"] >= 1
    # the real firmware's readings arrived on the broker and pass the same contract as the fleet's
    assert got
    now = int(time.time() * 1000)
    assert all(contract.validate_telemetry(t, p, now, root=root) for _, t, p, _ in got)


def test_sigterm_stops_cleanly_and_still_writes_the_summary(env_for, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    summary = tmp_path / "s.json"
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "simulate", "run", "demo", "--duration", "20",
                          "--summary", str(summary), "--no-progress"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from .test_publish import Collector

    sub = Collector(env_for, f"{env_for.mqtt.topic_root}/#")
    try:
        assert sub.wait_for(20, timeout=30), "simulator never started publishing"
    finally:
        sub.close()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    s = json.loads(summary.read_text())
    assert s["stopped_early"] is True
    assert 0 < s["sent"] < 400 and s["errors"] == 0
