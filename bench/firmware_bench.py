"""Firmware benchmarks (CPython host; the algorithms are the ones the board runs).

1. MQTT QoS 1 publish throughput of the firmware's own client (in-flight window 16)
   against paho-mqtt (baseline) to the local Mosquitto, same payloads.
2. Flash store-and-forward log (kc_ring: append-only segments, CRC, state file) against a naive JSON-lines
   append file (baseline), push + read + ack per record.
3. .mpy bundle bytes against the source bytes of the same modules (mpy-cross -O1).

Run: .venv/bin/python bench/firmware_bench.py [--n 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from firmware import build
from firmware.virtual import device_path
from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import load_settings

device_path()
import kc_mqtt  # type: ignore[import-not-found]  # noqa: E402
import kc_payload  # type: ignore[import-not-found]  # noqa: E402
from kc_ring import Ring  # type: ignore[import-not-found]  # noqa: E402


def payloads(n: int) -> list[bytes]:
    vals = {"pm25": 35.0, "pm10": 55.0, "co2": 450.0, "no2": 40.0, "o3": 60.0, "co": 1500.0,
            "temperature": 29.0, "humidity": 75.0}
    return [kc_payload.telemetry("air", 1795441731961 + i, i + 1, vals, battery=5.0, fw="1.0.0", rssi=-60)[0]
            for i in range(n)]


def bench_own_client(n: int, topic: str) -> float:
    s = load_settings().mqtt
    c = kc_mqtt.MQTTClient(f"bench-own-{time.time_ns()}", s.host, s.port, keepalive=30, max_inflight=16)
    c.connect(clean_session=True)
    data = payloads(n)
    t0 = time.perf_counter()
    i = 0
    while i < n or c.inflight:
        while i < n and c.can_publish():
            c.publish(topic, data[i], qos=1)
            i += 1
        c.poll(5)
    dt = time.perf_counter() - t0
    c.disconnect()
    return n / dt


def bench_paho(n: int, topic: str) -> float:
    s = load_settings().mqtt
    c = make_client(s, f"bench-paho-{time.time_ns()}", v5=False)
    c.max_inflight_messages_set(16)
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, rc=None, props=None):  # noqa: ANN001
        acked[0] += 1
        if acked[0] >= n:
            done.set()

    c.on_publish = on_publish
    connect(c, s)
    data = payloads(n)
    t0 = time.perf_counter()
    for p in data:
        c.publish(topic, p, qos=1)
    done.wait(120)
    dt = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return n / dt


def bench_ring(n: int) -> tuple[float, float]:
    data = payloads(n)
    with tempfile.TemporaryDirectory() as tmp:
        r = Ring(f"{tmp}/log", capacity=max(256, n), slot_size=512)
        t0 = time.perf_counter()
        for p in data:
            rid = r.push(p)
            assert r.get(rid) == p
            r.ack(rid)
        ring_rate = n / (time.perf_counter() - t0)
        r.close()
        # baseline: append a line, re-read the file's last line, rewrite an "acked" offset file
        log = Path(tmp) / "log.jsonl"
        off = Path(tmp) / "acked"
        t0 = time.perf_counter()
        with open(log, "ab+") as f:
            for p in data:
                f.write(p + b"\n")
                f.flush()
                f.seek(-len(p) - 1, 2)
                assert f.read(len(p)) == p
                off.write_text(str(f.tell()))
        naive_rate = n / (time.perf_counter() - t0)
    return ring_rate, naive_rate


def bench_sizes() -> list[tuple[str, int, int]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        res = build.build(out_root=Path(tmp), write_schema=False)
        for kind, files in res.items():
            mpy = sum(f.size for f in files if f.path.suffix == ".mpy")
            src = 0
            for f in files:
                if f.path.suffix == ".mpy":
                    rel = f.path.relative_to(Path(tmp) / kind).with_suffix(".py")
                    src += (build.DEVICE_DIR / rel).stat().st_size
            out.append((kind, mpy, src))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    topic = contract.telemetry_topic(f"bench{time.time_ns() % 10**8}", "depok", "air", "BENCH")
    own = bench_own_client(a.n, topic)
    paho = bench_paho(a.n, topic)
    print(f"MQTT QoS1 publish, {a.n} msgs: own client {own:,.0f} msg/s, paho {paho:,.0f} msg/s, ratio own/paho {own / paho:.2f}")
    ring, naive = bench_ring(a.n)
    print(f"store-and-forward, {a.n} records: ring {ring:,.0f} rec/s, JSON-lines baseline {naive:,.0f} rec/s, "
          f"ratio {ring / naive:.2f}")
    for kind, mpy, src in bench_sizes():
        print(f"bundle {kind}: {mpy} B .mpy vs {src} B source, ratio {mpy / src:.2f}")


if __name__ == "__main__":
    main()
