"""Helpers for tests on the clustered backbone (a real 3-node NATS JetStream cluster on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as paho

from devtools import backbone as localnats
from kotacerdas import backbone
from kotacerdas.settings import Settings

REPO = Path(__file__).resolve().parents[1]


async def _js(url: str, fn):  # noqa: ANN001
    import nats

    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream(timeout=5))
    finally:
        await nc.close()


def wait_jetstream(cluster: localnats.NatsCluster, timeout_s: float = 30) -> None:
    """Until the JetStream meta group has a leader (account info answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(_js(cluster.urls[0], lambda js: js.account_info()))
            return
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def stream_leader(cluster: localnats.NatsCluster, timeout_s: float = 30) -> str:
    """The server name of the MQTT stream's leader, once one of the cluster's nodes is it (right after
    the stream is created, or while a node rejoins, the stream has no leader and stream_info says None)."""

    async def go(js):  # noqa: ANN001
        return (await js.stream_info(backbone.MQTT_STREAM)).cluster.leader

    names = {n.server_name for n in cluster.nodes}
    deadline = time.monotonic() + timeout_s
    while True:
        leader = asyncio.run(_js(cluster.urls[0], go))
        if leader in names:
            return leader
        assert time.monotonic() < deadline, f"no stream leader among {sorted(names)} (got {leader!r})"
        time.sleep(0.2)


def consumer_state(url: str, durable: str = backbone.INGEST_CONSUMER) -> tuple[int, int]:
    """(messages not yet delivered, delivered and not acked) of a group's consumer; raises if absent."""

    async def go(js):  # noqa: ANN001
        ci = await js.consumer_info(backbone.MQTT_STREAM, durable)
        return ci.num_pending, ci.num_ack_pending

    return asyncio.run(_js(url, go))


def worker_env(settings: Settings, cluster: localnats.NatsCluster, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KC_BACKBONE__SERVERS": json.dumps(cluster.urls),
        "KC_BACKBONE__ACK_WAIT_S": "3",
        "KC_BACKBONE__FETCH_BATCH": "500",
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
        "KC_INFLUX__URL": settings.influx.url,
        "KC_INFLUX__DATABASE": settings.influx.database,
        "KC_INGEST__HTTP_PORT": "0",
        "KC_LOG_LEVEL": "INFO",
    })
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log: Path, module: tuple[str, ...] = ("kotacerdas", "ingest", "jetstream")
                 ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *module], env=env, cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


class Publisher:
    """A device-like MQTT 3.1.1 publisher: QoS 1, persistent session, paho re-sends what was not
    PUBACKed when it reconnects. ``acked`` counts PUBACKs."""

    def __init__(self, port: int, client_id: str):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.max_inflight_messages_set(100)
        self.c.max_queued_messages_set(0)
        self.c.reconnect_delay_set(0.2, 1)
        self.acked = 0
        self._lock = threading.Lock()
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _on_publish(self, *a) -> None:  # noqa: ANN002
        with self._lock:
            self.acked += 1

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@contextlib.contextmanager
def running_cluster(tmp_path: Path) -> Iterator[localnats.NatsCluster]:
    """3 nodes under ``tmp_path``, JetStream ready; stopped on the way out."""
    c = localnats.NatsCluster(tmp_path / "nats", n=3).start()
    try:
        wait_jetstream(c)
        yield c
    finally:
        c.stop()
