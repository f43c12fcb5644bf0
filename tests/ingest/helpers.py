"""Helpers for the ingest tests: build gateway-style normalised messages and count stored points."""

from __future__ import annotations

import time
from typing import Callable

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings

CAT = load_catalogue()


def normalized_messages(root: str, n: int, *, devices: int = 50, t0_ms: int | None = None,
                        city: str = "depok") -> list[tuple[str, bytes]]:
    """n messages spread over `devices` devices of every kind; each (device, ts) is unique."""
    t0 = t0_ms if t0_ms is not None else int(time.time() * 1000) - 3_600_000
    kinds = list(CAT)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        dev = f"{kind.name.replace('_', '')}-{(i // len(kinds)) % devices}"
        seq = i // (len(kinds) * devices)
        ts = t0 + seq * 1000 + (i % 7)
        r = contract.NormalizedReading(
            city=city, kind=kind.name, device=dev, ts_ms=ts, seq=seq,
            fields={f.name: f.quantise(f.typical) for f in kind.fields}, battery=3.9, fw="1.2.0", rssi=-61,
            district="beji", department=kind.department, rx_ms=ts + 40,
        )
        out.append((contract.normalized_topic(root, city, kind.name, dev), contract.encode_normalized(r)))
    return out


def publish(mqtt: MqttSettings, msgs: list[tuple[str, bytes]], qos: int = 1) -> None:
    c = make_client(mqtt)
    connect(c, mqtt)
    try:
        infos = [c.publish(t, p, qos=qos) for t, p in msgs]
        wait_published(infos, timeout_s=60)
    finally:
        c.disconnect()
        c.loop_stop()


def telemetry_count(influx: InfluxClient) -> int:
    total = 0
    for k in CAT:
        try:
            total += int(influx.scalar(f'SELECT count("seq") FROM "{k.measurement}"') or 0)
        except Exception:  # noqa: BLE001 - database briefly unavailable during fault tests
            return -1
    return total


def wait_for(pred: Callable[[], bool], timeout_s: float = 30.0, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()
