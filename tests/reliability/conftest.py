"""Fixtures of the reliability suite: result rows for the report, the full-length switch."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from devtools.reliability import node_key
from devtools.reliability_results import FaultRow, append


@pytest.fixture
def fault_log(request) -> Callable[[FaultRow], FaultRow]:
    """Record one fault's counts: into the runner's results file when run by ``kotacerdas reliability``."""
    path: Path | None = getattr(request.config, "kc_reliability_results", None)

    def record(row: FaultRow) -> FaultRow:
        row.test = node_key(request.node.nodeid)  # the runner's key for this test's outcome
        append(path, row)
        return row

    return record


@pytest.fixture
def full_length(request) -> bool:
    """``kotacerdas reliability --full``: outages at their issue-specified length (60 s) instead of CI length."""
    return bool(getattr(request.config, "kc_reliability_full", False))
