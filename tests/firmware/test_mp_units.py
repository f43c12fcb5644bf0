"""The firmware unit tests of tests/firmware/mp_units.py, run on real MicroPython
(WebAssembly port under Node) and on CPython: the same source, both interpreters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware import mpnode
from tests.firmware import mp_units

CASES = sorted(n for n in dir(mp_units) if n.startswith("test_"))
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def micropython_results() -> dict[str, str]:
    why = mpnode.available()
    if why:
        pytest.fail(f"MicroPython runner unavailable: {why}")
    files = mpnode.source_files()
    files["/lib/mp_units.py"] = str(HERE / "mp_units.py")
    r = mpnode.run("import sys\nprint(sys.implementation.name)\nimport mp_units\nmp_units.run_all()\n", files)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == "micropython"
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(PASS|FAIL) (test_\w+)(.*)$", line)
        if m:
            out[m.group(2)] = m.group(1) + m.group(3)
    out["_stderr"] = r.stderr
    return out


def test_cases_exist() -> None:
    assert len(CASES) >= 20


@pytest.mark.micropython
@pytest.mark.parametrize("name", CASES)
def test_on_micropython(name: str, micropython_results: dict[str, str]) -> None:
    assert name in micropython_results, f"{name} did not run: {micropython_results['_stderr'][-2000:]}"
    assert micropython_results[name] == "PASS", micropython_results[name] + micropython_results["_stderr"][-2000:]


@pytest.mark.parametrize("name", CASES)
def test_on_cpython(name: str) -> None:
    getattr(mp_units, name)()
