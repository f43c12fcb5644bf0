"""`analytics evaluate --live` over a run that went through the real pipeline.

simulate -> Mosquitto -> ``kotacerdas gateway run`` -> ``kotacerdas ingest run`` -> a private
InfluxDB database, then the analytics service's passes over it (``analytics run --once --replay``,
the passes the live loop would have made), then ``analytics evaluate --live`` against the run's
labels: every process is the real CLI (tests/services.py), nothing is written to InfluxDB by the
test itself. The value faults must be found in the stored ``qc`` verdicts / ``qc_episode``
episodes, and the alert-rule fault (contamination) in the stored ``alerts``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from tests.services import kc, service_env, start_pipeline

SCENARIO = Path(__file__).parent / "data" / "live_pipeline.toml"
SPAN_S = 43200  # the scenario's span_s
CAT = load_catalogue()
# fault types the run injects and the stored output must find (recall 100 %): flat lines are left out
# of the assertion (the flat-line test's 2 h floor is longer than some of this run's windows)
MUST_FIND = ("spike", "offset", "dropout", "contamination")


def _ok(argv: list[str], env: dict, timeout: float = 120) -> str:
    r = kc(*argv, env=env, timeout=timeout)
    assert r.returncode == 0, f"kotacerdas {' '.join(argv)} -> {r.returncode}\n{r.stderr[-3000:]}"
    return r.stdout


def _table(out: str) -> dict[str, tuple[int, int]]:
    """fault type -> (events, found) from `analytics evaluate`'s table."""
    rows = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            rows[parts[0]] = (int(parts[2]), int(parts[3]))
    return rows


def test_evaluate_live_through_gateway_and_ingest(settings, tmp_path):
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=settings.mqtt.topic_root)
    labels_path, summary_path = tmp_path / "labels.jsonl", tmp_path / "summary.json"
    procs, _ = start_pipeline(SCENARIO, env, tmp_path)
    try:
        _ok(["simulate", "run", str(SCENARIO), "--labels", str(labels_path), "--summary", str(summary_path),
             "--no-progress"], env)
        good = json.loads(summary_path.read_text())["good_by_kind"]
        with InfluxClient(settings.influx) as c:
            def stored() -> dict[str, int]:
                return {k: int(c.scalar(f'SELECT count("seq") FROM "{CAT[k].measurement}"') or 0) for k in good}

            deadline = time.monotonic() + 60
            while (have := stored()) != good and time.monotonic() < deadline:
                time.sleep(0.5)
            assert have == good, (have, good)  # every accepted reading stored once
    finally:
        for p in reversed(procs):
            p.stop()
    # the service's passes over the run, every hour as the live loop makes them
    _ok(["analytics", "run", "--once", "--replay", str(SPAN_S + 600), "--every", "3600"], env, timeout=180)

    labels = [json.loads(ln) for ln in labels_path.read_text().splitlines()]
    injected = {lb["type"] for lb in labels}
    assert set(MUST_FIND) <= injected, injected
    for source in ("verdicts", "episodes"):
        table = _table(_ok(["analytics", "evaluate", "--labels", str(labels_path), "--live", source], env))
        for ftype in MUST_FIND:
            events, found = table[ftype]
            assert events > 0 and found == events, (source, ftype, table[ftype])
        # per device for the alert rules: one event per labelled (station, window)
        assert table["contamination"][0] == len({(lb["device"], lb["start"]) for lb in labels
                                                 if lb["type"] == "contamination"})
