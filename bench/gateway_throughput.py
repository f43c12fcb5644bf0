"""Gateway throughput vs. the bare broker, on a private loopback Mosquitto.

Baseline: N telemetry messages (QoS 1) published and received by a plain subscriber
(one broker hop, no processing). Gateway: the same N messages through the gateway
(validation, registry, durable dedup + outbox in SQLite, second broker hop) until N
normalised messages arrive. Also with ``durable_fsync`` (SQLite synchronous=FULL).

    .venv/bin/python bench/gateway_throughput.py --n 20000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings, load_settings
from kotacerdas.stack import MosquittoProcess, free_port

from gateway.registry import Registry
from gateway.service import Gateway


def messages(root: str, n: int, n_devices: int = 30) -> list[tuple[str, bytes]]:
    cat = load_catalogue()
    kinds = list(cat)
    now = int(time.time() * 1000) - n * 10
    out = []
    for i in range(n):
        k = kinds[i % len(kinds)]
        dev = f"{k.name.replace('_', '')}-{(i // len(kinds)) % (n_devices // len(kinds))}"
        fields = {f.name: f.quantise(f.typical) for f in k.fields}
        out.append((contract.telemetry_topic(root, "depok", k.name, dev),
                    contract.encode_telemetry(now + i * 10, i, fields, battery=3.9, fw="1.0.0")))
    return out


class Counter:
    def __init__(self, mqtt: MqttSettings, topic: str, n: int):
        self.n, self.got, self.done = n, 0, threading.Event()
        self.c = make_client(mqtt)
        self.c.on_message = self._on
        connect(self.c, mqtt)
        sub = threading.Event()
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.subscribe(topic, qos=1)
        sub.wait(10)

    def _on(self, c, u, m) -> None:  # noqa: ANN001
        self.got += 1
        if self.got >= self.n:
            self.done.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def publish_all(mqtt: MqttSettings, msgs: list[tuple[str, bytes]]) -> None:
    c = make_client(mqtt)
    connect(c, mqtt)
    infos = []
    for i, (t, p) in enumerate(msgs):
        infos.append(c.publish(t, p, qos=1))
        if i % 1000 == 999:  # keep the client's in-flight window bounded
            wait_published(infos[-1000:], 60)
    wait_published(infos, 120)
    c.disconnect()
    c.loop_stop()


def run(mqtt: MqttSettings, root: str, n: int, sub_topic: str, gateway: Gateway | None) -> float:
    msgs = messages(root, n)
    cnt = Counter(mqtt, sub_topic, n)
    t0 = time.perf_counter()
    publish_all(mqtt, msgs)
    ok = cnt.done.wait(300)
    dt = time.perf_counter() - t0
    cnt.close()
    if not ok:
        raise SystemExit(f"only {cnt.got}/{n} messages arrived")
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        broker = MosquittoProcess(tmpd / "mosq", free_port(), persistence=False)
        broker.start()
        try:
            results = {}
            mqtt = MqttSettings(host=broker.host, port=broker.port, topic_root="bench0")
            results["broker only"] = run(mqtt, "bench0", args.n, contract.device_subscription("bench0", "telemetry"), None)
            for label, fsync in (("gateway", False), ("gateway durable_fsync", True)):
                root = f"bench{int(fsync) + 1}"
                s = load_settings()
                s.mqtt = MqttSettings(host=broker.host, port=broker.port, topic_root=root)
                s.gateway.registry_path = tmpd / root / "registry.sqlite"
                s.gateway.queue_path = tmpd / root / "queue.sqlite"
                s.gateway.durable_fsync = fsync
                s.gateway.http_port = 0
                with Registry(s.gateway.registry_path) as reg:
                    devs = {(t.split("/")[3], t.split("/")[4]) for t, _ in messages(root, 300)}
                    for kind, dev in devs:
                        reg.register(dev, kind, "depok", with_credentials=False)
                gw = Gateway(s).start()
                try:
                    results[label] = run(s.mqtt, root, args.n, f"{root}/v1/_platform/norm/#", gw)
                    rejected = sum(v for (name, labels), v in (
                        ((m.name, tuple(sorted(smp.labels.items()))), smp.value)
                        for m in gw.metrics.registry.collect() for smp in m.samples
                        if smp.name == "kc_gateway_rejected_total"))
                    assert rejected == 0, f"{rejected} rejected"
                finally:
                    gw.stop()
        finally:
            broker.stop()
    base = results["broker only"]
    print(f"{'path':<24} {'msg/s':>10} {'vs broker':>10}")
    for label, rate in results.items():
        print(f"{label:<24} {rate:>10.0f} {rate / base:>10.2f}")


if __name__ == "__main__":
    main()
