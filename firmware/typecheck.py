"""Type-check the on-device sources with mypy against ``micropython-esp32-stubs``.

The stub distributions install flat into site-packages (``machine.pyi``, ``time.pyi``,
a MicroPython ``stdlib/`` typeshed and ``_mpy_shed``). mypy is pointed at exactly those:
the MicroPython stdlib as its typeshed, the ESP32 module stubs on MYPYPATH, no other
site-packages, so ``time.ticks_ms`` or ``machine.deepsleep`` resolve as on a board and
CPython-only APIs do not. Errors inside the stub files themselves are not ours and
are silenced per stub module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib import metadata
from pathlib import Path

DEVICE_DIR = Path(__file__).resolve().parent / "device"


def _stub_files(dist: str) -> list[Path]:
    files = metadata.files(dist) or []
    return [Path(str(f.locate())) for f in files if str(f).endswith(".pyi")]


def run(extra_args: list[str] | None = None, extra_files: list[Path] | None = None) -> tuple[int, str]:
    site = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "stubs"
        mods: set[str] = set()
        for f in _stub_files("micropython-esp32-stubs"):
            rel = f.relative_to(site)
            (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, stubs / rel)
            mods.add(rel.parts[0].removesuffix(".pyi"))
        shutil.copytree(site / "_mpy_shed", stubs / "_mpy_shed")
        mods.add("_mpy_shed")
        cfg = Path(tmp) / "mypy.ini"
        cfg.write_text(
            "[mypy]\nexplicit_package_bases = True\ncheck_untyped_defs = True\nno_site_packages = True\nwarn_unused_ignores = False\n"
            + "".join(f"\n[mypy-{m}]\nignore_errors = True\n[mypy-{m}.*]\nignore_errors = True\n" for m in sorted(mods))
        )
        files = [str(p.relative_to(DEVICE_DIR)) for p in sorted(DEVICE_DIR.rglob("*.py"))]
        for i, extra in enumerate(extra_files or []):  # e.g. a probe that must fail
            probe = Path(tmp) / "probe" / f"kc_probe{i}.py"
            probe.parent.mkdir(exist_ok=True)
            shutil.copyfile(extra, probe)
            files.append(str(probe))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--custom-typeshed-dir", str(site),
               "--cache-dir", str(Path(tmp) / "cache"), *(extra_args or []), *files]
        env = {"MYPYPATH": f"{stubs}:{DEVICE_DIR}:{Path(tmp) / 'probe'}", "PATH": "/usr/bin:/bin"}
        r = subprocess.run(cmd, cwd=DEVICE_DIR, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout + r.stderr
