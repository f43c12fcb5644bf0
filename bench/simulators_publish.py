"""Benchmark: messages/s one simulator process sustains against the local broker, QoS 0 and 1.

Target: 10,000 devices reporting every 10 s = 1,000 msg/s from one process, with headroom.

Compared in the same run against a naive baseline: per-device Python signal
generation (scalar math per reading, catalogue quantise per field) and one
synchronous publish per message (QoS 1 waits for each PUBACK).

    .venv/bin/python bench/simulators_publish.py [--devices 10000] [--span 30] [--baseline 3000]

Needs the local stack (`kotacerdas stack up`); publishes under a throw-away topic root.
"""

from __future__ import annotations

import argparse
import math
import random
import time
import uuid

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import load_settings

from simulators.engine import GOOD, BAD, Run
from simulators.publisher import MqttSink, publish_stream
from simulators.scenario import parse_scenario


def fleet_scenario(devices: int, span_s: int, qos: int):
    n_air, n_water = devices * 3 // 10, devices * 2 // 10
    return parse_scenario({
        "name": "bench", "seed": 1, "span_s": span_s, "duration_s": span_s, "qos": qos, "device_prefix": "b",
        "kinds": {"air": {"count": n_air, "interval_s": 10}, "water": {"count": n_water, "interval_s": 10},
                  "waste_bin": {"count": devices - n_air - n_water, "interval_s": 10}},
        "faults": {},
    })


def generation_rate(devices: int, span_s: int) -> tuple[int, float]:
    run = Run(fleet_scenario(devices, span_s, 1), "bench", int(time.time() * 1000))
    t0 = time.perf_counter()
    n = sum(1 for m in run.messages(births=False) if m.cls in (GOOD, BAD))
    return n, n / (time.perf_counter() - t0)


def naive_messages(n: int, root: str):
    """Per-device Python: one reading at a time, scalar maths, catalogue quantise per field."""
    cat = load_catalogue()
    kinds = list(cat)
    rnd = random.Random(1)
    now = int(time.time() * 1000)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        dev = f"naive-{kind.name}-{i % 1000:05d}"
        hour = ((now / 3.6e6) + 7) % 24
        fields = {}
        for f in kind.fields:
            v = f.typical * (1 + 0.3 * math.sin(2 * math.pi * hour / 24)) + rnd.gauss(0, 0.02 * (f.expected_hi - f.expected_lo))
            fields[f.name] = f.quantise(min(max(v, f.lo), f.hi))
        yield contract.telemetry_topic(root, "depok", kind.name, dev), contract.encode_telemetry(now - 1000, i, fields)


def naive_publish_rate(settings, n: int, qos: int) -> float:
    root = f"bench{uuid.uuid4().hex[:6]}"
    c = make_client(settings.mqtt, f"bench-naive-{root}")
    connect(c, settings.mqtt)
    t0 = time.perf_counter()
    for topic, payload in naive_messages(n, root):
        info = c.publish(topic, payload, qos=qos)
        if qos:
            info.wait_for_publish(10)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / dt


def simulator_publish_rate(settings, devices: int, span_s: int, qos: int, threaded: bool = False) -> tuple[int, float, int]:
    s = settings.model_copy(deep=True)
    s.mqtt.topic_root = f"bench{uuid.uuid4().hex[:6]}"
    run = Run(fleet_scenario(devices, span_s, qos), s.mqtt.topic_root, int(time.time() * 1000))
    sink = MqttSink(s.mqtt, qos, threaded=threaded)
    try:
        stats = publish_stream(run.messages(births=False), sink, None, run.estimate_messages(), progress=False)
    finally:
        sink.close()
    return stats.sent, stats.sent / stats.duration_s, stats.errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--span", type=int, default=30, help="simulated seconds (devices report every 10 s)")
    ap.add_argument("--baseline", type=int, default=3000, help="messages for the naive baselines")
    a = ap.parse_args()
    settings = load_settings()
    target = a.devices / 10.0

    n, gen = generation_rate(a.devices, a.span)
    t0 = time.perf_counter()
    nb = sum(1 for _ in naive_messages(a.baseline, "bench"))
    naive_gen = nb / (time.perf_counter() - t0)
    print(f"generate+encode only: vectorised {gen:,.0f} msg/s ({n} msgs) vs per-device Python {naive_gen:,.0f} msg/s"
          f" -> x{gen / naive_gen:.1f}")
    for qos in (0, 1):
        sent, rate, errors = simulator_publish_rate(settings, a.devices, a.span, qos)
        _, rate_thr, _ = simulator_publish_rate(settings, a.devices, a.span, qos, threaded=True)
        base = naive_publish_rate(settings, a.baseline, qos)
        print(f"QoS {qos}: simulator {rate:,.0f} msg/s ({sent} msgs, {errors} errors) vs naive {base:,.0f} msg/s"
              f" -> x{rate / base:.1f}; same with paho's loop thread {rate_thr:,.0f} msg/s -> x{rate / rate_thr:.1f};"
              f" target {target:,.0f} msg/s -> headroom x{rate / target:.1f}")


if __name__ == "__main__":
    main()
