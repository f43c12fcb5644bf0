"""mypy against micropython-esp32-stubs: the device sources use only what a board has."""

from __future__ import annotations

import pytest

from pathlib import Path

from firmware import typecheck


pytestmark = pytest.mark.io  # subprocesses and loopback servers: not `unit`

def test_device_sources_typecheck_against_esp32_stubs() -> None:
    rc, out = typecheck.run()
    assert rc == 0, out
    assert "no issues found in 17 source files" in out or "Success" in out


def test_typecheck_catches_board_api_misuse(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import machine\nimport time\n\nmachine.deepsleep('soon')\ntime.sleep_ms(1.5)\n")
    rc, out = typecheck.run(extra_files=[probe])
    assert rc == 1
    assert "deepsleep" in out and "sleep_ms" in out
