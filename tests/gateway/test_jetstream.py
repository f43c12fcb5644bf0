"""The whole clustered pipeline: a real 3-node NATS cluster, 2 gateway processes and 3 ingest
processes as consumer groups, devices publishing raw MQTT telemetry, the real InfluxDB. A broker
node, a gateway and an ingest worker are killed mid-stream and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from devtools import backbone as localnats
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import Settings

from gateway.jetstream import GATEWAY_CONSUMER
from gateway.registry import Registry
from tests.backbone import Publisher, consumer_state, running_cluster, start_worker, stream_leader, worker_env


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[localnats.NatsCluster]:
    with running_cluster(tmp_path) as c:
        yield c

KINDS = list(load_catalogue())
GATEWAY = ("kotacerdas", "gateway", "jetstream")


def _stored(influx: InfluxClient) -> int:
    return sum(int(s.values[0][1]) for s in influx.series('SELECT count("seq") FROM /.*/') if s.values)


@pytest.mark.long
def test_node_gateway_and_worker_killed_nothing_lost_nothing_doubled(cluster, settings: Settings, influx: InfluxClient,
                                                                   tmp_path: Path) -> None:
    root = settings.mqtt.topic_root
    reg_path = tmp_path / "registry.sqlite"
    devices = [(f"{k.name[:3]}-{i:03d}", k) for k in KINDS for i in range(10)]
    with Registry(reg_path) as reg:
        for d, k in devices:
            reg.register(d, k.name, "depok", district="beji", with_credentials=False)
    env = worker_env(settings, cluster, KC_GATEWAY__REGISTRY_PATH=str(reg_path), KC_GATEWAY__HTTP_PORT="0")
    procs = [start_worker(env, tmp_path / f"ingest{i}.log") for i in range(3)]
    gws = [start_worker(env, tmp_path / f"gw{i}.log", GATEWAY) for i in range(2)]
    pub = None
    try:
        deadline = time.monotonic() + 40
        while True:  # the first MQTT client makes the server's streams; the workers then create both groups
            try:
                if pub is None:
                    pub = Publisher(cluster.nodes[0].mqtt_port, f"devs-{root}")
                consumer_state(cluster.urls[0])
                consumer_state(cluster.urls[0], GATEWAY_CONSUMER)
                leader = stream_leader(cluster)
                break
            except Exception:  # noqa: BLE001
                assert time.monotonic() < deadline, (tmp_path / "gw0.log").read_text()[-2000:]
                time.sleep(0.3)
        # the stream's leader goes down; devices publish through a node that stays up
        victim = next(n for n in cluster.nodes if n.server_name == leader)
        if victim is cluster.nodes[0]:
            pub.close()
            pub = Publisher(cluster.nodes[1].mqtt_port, f"devs2-{root}")
        n_rounds = 40
        now = int(time.time() * 1000)
        sent = 0
        for rnd in range(n_rounds):
            for d, k in devices:
                payload = contract.encode_telemetry(now - 3_600_000 + rnd * 1000, rnd,
                                                    {f.name: f.quantise(f.typical) for f in k.fields})
                pub.c.publish(contract.telemetry_topic(root, "depok", k.name, d), payload, qos=1)
                sent += 1
            if rnd == 5:  # garbage from a device: dead-lettered, counted, not lost
                for j in range(5):
                    pub.c.publish(contract.telemetry_topic(root, "depok", KINDS[0].name, devices[0][0]),
                                  b"{not json %d" % j, qos=1)
            if rnd == 10:
                victim.kill()
            if rnd == 12:
                os.kill(gws[0].pid, signal.SIGKILL)
                gws[0].wait(10)
            if rnd == 14:
                os.kill(procs[0].pid, signal.SIGKILL)
                procs[0].wait(10)
            if rnd == 20:
                victim.start()
            if rnd == 25:
                gws[0] = start_worker(env, tmp_path / "gw0-restarted.log", GATEWAY)
                procs[0] = start_worker(env, tmp_path / "ingest0-restarted.log")
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while pub.acked < sent + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pub.acked == sent + 5
        deadline = time.monotonic() + 60
        while _stored(influx) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        # both groups acked everything (gateways after the stream stored their output, ingest after
        # its write): no redelivery can add a point any more, so the counts below are final (no fixed
        # wait past ack_wait needed)
        for durable in (GATEWAY_CONSUMER, "kc-ingest"):
            deadline = time.monotonic() + 20
            while consumer_state(cluster.urls[1], durable) != (0, 0) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert consumer_state(cluster.urls[1], durable) == (0, 0), durable
        logs = "\n".join(p.read_text(errors="replace")[-1200:] for p in tmp_path.glob("*.log"))
        assert _stored(influx) == sent, logs
        dead = influx.series('SELECT count("count") FROM "deadletter" GROUP BY "stage", "reason"')
        assert [(s.tags["stage"], s.tags["reason"], s.values[0][1]) for s in dead] == [
            ("gateway", "malformed_json", 5)], logs
        # SIGTERM stops every group member promptly (its drain once sat out a 30 s timeout): wait()
        # raises TimeoutExpired otherwise. Exit codes are not checked: a member restarted moments ago
        # may still be starting up when the signal comes.
        for p in procs + gws:
            p.send_signal(signal.SIGTERM)
        for p in procs + gws:
            p.wait(10)
    finally:
        if pub is not None:
            pub.close()
        for p in procs + gws:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs + gws:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
