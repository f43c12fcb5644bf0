"""The detector set sharded by city (or district) over worker processes.

``run_all`` takes the neighbours' median over every series it is given (the shared weather and
daily cycle it subtracts before EWMA/CUSUM/drift). The physically right neighbours of a station
are the stations of its own city, so the shard key is the city: each group of rows is one
``run_all`` call, in this process or in one of ``processes`` worker processes, and the results
are put back in the caller's row order. Because each group's computation is the same call
wherever it runs, the result does not depend on ``processes`` (tests/analytics/test_shard.py
checks bit-for-bit equality with the one-process run).

At platform scale a city's analytics is one process already (kotacerdas/routing.py: it reads
the city's InfluxDB); this module is for one process serving many cities of one InfluxDB.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from analytics import qc
from analytics.detectors import QcParams, StatParams, run_all

__all__ = ["run_by_group"]


def _one(args: tuple[np.ndarray, QcParams, int, StatParams, dict[str, Any]]) -> dict[str, qc.QcResult]:
    x, p, t0_ms, sp, kw = args
    return run_all(x, p, t0_ms, sp, **kw)


def run_by_group(x: np.ndarray, groups: np.ndarray, p: QcParams, t0_ms: int, sp: StatParams | None = None,
                 *, processes: int = 1, **run_all_kw: Any) -> dict[str, qc.QcResult]:
    """``run_all`` per group of rows.

    x: (S, T) readings in field units, NaN = missing. groups: (S,) label per row (city or
    district). ``run_all_kw`` (dtype, score_dtype, chunk) go to every ``run_all``. Returns, like ``run_all``, {detector: QcResult} with (S, T) flag and score arrays
    in the rows' original order.
    """
    labels, inverse = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    sp = sp or StatParams()
    tasks = [(x[r], p, t0_ms, sp, run_all_kw) for r in rows]
    if processes > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(min(processes, len(tasks))) as pool:
            parts = list(pool.map(_one, tasks))
    else:
        parts = [_one(t) for t in tasks]
    merged: dict[str, qc.QcResult] = {}
    for r, part in zip(rows, parts):
        for name, res in part.items():
            if name not in merged:
                merged[name] = qc.QcResult(np.empty((x.shape[0], x.shape[1]), dtype=res.flag.dtype),
                                           np.empty((x.shape[0], x.shape[1]), dtype=res.score.dtype))
            merged[name].flag[r] = res.flag
            merged[name].score[r] = res.score
    return merged
