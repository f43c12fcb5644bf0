"""analytics.memory: freed memory stays in the process and is reused without faulting pages in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import resource, sys
import numpy as np
from analytics.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
a = np.ones(16 << 20)  # 128 MB, touched, then freed
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(16 << 20)  # the same again: reused memory needs no new pages
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    return int(out.stdout.strip())


@pytest.mark.io
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_retained_memory_is_reused_without_page_faults():
    # a separate interpreter each: the setting is process-wide
    assert _faults("retain") < 16
    assert _faults("default") >= 64  # glibc's defaults return the 128 MB and fault it in again
