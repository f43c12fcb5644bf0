"""mypy (pyproject.toml) covers every Python package of the repository but the test suite, and
leaves out exactly the MicroPython device code (checked against the ESP32 stubs instead)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_checks_every_package_but_tests() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    packages = {p.parent.name for p in REPO.glob("*/*.py") if not p.parent.name.startswith(".")}
    assert set(cfg["files"]) == packages - {"tests"}, "add the new package to [tool.mypy] files"
    excluded = [re.compile(x) for x in cfg["exclude"]]
    micropython = {"firmware/device/kc_node.py", "firmware/fakes/unix/esp32.py"}
    host_tools = {"firmware/build.py", "devtools/stack.py", "bench/benchutil.py"}
    assert all(any(x.search(f) for x in excluded) for f in micropython)
    assert not any(x.search(f) for x in excluded for f in host_tools)
