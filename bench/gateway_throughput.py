"""Gateway throughput vs. the bare broker, on a private loopback Mosquitto.

Baseline: N telemetry messages (QoS 1) published and received by a plain subscriber
(one broker hop, no processing). Gateway: the same N messages through the gateway process
(validation, registry, durable dedup + outbox in SQLite, second broker hop) until N
normalised messages arrive. Also with ``durable_fsync`` (SQLite synchronous=FULL).

    .venv/bin/python bench/gateway_throughput.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings
from devtools.stack import MosquittoProcess, free_port

from gateway.registry import Registry


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


def run(mqtt: MqttSettings, root: str, n: int, sub_topic: str, gateway: object | None) -> float:
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


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


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
            results["broker only"] = run(mqtt, "bench0", args.n, contract.device_subscription("bench0", contract.CH_TELEMETRY), None)
            for label, fsync in (("gateway", False), ("gateway durable_fsync", True)):
                root = f"bench{int(fsync) + 1}"
                reg_path = tmpd / root / "registry.sqlite"
                with Registry(reg_path) as reg:
                    devs = {(t.split("/")[3], t.split("/")[4]) for t, _ in messages(root, 300)}
                    for kind, dev in devs:
                        reg.register(dev, kind, "depok", with_credentials=False)
                port = free_port()
                env = dict(os.environ, KC_MQTT__HOST=broker.host, KC_MQTT__PORT=str(broker.port),
                           KC_MQTT__TOPIC_ROOT=root, KC_GATEWAY__REGISTRY_PATH=str(reg_path),
                           KC_GATEWAY__QUEUE_PATH=str(tmpd / root / "queue.sqlite"),
                           KC_GATEWAY__DURABLE_FSYNC=str(fsync).lower(), KC_GATEWAY__HTTP_PORT=str(port),
                           KC_LOG_LEVEL="WARNING")
                # its own process, as deployed: the gateway does not share the GIL with the load generator
                gw = subprocess.Popen([sys.executable, "-m", "kotacerdas", "gateway", "run"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    deadline = time.monotonic() + 60
                    while not _healthy(port):
                        if time.monotonic() > deadline or gw.poll() is not None:
                            raise SystemExit("gateway did not start")
                        time.sleep(0.2)
                    mqtt = MqttSettings(host=broker.host, port=broker.port, topic_root=root)
                    results[label] = run(mqtt, root, args.n, contract.platform_filter(root, contract.CH_NORM), None)
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    rejected = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                   if line.startswith("kc_gateway_rejected_total{"))
                    assert rejected == 0, f"{rejected} rejected"
                finally:
                    gw.send_signal(signal.SIGTERM)
                    gw.wait(30)
        finally:
            broker.stop()
    base = results["broker only"]
    print(f"{'path':<24} {'msg/s':>10} {'vs broker':>10}")
    for label, rate in results.items():
        print(f"{label:<24} {rate:>10.0f} {rate / base:>10.2f}")


if __name__ == "__main__":
    main()
