"""The `ingest jetstream` worker takes the gateway's batch form (`.../norm/{city}/{kind}/_batch`,
contract ``encode_normalized_batch``) as `ingest run` does: one decode per message, each reading
stored or dead-lettered alone. A real NATS server (one node: the decoding, not the cluster, is
under test here; tests/ingest/test_jetstream.py kills nodes), a hand-made MQTT publisher sending
batches and single readings, a real worker process and the real InfluxDB."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson

from devtools import backbone as localnats
from kotacerdas import backbone, contract
from kotacerdas.influx import InfluxClient
from kotacerdas.routing import CityRouter
from kotacerdas.settings import Settings

from ingest.jetstream import BatchWriter
from tests.backbone import Publisher, consumer_state, start_worker, wait_jetstream, worker_env
from tests.ingest.test_jetstream import CAT, KINDS, reading, stored
from tests.waiting import until

PER_BATCH = 40


def _batch(root: str, k: int, t0: int, city: str = "depok") -> tuple[str, list[dict]]:
    """Readings of kind KINDS[k % kinds] from PER_BATCH devices at ``t0``, as the gateway groups
    them (one city and kind)."""
    k %= len(KINDS)
    docs = [orjson.loads(reading(root, k + j * len(KINDS), t0, city=city, devices=PER_BATCH)[1])
            for j in range(PER_BATCH)]
    return contract.normalized_batch_topic(root, city, KINDS[k].name), docs


def _subject(topic: str) -> str:
    return backbone.subject_for_topic(topic)


def test_batch_writer_one_bad_reading_deadlettered_alone(settings: Settings, influx: InfluxClient) -> None:
    root = settings.mqtt.topic_root
    t0 = int(time.time() * 1000) - 600_000
    topic, docs = _batch(root, 0, t0)
    docs[7]["fields"] = {}
    one = [reading(root, j, t0 + 500_000) for j in range(3)]
    msgs = [(_subject(topic), contract.encode_normalized_batch(docs))] + [(_subject(t), p) for t, p in one]
    router = CityRouter(settings)
    try:
        out = BatchWriter(settings, router, CAT).process(msgs, int(time.time() * 1000))
    finally:
        router.close()
    assert out.ack == [0, 1, 2, 3] and not out.nak
    assert [(i, j, r.reason) for i, j, r in out.dead] == [(0, 7, contract.Reason.EMPTY_FIELDS)]
    assert sum(out.written.values()) == PER_BATCH - 1 + 3
    assert stored(influx) == PER_BATCH - 1 + 3
    # the dead letter carries that one reading (not the whole batch) and the batch's topic
    size, dl_topic = influx.series('SELECT "size", "topic" FROM "deadletter"')[0].values[0][1:]
    assert size == len(orjson.dumps(docs[7])) and dl_topic == topic


def test_worker_stores_batches_from_the_backbone(settings: Settings, influx: InfluxClient, tmp_path: Path) -> None:
    root = settings.mqtt.topic_root
    cluster = localnats.NatsCluster(tmp_path / "nats", n=1).start()
    worker = None
    pub = None
    try:
        wait_jetstream(cluster)
        worker = start_worker(worker_env(settings, cluster), tmp_path / "worker.log")
        deadline = time.monotonic() + 40
        while True:  # the first MQTT client makes the server's stream; the worker then makes the group
            try:
                if pub is None:
                    pub = Publisher(cluster.nodes[0].mqtt_port, f"gw-{root}")
                consumer_state(cluster.urls[0])
                break
            except Exception:  # noqa: BLE001
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
                time.sleep(0.3)
        t0 = int(time.time() * 1000) - 3_600_000
        sent = 0
        expect_stored = 0
        for k in range(6):
            topic, docs = _batch(root, k, t0 + k * 100_000)
            if k == 2:
                docs[7]["fields"] = {}  # empty_fields: this reading alone is refused
            if k == 4:
                docs[3]["city"] = "bogor"  # not the topic's city: bad_topic, alone
            pub.c.publish(topic, contract.encode_normalized_batch(docs), qos=1)
            sent += 1
            expect_stored += PER_BATCH - (k in (2, 4))
        # a batch whose head does not match its readings: the whole message is refused
        topic, docs = _batch(root, 0, t0 + 1_000_000)
        bad = orjson.loads(contract.encode_normalized_batch(docs[:4]))
        bad["n"] = 5
        pub.c.publish(topic, orjson.dumps(bad), qos=1)
        sent += 1
        for j in range(10):  # the per-reading form still works beside it
            t, p = reading(root, j, t0 + 2_000_000)
            pub.c.publish(t, p, qos=1)
            sent += 1
            expect_stored += 1
        until(lambda: pub.acked == sent, 30, "PUBACKs", every_s=0.1)
        logs = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-2000:]  # noqa: E731
        until(lambda: stored(influx) >= expect_stored, 60, "the readings stored", every_s=0.3)
        until(lambda: consumer_state(cluster.urls[0]) == (0, 0), 30, "every message acked", every_s=0.3)
        assert stored(influx) == expect_stored, logs()
        dead = influx.series('SELECT count("count") FROM "deadletter" GROUP BY "stage", "reason"')
        assert sorted((s.tags["stage"], s.tags["reason"], s.values[0][1]) for s in dead) == [
            ("ingest", "bad_topic", 1), ("ingest", "empty_fields", 1), ("ingest", "wrong_type", 1)], logs()
    finally:
        if pub is not None:
            pub.close()
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        cluster.stop()
