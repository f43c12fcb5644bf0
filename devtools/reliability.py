"""``kotacerdas reliability [--soak] [--full] [--report docs/reliability.md] [-k EXPR]``.

Runs the reliability and security suite (tests/reliability) with pytest in this
process, collects the fault tests' result rows and every test's outcome, and
writes the report. The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run by path from a checkout (the suite is not an installed package, and the product never imports it)
SUITE = REPO / "tests" / "reliability"


def node_key(nodeid: str) -> str:
    """'tests/reliability/test_faults.py::test_x[a/b]' -> 'test_faults.py::test_x[a/b]' (ids may hold slashes)."""
    path, _, rest = nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1]}::{rest}"


class _Collector:
    """pytest plugin: our options and every test's outcome."""

    def __init__(self, results: Path, full: bool, soak_devices: int, soak_duration_s: int):
        self.results = results
        self.full = full
        self.soak = (soak_devices, soak_duration_s)
        self.outcomes: dict[str, tuple[str, str]] = {}

    def pytest_configure(self, config) -> None:  # noqa: ANN001
        config.kc_reliability_results = self.results
        config.kc_reliability_full = self.full
        config.kc_soak_devices, config.kc_soak_duration_s = self.soak

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        name = node_key(report.nodeid)
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            note = ""
            if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                note = str(report.longrepr[2])
            elif hasattr(report, "wasxfail"):
                note = f"xfail: {report.wasxfail}"
            elif report.outcome == "failed":
                note = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message)[:200]
            outcome = "xfailed" if hasattr(report, "wasxfail") and report.outcome == "skipped" else report.outcome
            self.outcomes[name] = (outcome, note)
        elif report.when == "teardown" and report.outcome == "failed" and name in self.outcomes:
            self.outcomes[name] = ("error", "teardown failed")


def _aggregate(outcomes: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Parametrised cases folded into one row per test function: 'N passed, M failed'."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, res in outcomes.items():
        groups[name.split("[", 1)[0].replace(".py::", ": ")].append(res)
    out = {}
    for name, results in groups.items():
        counts: dict[str, int] = defaultdict(int)
        for o, _ in results:
            counts[o] += 1
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        notes = sorted({n for o, n in results if o != "passed" and n})
        out[name] = (summary, "; ".join(notes))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas reliability", description=__doc__.split("\n\n")[1])
    ap.add_argument("--soak", action="store_true", help="also run the 10-minute, 10,000-device soak")
    ap.add_argument("--full", action="store_true", help="full-length outages (InfluxDB stopped 60 s) instead of ~15 s")
    ap.add_argument("--soak-devices", type=int, default=10_000, help="soak fleet size (default 10,000)")
    ap.add_argument("--soak-duration", type=int, default=600, help="soak length in seconds (default 600)")
    ap.add_argument("--report", type=Path, default=REPO / "docs/reliability.md", help="where to write the report")
    ap.add_argument("--no-report", action="store_true", help="run only, write nothing")
    ap.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = ap.parse_args(argv)

    import pytest

    results = Path(tempfile.mkdtemp(prefix="kc-reliability-")) / "faults.jsonl"
    plugin = _Collector(results, args.full, args.soak_devices, args.soak_duration)
    marker = "soak or not soak" if args.soak else "not soak"
    if not SUITE.is_dir():
        print(f"kotacerdas reliability: the test suite is not here ({SUITE}); run it from a checkout",
              file=sys.stderr)
        return 2
    pargs = [str(SUITE), "-m", marker, "--rootdir", str(REPO), "-p", "no:cacheprovider", "-q", "-rA"]
    if args.keyword:
        pargs += ["-k", args.keyword]
    pargs += args.pytest_args
    t0 = time.monotonic()
    code = int(pytest.main(pargs, plugins=[plugin]))
    elapsed = time.monotonic() - t0

    from devtools.reliability_results import load, render

    rows = load(results)
    for r in rows:
        res = plugin.outcomes.get(r.test)
        r.outcome = res[0] if res else "?"
    if not args.no_report:
        cmd = "kotacerdas reliability" + (" --soak" if args.soak else "") + (" --full" if args.full else "")
        previous = None if args.soak else _previous_soak(args.report)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render(rows, _aggregate(plugin.outcomes), command=cmd, duration_s=elapsed,
                                      previous_soak=previous), encoding="utf-8")
        print(f"report written to {args.report} ({len(rows)} fault rows)", file=sys.stderr)
    return code


def _previous_soak(report: Path) -> str | None:
    """Keep the soak section of the last report when this run did not include the soak."""
    if not report.exists():
        return None
    text = report.read_text(encoding="utf-8")
    start = text.find("## Soak\n")
    end = text.find("\n## ", start + 1)
    if start < 0 or end < 0:
        return None
    body = text[start + len("## Soak\n"):end].strip()
    if not body or body.startswith("Not run"):
        return None
    if "(from an earlier" not in body:
        body += "\n\n(from an earlier `--soak` run)"
    return body


if __name__ == "__main__":
    raise SystemExit(main())
