"""Headless Debian Chromium for page tests (installed by scripts/bootstrap.sh)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--run-all-compositor-stages-before-draw")


def binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run(url: str, *extra: str, budget_ms: int = 8000, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    exe = binary()
    if exe is None:
        raise RuntimeError("chromium is not installed: run ./scripts/bootstrap.sh")
    with tempfile.TemporaryDirectory(prefix="kc-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                               *extra, url], capture_output=True, text=True, timeout=timeout_s)


def dom(url: str) -> str:
    return run(url, "--dump-dom").stdout


def screenshot(url: str, out: Path, width: int, height: int) -> Path:
    r = run(url, f"--screenshot={out}", f"--window-size={width},{height}")
    if not out.exists():
        raise RuntimeError(f"no screenshot: {r.stderr[-500:]}")
    return out
