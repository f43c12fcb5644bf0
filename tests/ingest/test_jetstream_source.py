"""The standard ingest service (batcher, durable writer, spool) fed by the backbone's ingest group
(ingest/jetstream_source.py): a real 3-node NATS cluster, its stream leader killed mid-stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from devtools import backbone as localnats
from kotacerdas import contract
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import Settings

from ingest.jetstream_source import JetStreamSource
from ingest.service import IngestService
from tests.backbone import Publisher, consumer_state, running_cluster, stream_leader
from tests.ingest.test_jetstream import reading, stored


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[localnats.NatsCluster]:
    with running_cluster(tmp_path) as c:
        yield c


@pytest.mark.long
def test_service_on_backbone_leader_killed_all_stored(cluster, settings: Settings, influx: InfluxClient) -> None:
    s = settings.model_copy(deep=True)
    s.backbone.servers = cluster.urls
    s.backbone.ack_wait_s = 3
    s.backbone.fetch_batch = 500
    root = s.mqtt.topic_root
    pub = Publisher(cluster.nodes[0].mqtt_port, f"dev-{root}")  # makes the server create its MQTT streams
    svc = IngestService(s, source=JetStreamSource(s)).start()
    try:
        deadline = time.monotonic() + 30
        while not svc.source.ready():
            assert time.monotonic() < deadline, "ingest group not bound"
            time.sleep(0.2)
        victim = next(n for n in cluster.nodes if n.server_name == stream_leader(cluster))
        if victim is cluster.nodes[0]:
            pub.close()
            pub = Publisher(cluster.nodes[1].mqtt_port, f"dev2-{root}")
        t0 = int(time.time() * 1000) - 3_600_000
        n = 3000
        for j in range(n):
            topic, payload = reading(root, j, t0)
            pub.c.publish(topic, payload, qos=1)
            if j == 600:
                victim.kill()
            if j == 1800:
                victim.start()
            if j % 100 == 0:
                time.sleep(0.05)
        bad_topic = contract.normalized_topic(root, "depok", "air", "air-x")
        for j in range(3):
            pub.c.publish(bad_topic, b"{broken %d" % j, qos=1)
        pub.c.publish(contract.alert_topic(root, "environment", "warning"), b'{"not": "ingest\'s"}', qos=1)
        deadline = time.monotonic() + 60
        while pub.acked < n + 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pub.acked == n + 4
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (stored(influx) < n or not influx.scalar(
                'SELECT count("count") FROM "deadletter"') == 3):
            time.sleep(0.5)
        # nothing pending or unacked in the group: ingest acks after its write, so no redelivery can
        # add a point from here on and the counts below are final (no fixed wait past ack_wait)
        deadline = time.monotonic() + 20
        while consumer_state(cluster.urls[1]) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert consumer_state(cluster.urls[1]) == (0, 0)
        assert stored(influx) == n
        dead = influx.series('SELECT count("count") FROM "deadletter" GROUP BY "stage", "reason"')
        assert [(x.tags["stage"], x.tags["reason"], x.values[0][1]) for x in dead] == [("ingest", "malformed_json", 3)]
    finally:
        pub.close()
        svc.stop()
