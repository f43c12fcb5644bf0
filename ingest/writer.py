"""Writing a batch so that one bad line never costs the good ones.

InfluxDB 1.x answers 400 when any line is refused (parse error, field type
conflict, point beyond the retention policy) and does not say reliably which
line it was. We bisect: halves that succeed are stored, halves that fail are split
again until single refused lines remain. Re-sending lines that were already stored
by a partial write is harmless (same measurement, tags and time overwrite).
"""

from __future__ import annotations

from kotacerdas.errors import Disposition
from kotacerdas.influx import InfluxClient, InfluxError


def is_transient(exc: InfluxError) -> bool:
    """Only DROP (400/413: these lines are bad) bisects; RETRY and FATAL (401/403: our credentials)
    are about the server or us, not the data: the caller spools and never drops."""
    return exc.disposition is not Disposition.DROP


def write_keep_good(client: InfluxClient, lines: list[str], *, precision: str = "ns") -> list[tuple[int, str]]:
    """Write ``lines``; returns ``[(index, error)]`` of the lines InfluxDB refuses.

    Raises :class:`InfluxError` when the failure is transient (the caller spools).
    """
    bad: list[tuple[int, str]] = []

    def go(lo: int, hi: int) -> None:
        try:
            client.write("\n".join(lines[lo:hi]), precision=precision)
        except InfluxError as exc:
            if is_transient(exc):
                raise
            if hi - lo == 1:
                bad.append((lo, exc.message))
                return
            mid = (lo + hi) // 2
            go(lo, mid)
            go(mid, hi)

    if lines:
        go(0, len(lines))
    return bad
