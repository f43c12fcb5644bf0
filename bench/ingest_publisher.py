"""Benchmark load generator: publishes the gateway's normalised messages at a fixed rate, QoS 1.

Why not paho or mosquitto_pub: paho's Python publisher tops out at ~5k msg/s QoS 1 on this
machine, and ``mosquitto_pub -l`` silently drops input lines when its in-flight window is
full (measured: 35k of 100k lines sent). This speaks just enough MQTT 3.1.1 over a raw
socket (CONNECT, PUBLISH QoS 1, PUBACK; OASIS MQTT 3.1.1 sections 3.1, 3.3, 3.4) with
pre-encoded packets and a bounded window of unacknowledged publishes, and counts PUBACKs,
so "sent" means "the broker took responsibility for it".

Protocol with the parent: prints ``ready`` once its messages are built, waits for a line
on stdin, publishes, prints one JSON line ``{"sent","acked","seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from kotacerdas import mqttwire as wire
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue

CAT = load_catalogue()
KINDS = list(CAT)
CITY = "depok"


def message(j: int, devices: int, t0_ms: int, root: str) -> tuple[str, bytes]:
    """Global message number j -> (topic, payload); `devices` devices in all, split evenly over
    the kinds, each device reporting in turn; (device, ts) is unique."""
    kind = KINDS[j % len(KINDS)]
    slot = j // len(KINDS)
    per_kind = max(1, devices // len(KINDS))
    dev, seq = slot % per_kind, slot // per_kind
    ts = t0_ms + seq * 1000 + dev % 997
    device = f"{kind.name[:3]}-{dev:05d}"
    r = contract.NormalizedReading(
        city=CITY, kind=kind.name, device=device, ts_ms=ts, seq=seq,
        fields={f.name: f.quantise(f.typical) for f in kind.fields}, battery=3.9, fw="1.2.0", rssi=-60,
        district="beji", department=kind.department, rx_ms=ts + 35,
    )
    return contract.normalized_topic(root, CITY, kind.name, device), contract.encode_normalized(r)


def run(host: str, port: int, packets: list[bytes], rate: float, window: int) -> dict:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(wire.connect_packet(f"bench-pub-{time.time_ns()}", clean=True, keepalive_s=60))
    ack = s.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"CONNACK refused: {ack!r}")
    acked = 0
    cond = threading.Condition()
    done = threading.Event()

    def reader() -> None:
        nonlocal acked
        buf = b""
        while not done.is_set():
            try:
                data = s.recv(65536)
            except OSError:  # closed by us at the end
                break
            if not data:
                break
            buf += data
            n = 0
            i = 0
            while len(buf) - i >= 4:
                if buf[i] == 0x40:  # PUBACK: 0x40 0x02 mid mid
                    n += 1
                i += 2 + buf[i + 1]
            buf = buf[i:]
            with cond:
                acked += n
                cond.notify_all()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    t0 = time.monotonic()
    c0 = os.times()
    chunk = max(1, min(500, int(rate / 200)))
    sent = 0
    for i in range(0, len(packets), chunk):
        part = packets[i:i + chunk]
        with cond:
            while sent - acked > window:
                cond.wait(1.0)
        s.sendall(b"".join(part))
        sent += len(part)
        ahead = t0 + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    with cond:
        deadline = time.monotonic() + 120
        while acked < sent and time.monotonic() < deadline:
            cond.wait(1.0)
    seconds = time.monotonic() - t0
    c1 = os.times()
    done.set()
    s.sendall(bytes([0xE0, 0]))  # DISCONNECT
    s.close()
    return {"sent": sent, "acked": acked, "seconds": seconds,
            "cpu_s": (c1.user - c0.user) + (c1.system - c0.system)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--count", type=int, required=True, help="messages in total over all publishers")
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--rate", type=float, required=True, help="this publisher's msg/s")
    ap.add_argument("--t0", type=int, required=True)
    ap.add_argument("--window", type=int, default=2000)
    a = ap.parse_args()
    packets = []
    for k, j in enumerate(range(a.start, a.count, a.step)):
        topic, payload = message(j, a.devices, a.t0, a.root)
        packets.append(wire.publish_packet(topic, payload, 1, k % 65535 + 1))
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(run("127.0.0.1", a.port, packets, a.rate, a.window)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
