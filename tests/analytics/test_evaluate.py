"""Evaluation harness on small synthetic data + labels in the simulators' formats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from analytics import evaluate as ev
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()
T0 = 1_795_400_000_000


def make_dry_run(tmp_path):
    """6 air stations, 6 h of 1-min telemetry; one spike, one dropout, one malformed message."""
    rng = np.random.default_rng(11)
    lines, labels = [], []
    n = 360
    for d in range(6):
        dev = f"ev-air-{d:05d}"
        topic = contract.telemetry_topic("kc", "depok", "air", dev)
        for i in range(n):
            ts = T0 + i * 60_000
            if d == 2 and 100 <= i < 130:
                continue  # dropout
            fields = {f.name: f.quantise(f.typical * (1 + 0.03 * rng.standard_normal())) for f in CAT["air"].fields}
            if d == 1 and i == 200:
                fields["pm25"] = 480.0
            lines.append({"t": ts + 5, "topic": topic, "payload": contract.encode_telemetry(ts, i, fields).decode()})
    lines.append({"t": T0, "topic": contract.telemetry_topic("kc", "depok", "air", "ev-air-00000"),
                  "payload": '{"v":1,"ts":'})
    labels.append({"device": "ev-air-00001", "kind": "air", "field": "pm25", "start": T0 + 200 * 60_000,
                   "end": T0 + 200 * 60_000, "type": "spike"})
    labels.append({"device": "ev-air-00002", "kind": "air", "field": None, "start": T0 + 100 * 60_000,
                   "end": T0 + 129 * 60_000, "type": "dropout"})
    labels.append({"device": "ev-air-00000", "kind": "air", "field": None, "start": T0, "end": T0,
                   "type": "malformed"})
    data = tmp_path / "dry.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lab = tmp_path / "labels.jsonl"
    lab.write_text("".join(json.dumps(x) + "\n" for x in labels))
    return data, lab


def test_scores_spike_and_dropout(tmp_path):
    data, lab = make_dry_run(tmp_path)
    with open(data) as fh:
        parsed, bad = ev.read_dry_run(fh)
    assert bad == 1 and len(parsed) == 6
    rows = {r.type: r for r in ev.evaluate_files(str(data), str(lab))}
    assert rows["spike"].events == 1 and rows["spike"].detected == 1 and rows["spike"].delays_s == [0.0]
    assert rows["spike"].precision > 0.5
    assert rows["dropout"].events == 1 and rows["dropout"].detected == 1
    assert 29 * 60 < rows["dropout"].delays_s[0] <= 30 * 60  # first reading after the silence (grid-bin start)
    assert rows["malformed"].note  # the gateway's job
    table = ev.render(list(rows.values()))
    assert "spike" in table and "100%" in table


def test_a_label_without_trace_is_counted_not_scored(tmp_path):
    # the simulator says an offset changed no reading (trace false): it is neither a miss nor a window
    # that excuses a flag; the row counts it apart
    data, lab = make_dry_run(tmp_path)
    quiet = {"device": "ev-air-00003", "kind": "air", "field": "pm25", "start": T0 + 50 * 60_000,
             "end": T0 + 80 * 60_000, "type": "offset"}
    with open(lab, "a") as fh:
        fh.write(json.dumps({**quiet, "trace": False}) + "\n")
    rows = {r.type: r for r in ev.evaluate_files(str(data), str(lab))}
    assert rows["offset"].events == 0 and rows["offset"].untraced == 1
    assert "1 without trace, not scored" in ev.render(list(rows.values()))
    with open(lab, "a") as fh:  # the same label as an older simulator wrote it (no key): scored, a miss
        fh.write(json.dumps(quiet) + "\n")
    rows = {r.type: r for r in ev.evaluate_files(str(data), str(lab))}
    assert rows["offset"].events == 1 and rows["offset"].detected == 0 and rows["offset"].untraced == 1


@pytest.mark.io
def test_cli_evaluate_prints_table(tmp_path):
    data, lab = make_dry_run(tmp_path)
    r = subprocess.run([sys.executable, "-m", "kotacerdas", "analytics", "evaluate", "--data", str(data),
                        "--labels", str(lab)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fault type" in r.stdout and "precision" in r.stdout and "dropout" in r.stdout
