"""kc_board.py (the real ESP32 board layer) and the whole node on real MicroPython, with the
board's modules (machine, network, ntptime, onewire, socket) replaced by stand-ins
(firmware/fakes/esp32) wired to the protocol fakes and an in-memory MQTT broker."""

from __future__ import annotations

import json

import pytest

from firmware import mpnode

SCRIPT = r"""
import json, os, time
import kc_config, machine, ntptime, socket
from kc_board import Board
from kc_node import Node

def fresh():
    for f in ['/data/remote.json'] + ['/data/log/' + n for n in (os.listdir('/data/log') if 'log' in os.listdir('/data') else [])]:
        try:
            os.remove(f)
        except OSError:
            pass
    machine.RTC.MEM = b''
    del socket.PUBLISHED[:]

out = {}
for kind in ('air', 'water', 'waste_bin'):
    fresh()
    cfg = kc_config.validate_device({"kind": kind, "device": "BOARD-1", "interval_s": 1,
                                     "ring": {"capacity": 16, "slot": 512}, "wdt_ms": 30000,
                                     "low_battery_v": 2.8})  # the stand-in ADC reads 3.0 V
    board = Board(cfg)
    board.warmup_scale = 0  # warm-up has its own tests (mp_units); here: every field at once
    node = Node(board, cfg)
    feeds = machine.CALLS["wdt_feeds"]
    slept = None
    try:
        node.run(duration_ms=2300)
    except machine.DeepSleepCalled:
        slept = machine.CALLS["deepsleep"]
    tel = [json.loads(m) for t, m, d in socket.PUBLISHED if t.endswith('/telemetry')]
    status = [json.loads(m) for t, m, d in socket.PUBLISHED if t.endswith('/status')]
    out[kind] = {"telemetry": tel, "status": status, "slept_ms": slept, "feeds": machine.CALLS["wdt_feeds"] - feeds,
                 "ntp": len(ntptime.CALLS), "rtc": len(machine.RTC.MEM), "errors": node.suite.errors,
                 "topics": sorted(set(t for t, m, d in socket.PUBLISHED))}
    node.ring.close()
print("BOARDJSON " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def board_run() -> dict:
    why = mpnode.available()
    assert why is None, why
    files = mpnode.source_files()
    for p in (mpnode.FAKES_DIR / "esp32").glob("*.py"):
        files[f"/lib/{p.name}"] = str(p)
    r = mpnode.run(SCRIPT, files)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("BOARDJSON ")]
    assert line, r.stdout[-2000:]
    return json.loads(line[0][10:])


@pytest.mark.micropython
def test_air_board(board_run: dict) -> None:
    a = board_run["air"]
    assert len(a["telemetry"]) >= 2 and a["errors"] == {}
    f = a["telemetry"][0]["fields"]
    assert set(f) == {"pm25", "pm10", "co2", "no2", "o3", "co", "temperature", "humidity"}
    # the first reading is taken at boot, before Wi-Fi is up: rssi only from the second on
    assert a["telemetry"][0]["bat"] == 5.0 and a["telemetry"][-1]["rssi"] == -58
    assert a["status"][0]["state"] == "online" and a["feeds"] > 10 and a["ntp"] >= 1
    assert a["slept_ms"] is None  # mains-powered: no deep sleep


@pytest.mark.micropython
def test_water_board(board_run: dict) -> None:
    w = board_run["water"]
    assert len(w["telemetry"]) >= 2 and w["errors"] == {}
    f = w["telemetry"][0]["fields"]
    # 1.5 V on the pH input is the neutral-buffer voltage; DS18B20 reports in 1/16 degC steps
    assert f["ph"] == 7.0 and 24 < f["temperature"] < 30 and (f["temperature"] * 16) % 1 == 0
    assert set(f) == {"ph", "turbidity", "tds", "conductivity", "dissolved_oxygen", "temperature", "chlorine"}


@pytest.mark.micropython
def test_waste_bin_board_deep_sleeps(board_run: dict) -> None:
    b = board_run["waste_bin"]
    assert len(b["telemetry"]) == 1 and b["errors"] == {}
    f = b["telemetry"][0]["fields"]
    assert f["tilt"] == 0 and 25 < f["temperature"] < 35  # NTC beta equation at 1.5 V on a 10k divider
    # 4700 us echo at the speed of sound for the measured air temperature
    expected = 4700e-6 * (331.3 + 0.606 * f["temperature"]) / 2 * 100
    assert f["distance"] == pytest.approx(expected, abs=0.15)
    assert 0 < b["slept_ms"] <= 1000 and b["rtc"] == 40  # seq, boots, next wake, boot id, monotonic time, Wi-Fi memory, ... in RTC memory
    assert b["telemetry"][0]["bat"] == 3.0  # 1.5 V at the ADC through the 2:1 divider


MAIN_SCRIPT = r"""
import json, machine
with open('/config.json', 'w') as f:
    f.write(json.dumps({"kind": "air", "device": "B-1", "wifi": {"ssid": "kota-iot", "password": "pw"}}))
src = open('/lib/main.py').read()
out = []
for boot in range(7):
    machine.CALLS["deepsleep"] = None
    try:
        exec(src, {"__name__": "main"})
    except machine.DeepSleepCalled:
        pass
    out.append(machine.CALLS["deepsleep"])
print("MAINJSON " + json.dumps({"sleeps": out, "crash": json.load(open('/data/crash.json'))}))
"""


@pytest.mark.micropython
def test_main_survives_a_broken_module_with_backoff_then_safe_mode(tmp_path) -> None:  # noqa: ANN001
    """main.py wraps even the imports: a half-written kc_node is recorded (count, reset cause,
    traceback), the board deep-sleeps with growing back-off, and after 5 crashes stays in safe mode."""
    broken = tmp_path / "kc_node.py"
    broken.write_text("raise ImportError('half-written module')\n")
    files = mpnode.source_files()
    for p in (mpnode.FAKES_DIR / "esp32").glob("*.py"):
        files[f"/lib/{p.name}"] = str(p)
    files["/lib/main.py"] = str(mpnode.DEVICE_DIR / "main.py")
    files["/lib/kc_node.py"] = str(broken)
    r = mpnode.run(MAIN_SCRIPT, files)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("MAINJSON ")]
    assert line, r.stdout[-2000:]
    doc = json.loads(line[0][9:])
    assert doc["sleeps"] == [10000, 30000, 120000, 600000, 600000, None, None]
    assert doc["crash"]["count"] == 5 and doc["crash"]["cause"] == 1
    assert "half-written module" in doc["crash"]["tb"]
    assert "safe mode" in r.stdout
