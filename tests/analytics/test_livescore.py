"""`analytics evaluate --live`: score what the service stored for a real (short) simulator run against
that run's labels, and refuse another run's labels (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

from analytics.livescore import evaluate_live
from analytics.service import AnalyticsService
from kotacerdas import simrun
from kotacerdas.catalogue import load_catalogue
from kotacerdas.lineprotocol import format_line
from simulators.runner import Options, simulate
from simulators.scenario import parse_scenario
from tests.analytics.test_cli import _env
from tests.analytics.test_service import NOW

CAT = load_catalogue()
SPAN_S = 6 * 3600


def _scenario():
    return parse_scenario({"name": "live-eval", "city": "depok", "seed": 31, "span_s": SPAN_S, "duration_s": 4,
                           "device_prefix": "lv", "kinds": {"air": {"count": 5}, "water": {"count": 4}},
                           "faults": {"spike": 4, "flatline": 2, "offset": 2, "dropout": 2}})


def _run(settings, tmp_path, now_ms: int, name: str) -> tuple[dict, list[str]]:
    """A simulator run (its real engine, faults and labels) and its telemetry as ingest stores it."""
    opts = Options(labels=tmp_path / f"{name}.labels.jsonl", dry_run=tmp_path / f"{name}.jsonl", progress=False,
                   births=False)
    summary = simulate(_scenario(), settings, opts, now_ms=now_ms)
    lines = []
    for ln in (tmp_path / f"{name}.jsonl").read_text().splitlines():
        doc = json.loads(ln)
        parts = doc["topic"].split("/")
        if len(parts) != 6 or parts[5] != "telemetry":
            continue
        try:
            p = json.loads(doc["payload"])
            fields = {k: float(v) for k, v in p["fields"].items() if isinstance(v, (int, float))}
            ts, seq = int(p["ts"]), int(p["seq"])
        except (ValueError, KeyError, TypeError):
            continue  # malformed on purpose: the gateway dead-letters it
        kind = CAT[parts[3]]
        fields = {k: v for k, v in fields.items() if k in kind.field_names}
        lines.append(format_line(kind.measurement, {"city": parts[2], "device": parts[4], "kind": kind.name},
                                 {**fields, "seq": seq, "fw": p.get("fw", "")}, ts))
    return summary, lines


def test_live_scores_and_refuses_another_runs_labels(settings, influx, tmp_path):
    summary, lines = _run(settings, tmp_path, NOW, "a")
    run = summary["run_id"]
    labels = [json.loads(x) for x in (tmp_path / "a.labels.jsonl").read_text().splitlines()]
    assert labels and {lb["run"] for lb in labels} == {run}
    influx.write(lines)
    assert {simrun.run_of(s.values[0][1]) for s in influx.series('SELECT last("fw") FROM "air" GROUP BY "device"')} \
        == {run}
    # the live loop over the run: a pass every 30 min, as the running service makes them
    svc = AnalyticsService(settings)
    try:
        for k in range(1, SPAN_S // 1800 + 2):
            svc.run_pass(now_ms=NOW - SPAN_S * 1000 + k * 1_800_000, emit_all=False)
    finally:
        svc.close()

    rows = {r.type: r for r in evaluate_live(influx, labels, CAT, source="verdicts")}
    labelled = {lb["type"] for lb in labels}
    assert rows["spike"].events == sum(lb["type"] == "spike" for lb in labels) > 0
    assert rows["dropout"].detected >= 1 and rows["spike"].detected >= 1  # the stored verdicts are found
    assert sum(r.detected for t, r in rows.items() if t in labelled) >= len(labels) // 3
    assert rows["spike"].sensor_days > 0
    eps = {r.type: r for r in evaluate_live(influx, labels, CAT, source="episodes")}
    assert eps["spike"].events == rows["spike"].events and eps["dropout"].detected >= 1

    env = _env(settings)
    cmd = [sys.executable, "-m", "kotacerdas", "analytics", "evaluate", "--labels"]
    ok = subprocess.run(cmd + [str(tmp_path / "a.labels.jsonl"), "--live", "episodes"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "spike" in ok.stdout and "dropout" in ok.stdout
    # the same scenario run an hour later: other labels, another run id, never stored here
    other, _ = _run(settings, tmp_path, NOW + 3_600_000, "b")
    assert other["run_id"] != run
    bad = subprocess.run(cmd + [str(tmp_path / "b.labels.jsonl"), "--live", "verdicts"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "refused" in bad.stderr and other["run_id"] in bad.stderr and run in bad.stderr
    # labels from before run ids
    old = tmp_path / "old.labels.jsonl"
    old.write_text("".join(json.dumps({k: v for k, v in lb.items() if k != "run"}) + "\n" for lb in labels))
    none = subprocess.run(cmd + [str(old), "--live", "verdicts"], env=env, capture_output=True, text=True, timeout=120)
    assert none.returncode == 2 and "no run id" in none.stderr
