import subprocess
import sys

import pytest

from kotacerdas.cli import COMMANDS, main


def test_help_lists_every_part(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("gateway", "ingest", "analytics", "simulate", "dashboards", "demo", "stack"):
        assert name in out and name in COMMANDS


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.io
def test_console_script_runs_catalogue():
    out = subprocess.run([sys.executable, "-m", "kotacerdas", "catalogue", "--json"], capture_output=True, text=True, check=True)
    assert '"WasteContainer"' in out.stdout


def test_the_product_cli_never_imports_the_test_suite():
    # dev tooling lives in devtools/; the suite is run by path, so an installed CLI works without tests/
    assert not [m for m, _ in COMMANDS.values() if m.split(".")[0] == "tests"]
    assert COMMANDS["reliability"][0] == "devtools.reliability" and COMMANDS["demo"][0] == "devtools.demo"
