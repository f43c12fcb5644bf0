"""Which tests the service writes as `qc` verdicts and `qc_episode` alarms: the one list that the
service loop (:mod:`analytics.service`) and the harness (:mod:`analytics.evaluate`) both use, so
what a user sees in Grafana is what ``analytics evaluate`` scores.

- :data:`DATA_QUALITY`: is the reading usable at all (sensor range / expected span, a stuck
  value, a silence). Written always; kept apart from anomaly alarms (their own episode types).
- :data:`ANOMALY`: the tests that score the fault groups of :data:`analytics.evaluate.DETECTORS_FOR`.
- :data:`OPT_IN`: tests that no fault group scores any more and that only add false alarms
  on the simulator's scenarios (docs/analytics.md, "What the service writes"): Hampel (a reading
  far from the previous hours' level), rate of change, the windowed neighbour drift test, the
  EWMA / CUSUM charts, and the station test (multivariate: over the tuning seeds it found 4 of 277
  correlated faults the shift test missed, for 366 flagged runs touching no label, most of the
  correlated row's false alarms; docs/analytics.md, "Station test opt-in"). A deployment turns
  them on by name with ``analytics.extra_tests``.
"""

from __future__ import annotations

from typing import Iterable

DATA_QUALITY: tuple[str, ...] = ("gross_range", "flat_line", "gap")
ANOMALY: tuple[str, ...] = ("spike", "shift", "trend", "seasonal")
OPT_IN: tuple[str, ...] = ("hampel", "rate_of_change", "drift", "ewma", "cusum", "multivariate")
ALL: tuple[str, ...] = DATA_QUALITY + ANOMALY + OPT_IN  # every test the service can write
DEFAULT: frozenset[str] = frozenset(DATA_QUALITY + ANOMALY)


def written(extra: Iterable[str] = ()) -> frozenset[str]:
    """The tests a service writes: :data:`DEFAULT` plus the opted-in ``extra`` (names from
    :data:`OPT_IN`). Raises ValueError naming an unknown test (the service refuses to start)."""
    extra = list(extra)
    bad = sorted(set(extra) - set(OPT_IN))
    if bad:
        raise ValueError(f"analytics.extra_tests: unknown test(s) {bad}; choose from {list(OPT_IN)}")
    return DEFAULT | frozenset(extra)


__all__ = ["ALL", "ANOMALY", "DATA_QUALITY", "DEFAULT", "OPT_IN", "written"]
