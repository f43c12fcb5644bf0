"""Shared helpers for the simulator tests (no fixtures of the broker here: those are in tests/conftest.py)."""

from __future__ import annotations

import json

from kotacerdas import contract

from simulators.engine import Run
from simulators.scenario import Scenario, parse_scenario

NOW_MS = 1_795_000_000_000  # a fixed "now" makes runs comparable


def small_scenario(**over) -> Scenario:
    doc = {
        "name": "t", "city": "depok", "seed": 7, "span_s": 7200, "duration_s": 4, "device_prefix": "t",
        "kinds": {"air": {"count": 6}, "water": {"count": 4}, "waste_bin": {"count": 5, "interval_s": 300}},
        "faults": {"spike": 3, "flatline": 2, "drift": 2, "offset": 2, "dropout": 1, "clock_skew": 1,
                   "out_of_order": 2, "duplicate": 2, "malformed": 8, "out_of_range": 3, "unknown_device": 2,
                   "offline": 1, "pollution_episode": 1, "contamination": 1},
    }
    doc.update(over)
    return parse_scenario(doc)


def device_of(topic: str) -> str:
    return topic.split("/")[4]


def decoded(m) -> dict:
    return json.loads(m.payload)


def messages(sc: Scenario, root: str = "kc", now_ms: int = NOW_MS, births: bool = False):
    run = Run(sc, root, now_ms)
    return run, list(run.messages(births=births))


def validate(m, now_ms: int = NOW_MS, root: str = "kc"):
    return contract.validate_telemetry(m.topic, m.payload, now_ms, root=root)
