"""One retry backoff for the whole platform (kotacerdas/backoff.py), and no private copies of it."""

from __future__ import annotations

import random
import re
from pathlib import Path

from kotacerdas.backoff import Backoff, full_jitter
from kotacerdas.runtime import Backoff as RuntimeBackoff

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("kotacerdas", "gateway", "ingest", "analytics", "dashboards", "simulators", "devtools", "bench")
# a doubling delay written by hand: `delay *= 2`, `min(backoff * 2, cap)`, `base * 2 ** attempt`
_OWN_BACKOFF = re.compile(r"(delay|backoff|wait|sleep)\w*\s*\*=\s*2\b"
                          r"|min\(\s*[\w.]*(delay|backoff)\w*\s*\*\s*2\b"
                          r"|\*\s*\(?\s*2\s*\*\*\s*\(?\s*[\w.]*attempt")


def test_full_jitter_stays_under_the_doubling_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (4, 5.0), (40, 5.0), (10**6, 5.0), (-1, 0.5)]:
        ds = [full_jitter(attempt, 0.5, 5.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in ds)
        assert max(ds) > 0.8 * ceiling and min(ds) < 0.2 * ceiling  # spread over the whole window


def test_runtime_reexports_the_same_backoff() -> None:
    assert RuntimeBackoff is Backoff


def test_no_retry_loop_doubles_its_own_delay() -> None:
    # firmware/device keeps its own (MicroPython cannot import kotacerdas; see kc_backoff.py)
    found = []
    for pkg in PRODUCT:
        for p in sorted((REPO / pkg).rglob("*.py")):
            if p == REPO / "kotacerdas" / "backoff.py":
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if _OWN_BACKOFF.search(line.split("#", 1)[0]):
                    found.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert not found, "use kotacerdas.backoff instead:\n" + "\n".join(found)


def test_the_detector_finds_hand_written_backoff() -> None:
    for line in ("delay *= 2", "backoff = min(backoff * 2, 5.0)", "d = min(self._backoff * 2, 5)",
                 "delay = min(self.backoff_s * (2 ** (attempts - 1)), cap)"):
        assert _OWN_BACKOFF.search(line), line
    assert not _OWN_BACKOFF.search("x = n * 2")
