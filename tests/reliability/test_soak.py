"""Soak: 10,000 simulated devices for 10 minutes at their catalogue reporting intervals.

Not in the default run (marker ``soak``): ``kotacerdas reliability --soak``.
Private broker and database so the team's stack is not loaded. Measured:
- nothing lost or duplicated, per (device, seq), from the simulator's recorded fleet;
- peak RSS of every service (gateway, ingest, Mosquitto, InfluxDB, the simulator),
  sampled every 2 s with psutil, and that memory stays bounded (no steady growth);
- end-to-end latency from device timestamp to the point being queryable, from probe
  devices publishing "now"-stamped readings once a second alongside the fleet (p50/p99).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.mqtt import connect, make_client
from tests.conftest import mqtt_for
from tests.reliability.harness import (
    make_fleet, replay, require, start_pipeline, wait_all_stored,
)
from devtools.reliability_results import FaultRow

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

DEVICES = 10_000
DURATION_S = 600
PROBES = 5


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, callable]):
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: dict[str, list[int]] = {k: [] for k in pids}
        self.stop_evt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop_evt.wait(2.0):
            for name, pid_fn in self.pids.items():
                try:
                    pid = pid_fn()
                    if pid:
                        p = psutil.Process(pid)
                        self.samples[name].append(p.memory_info().rss + sum(
                            c.memory_info().rss for c in p.children(recursive=True)))
                except psutil.Error:
                    pass


class Probes(threading.Thread):
    """Probe devices publish a now-stamped reading every second; latency = first time queryable - device ts."""

    def __init__(self, mqtt, influx, root: str):  # noqa: ANN001
        super().__init__(daemon=True)
        self.mqtt, self.influx, self.root = mqtt, influx, root
        self.sent: dict[tuple[str, int], int] = {}
        self.latency_ms: dict[tuple[str, int], int] = {}
        self.stop_evt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        c = make_client(self.mqtt, f"probes-{self.root}")
        connect(c, self.mqtt)
        poller = threading.Thread(target=self._poll, daemon=True)
        poller.start()
        seq = 0
        while not self.stop_evt.wait(1.0):
            seq += 1
            for i in range(PROBES):
                dev = f"probe-{i}"
                ts = int(time.time() * 1000)
                c.publish(contract.telemetry_topic(self.root, "depok", "air", dev),
                          contract.encode_telemetry(ts, seq, {"pm25": 10.0}), qos=1)
                with self.lock:
                    self.sent[(dev, seq)] = ts
        c.loop_stop()
        c.disconnect()
        poller.join(60)

    def _poll(self) -> None:
        with InfluxClient(self.influx) as ic:
            deadline = None
            while True:
                with self.lock:
                    pending = {k: v for k, v in self.sent.items() if k not in self.latency_ms}
                if self.stop_evt.is_set():
                    deadline = deadline or time.monotonic() + 60
                    if not pending or time.monotonic() > deadline:
                        return
                if pending:
                    oldest = min(pending.values())
                    try:
                        ss = ic.series(f'SELECT "seq", "device" FROM "air" WHERE "device" =~ /^probe-/ '
                                       f"AND time >= {oldest}ms")
                    except Exception:  # noqa: BLE001 - the database may be busy; try again
                        ss = []
                    seen = int(time.time() * 1000)
                    for s in ss:
                        for _, q, d in s.values:
                            k = (d, int(q))
                            if k in pending:
                                self.latency_ms[k] = seen - pending[k]
                time.sleep(0.25)


def _pct(xs: list[int], q: float) -> float:
    xs = sorted(xs)
    return float(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]) if xs else float("nan")


def test_soak_10k_devices_10_minutes(private_broker, private_influx, tmp_path, fault_log, request):
    require("gateway", "ingest", "simulate")
    # `kotacerdas reliability --soak --soak-devices N --soak-duration S` scales it (a smoke run of the soak itself)
    n_devices = int(getattr(request.config, "kc_soak_devices", DEVICES))
    duration_s = int(getattr(request.config, "kc_soak_duration_s", DURATION_S))
    cat = load_catalogue()
    kinds = [k.name for k in cat]
    counts = {k: n_devices // len(kinds) + (1 if i < n_devices % len(kinds) else 0) for i, k in enumerate(kinds)}
    fleet = make_fleet(tmp_path, counts=counts, interval_s=None, span_s=duration_s, prefix="soak", seed=5)
    devices = json.loads(fleet.devices_json.read_text())
    devices += [{"device": f"probe-{i}", "kind": "air", "city": "depok", "district": "beji"} for i in range(PROBES)]
    fleet.devices_json.write_text(json.dumps(devices))
    broker, ix = private_broker(), private_influx()
    root = "soak"
    p = start_pipeline(tmp_path, fleet, mqtt_port=broker.port, influx_url=ix.url, database="kotacerdas", root=root)
    t0 = time.monotonic()
    pub = None
    sampler = RssSampler({
        "gateway": lambda: p.gateway.proc.pid, "ingest": lambda: p.ingest.proc.pid,
        "mosquitto": broker.pid, "influxd": ix.pid, "simulator": lambda: pub.proc.pid if pub else None,
    })
    probes = Probes(mqtt_for(broker, root), p.influx, root)
    try:
        sampler.start()
        probes.start()
        pub = replay(fleet, p.env, tmp_path, rate=fleet.total / duration_s, name="soak-publisher")
        pub.proc.wait(duration_s * 2 + 60)
        assert pub.proc.returncode == 0, pub.log()[-2000:]
        probes.stop_evt.set()
        t = wait_all_stored(p.influx, fleet, timeout_s=300)
        probes.join(90)
    finally:
        sampler.stop_evt.set()
        p.stop()
    lat = list(probes.latency_ms.values())
    peak = {k: max(v) // 2**20 for k, v in sampler.samples.items() if v}
    # bounded: the last third's peak is not far above the middle third's (no steady growth)
    growth = {}
    for k, v in sampler.samples.items():
        if len(v) >= 9:
            third = len(v) // 3
            growth[k] = round(max(v[2 * third:]) / max(1, max(v[third:2 * third])), 2)
    extra = {
        "devices": n_devices, "duration_s": duration_s, "messages/s": round(fleet.total / duration_s, 1),
        "peak RSS MiB": peak, "RSS growth last/middle third": growth,
        "probe readings": f"{len(lat)} of {len(probes.sent)} queryable",
        "latency device ts -> queryable p50 ms": _pct(lat, 0.5), "p99 ms": _pct(lat, 0.99), "max ms": max(lat or [0]),
    }
    fault_log(FaultRow("soak", f"{n_devices} devices for {duration_s} s at catalogue intervals", t.sent, t.stored,
                       t.lost, t.duplicated, round(time.monotonic() - t0, 1), "", extra=extra))
    assert t.perfect, t
    assert len(lat) == len(probes.sent), "probe readings lost"
    assert all(g < 1.5 for g in growth.values()), growth
