"""Keep freed memory inside the process (glibc), for the large, short-lived arrays of the detectors.

A full detector run over 10,000 x 1,440 readings allocates ~0.7 GB of results plus block
temporaries, and frees them again. glibc gives every allocation above its mmap threshold
(128 KiB .. 32 MiB) back to the kernel on free, so the next run faults the same amount in
afresh: on the project's VM that costs 0.5-1.5 s of kernel time per run (measured in
docs/benchmarks.md), more than the detectors themselves. :func:`retain_freed_memory` raises
the mmap and trim thresholds so freed blocks stay in the heap and are reused. The price: the
process keeps its peak footprint. It changes process-wide allocator settings, so the
analytics service and the benchmark call it at start-up; library functions never do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to ``limit_bytes`` from the heap and keep up to that much freed memory.

    Returns True when applied (glibc on Linux), False where it has no effect (other C
    libraries, other systems).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    limit = min(int(limit_bytes), 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
