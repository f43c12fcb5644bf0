import ast
import subprocess
import sys
from pathlib import Path

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
    assert COMMANDS["stack"][0] == "devtools.stack" and COMMANDS["backbone"][0] == "devtools.backbone"


PRODUCT = ("kotacerdas", "gateway", "ingest", "analytics", "dashboards", "simulators", "firmware")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            roots |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            roots.add(n.module.split(".")[0])
    return roots


def test_no_product_module_imports_tests_or_devtools() -> None:
    # anywhere in the file, not only at the top: the product must run from an install without either
    repo = Path(__file__).resolve().parents[2]
    bad = [f"{p.relative_to(repo)}: {sorted(r)}" for pkg in PRODUCT for p in sorted((repo / pkg).rglob("*.py"))
           if (r := _imported_roots(p) & {"tests", "devtools"})]
    assert not bad, bad


@pytest.mark.io
def test_importing_and_running_the_cli_loads_neither_tests_nor_devtools():
    code = ("import sys, kotacerdas.cli as c; c.main(['--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tests', 'devtools')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
