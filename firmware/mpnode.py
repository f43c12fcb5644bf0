"""Run code on real MicroPython (``@micropython/micropython-webassembly-pyscript``
under Node) with chosen firmware files copied into its filesystem."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parent
DEVICE_DIR = FIRMWARE_DIR / "device"
FAKES_DIR = FIRMWARE_DIR / "fakes"
RUNNER = FIRMWARE_DIR / "mp_runner.mjs"
PACKAGE_DIR = FIRMWARE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


@dataclass
class MpResult:
    returncode: int
    stdout: str
    stderr: str


def available() -> str | None:
    """None if runnable, else why not (for a clear skip/fail message)."""
    if shutil.which("node") is None:
        return "node is not installed (scripts/bootstrap.sh installs nodejs)"
    if not (PACKAGE_DIR / "micropython.mjs").exists():
        return "run `npm install` in firmware/ (scripts/bootstrap.sh does)"
    return None


def source_files(extra_dirs: tuple[Path, ...] = (FAKES_DIR,)) -> dict[str, str]:
    """Device sources under /lib (as on a board) plus the fakes."""
    files = {f"/lib/{p.relative_to(DEVICE_DIR).as_posix()}": str(p) for p in DEVICE_DIR.rglob("*.py")
             if p.name != "main.py"}
    for d in extra_dirs:
        files.update({f"/lib/{p.name}": str(p) for p in d.glob("*.py") if p.name != "__init__.py"})
    return files


def bundle_files(bundle: Path) -> dict[str, str]:
    return {f"/lib/{p.relative_to(bundle).as_posix()}": str(p) for p in bundle.rglob("*.mpy")}


def run(script: str, files: dict[str, str] | None = None, timeout_s: float = 120) -> MpResult:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"files": files or {}, "path": ["/lib"], "script": script}))
        r = subprocess.run(["node", str(RUNNER), str(spec)], capture_output=True, text=True,
                           timeout=timeout_s, cwd=FIRMWARE_DIR)
    return MpResult(r.returncode, r.stdout, r.stderr)
