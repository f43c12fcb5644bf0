"""Shared helpers for gateway tests: a collector subscribed on the real broker, polling with a deadline."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Callable

import paho.mqtt.client as paho

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import MqttSettings


class Collector:
    """Subscribes to topics and keeps every message (topic, payload) in arrival order."""

    def __init__(self, mqtt: MqttSettings, *topics: str, client_id: str | None = None):
        """With ``client_id`` the session is persistent: messages wait at the broker while it restarts."""
        self.msgs: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c = make_client(mqtt, client_id, clean=client_id is None)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.on_message = self._on
        connect(self.c, mqtt)
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(t, 1) for t in topics])
        assert done.wait(10), "SUBACK not received"

    def _on(self, c, u, m) -> None:  # noqa: ANN001
        with self.lock:
            item = (m.topic, bytes(m.payload))
            # a broker restart redelivers to this collector's own session (DUP flag): that is the
            # test harness's repeat, not the gateway's, so it is not counted twice
            if m.dup and item in self.msgs:
                return
            self.msgs.append(item)

    def matching(self, pred: Callable[[str], bool]) -> list[tuple[str, bytes]]:
        with self.lock:
            return [x for x in self.msgs if pred(x[0])]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def good_fields(kind: str) -> dict[str, float]:
    k = load_catalogue()[kind]
    return {f.name: f.quantise(f.typical) for f in k.fields}


def devices(city: str = "depok", n: int = 2) -> list[dict]:
    cat = load_catalogue()
    return [
        {"device": f"{k.name.replace('_', '')}-{i}", "kind": k.name, "city": city, "district": "beji",
         "lat": -6.37 + i / 100, "lon": 106.82, "department": k.department}
        for k in cat for i in range(n)
    ]


def reasons(col: Collector, root: str) -> list[str]:
    prefix = contract.deadletter_topic(root, "gateway", "x")[:-1]
    return [t[len(prefix):] for t, _ in col.matching(lambda t: t.startswith(prefix))]


def norm_readings(topic: str, payload: bytes) -> list[dict]:
    """The normalised objects one upstream message carries, in either form (one reading, or a
    batch checked by the contract's reference decoder), so tests hold for any gateway.forward_batch."""
    if not contract.is_normalized_batch_topic(topic):
        assert isinstance(contract.decode_normalized(payload), contract.NormalizedReading), payload[:200]
        return [json.loads(payload)]
    got = contract.decode_normalized_batch(topic, payload)
    assert isinstance(got, list) and all(isinstance(r, contract.NormalizedReading) for r in got), got
    return list(json.loads(payload)["readings"])


def unbatched(msgs: list[tuple[str, bytes]]) -> list[tuple[str, dict]]:
    """(per-reading topic, normalised object) for every reading in these upstream messages, in order."""
    out = []
    for topic, payload in msgs:
        for d in norm_readings(topic, payload):
            root = topic.split("/", 1)[0]
            out.append((contract.normalized_topic(root, d["city"], d["kind"], d["device"]), d))
    return out


def normalized(col: Collector, root: str) -> list[dict]:
    prefix = f"{root}/v1/_platform/norm/"
    return [d for _, d in unbatched(col.matching(lambda t: t.startswith(prefix)))]


SENTINEL_DEVICE = ("air", "air-1")
_sentinel_seq = itertools.count(900_000)


def drained(collector: Collector, publisher: paho.Client | MqttSettings, root: str, timeout: float = 20.0) -> None:
    """Return once the gateway has published everything it will for what was sent before.

    Instead of sleeping "long enough" before asserting that nothing more arrives: a sentinel reading
    of air-1 sent now comes out normalised after all earlier input (one gateway worker, forwarded in
    order, one collector session). The sentinel is then removed from the collector, so the caller's
    lists do not see it; the gateway's own counters do (one more accepted reading). ``publisher`` is a
    connected client on the devices' broker, or its settings (a client is made for the sentinel).
    """
    if isinstance(publisher, MqttSettings):
        c = make_client(publisher)
        connect(c, publisher)
        try:
            return drained(collector, c, root, timeout)
        finally:
            c.disconnect()
            c.loop_stop()
    kind, device = SENTINEL_DEVICE
    seq = next(_sentinel_seq)  # unique per call: never a duplicate of an earlier sentinel
    topic = contract.telemetry_topic(root, "depok", kind, device)
    info = publisher.publish(topic, contract.encode_telemetry(int(time.time() * 1000), seq, good_fields(kind)), qos=1)
    info.wait_for_publish(10)
    out = contract.normalized_topic(root, "depok", kind, device)
    batch = contract.normalized_batch_topic(root, "depok", kind)

    def mine(d: dict) -> bool:
        return d.get("device") == device and d.get("seq") == seq

    assert wait_for(lambda: any(mine(d) for _, d in unbatched(collector.matching(lambda t: t in (out, batch)))),
                    timeout), "the sentinel reading never came out of the gateway"
    with collector.lock:  # drop the sentinel (from its batch, if it came in one)
        kept: list[tuple[str, bytes]] = []
        for tp, p in collector.msgs:
            if tp == out and mine(json.loads(p)):
                continue
            if tp == batch:
                docs = json.loads(p)["readings"]
                rest = [d for d in docs if not mine(d)]
                if not rest:
                    continue
                if len(rest) != len(docs):
                    p = contract.encode_normalized_batch(rest)
            kept.append((tp, p))
        collector.msgs[:] = kept
