"""Small pieces the benchmark scripts share (run from this folder: ``python bench/x.py``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.table import Table


def wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    """Until the service on ``port`` answers /readyz 200; raise with the end of its log if it
    exits or is not ready within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{log.name} not ready: " + log.read_text()[-2000:])


def pipes(proc: subprocess.Popen[str]) -> tuple[IO[str], IO[str]]:
    """(stdin, stdout) of a process started with both as text pipes (a publisher we talk to)."""
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


def print_rows(con: Console, title: str, rows: list[dict[str, Any]]) -> None:
    """One rich table of result rows (dicts with the same keys), columns in key order."""
    t = Table(title=title)
    for col in rows[0]:
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(v) for v in r.values()))
    con.print(t)
