"""Ingest on the clustered backbone: a real 3-node NATS JetStream cluster on loopback, real
MQTT publishes, real ingest worker processes, the real InfluxDB. No mocks.

The fault test kills the stream's leader node and one of three workers while messages flow,
restarts both, and requires every PUBACKed message stored exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from devtools import backbone as localnats
from kotacerdas import backbone, contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import Settings

from ingest.jetstream import BatchWriter, city_of
from kotacerdas.routing import CityRouter
from tests.backbone import Publisher, consumer_state, start_worker, stream_leader, worker_env, running_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[localnats.NatsCluster]:
    with running_cluster(tmp_path) as c:
        yield c

CAT = load_catalogue()
KINDS = list(CAT)


def reading(root: str, j: int, t0_ms: int, city: str = "depok", devices: int = 50) -> tuple[str, bytes]:
    kind = KINDS[j % len(KINDS)]
    dev, seq = (j // len(KINDS)) % devices, (j // len(KINDS)) // devices
    device = f"{kind.name[:3]}-{dev:04d}"
    r = contract.NormalizedReading(
        city=city, kind=kind.name, device=device, ts_ms=t0_ms + seq * 1000 + dev, seq=seq,
        fields={f.name: f.quantise(f.typical) for f in kind.fields}, battery=3.9, fw="1.0.0", rssi=-60,
        district="beji", department=kind.department, rx_ms=t0_ms + seq * 1000 + dev + 30,
    )
    return contract.normalized_topic(root, city, kind.name, device), contract.encode_normalized(r)


def stored(influx: InfluxClient) -> int:
    """Telemetry points in the database (every catalogue measurement carries ``seq``)."""
    total = 0
    for s in influx.series('SELECT count("seq") FROM /.*/'):
        total += int(s.values[0][1]) if s.values else 0
    return total


def test_city_of_subject() -> None:
    topic = contract.normalized_topic("kc", "bogor", "air", "air-0001")
    subj = backbone.MQTT_SUBJECT_PREFIX + backbone.mqtt_topic_to_subject(topic)
    assert city_of(subj) == "bogor"
    assert backbone.subject_to_mqtt_topic(subj) == topic


def test_batch_writer_acks_good_deadletters_bad(settings: Settings, influx: InfluxClient) -> None:
    root = settings.mqtt.topic_root
    t0 = int(time.time() * 1000) - 600_000
    good = [reading(root, j, t0) for j in range(20)]
    batch = [(backbone.MQTT_SUBJECT_PREFIX + backbone.mqtt_topic_to_subject(t), p) for t, p in good]
    bad_topic = backbone.MQTT_SUBJECT_PREFIX + backbone.mqtt_topic_to_subject(
        contract.normalized_topic(root, "depok", "air", "x"))
    batch.insert(5, (bad_topic, b"{not json"))
    w = BatchWriter(settings, CityRouter(settings), CAT)
    out = w.process(batch, int(time.time() * 1000))
    assert sorted(out.ack) == list(range(21)) and not out.nak
    assert [r.reason for _, _, r in out.dead] == [contract.Reason.MALFORMED_JSON]
    assert stored(influx) == 20
    assert influx.scalar('SELECT count("count") FROM "deadletter"') == 1


@pytest.mark.long
def test_node_and_worker_killed_mid_stream_nothing_lost(cluster, settings: Settings, influx: InfluxClient,
                                                        tmp_path: Path) -> None:
    n_msgs, rate = 6000, 1000.0
    env = worker_env(settings, cluster)
    workers = [start_worker(env, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        # a first MQTT client makes the server create its streams; the workers then create the group
        leader = None
        deadline = time.monotonic() + 30
        pub = None
        while time.monotonic() < deadline:
            try:
                if pub is None:
                    pub = Publisher(cluster.nodes[0].mqtt_port, f"dev-{settings.mqtt.topic_root}")
                leader = stream_leader(cluster)
                consumer_state(cluster.urls[0])  # raises until the workers created the consumer
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.3)
        assert leader, "JetStream MQTT stream has no leader"
        victim = next(n for n in cluster.nodes if n.server_name == leader)
        if victim is cluster.nodes[0]:  # publish through a node that stays up: devices of a dead node reconnect elsewhere
            pub.close()
            pub = Publisher(cluster.nodes[1].mqtt_port, f"dev2-{settings.mqtt.topic_root}")
        t0 = int(time.time() * 1000) - 3_600_000
        msgs = [reading(settings.mqtt.topic_root, j, t0) for j in range(n_msgs)]
        start = time.monotonic()
        events = {1.5: "kill node", 2.5: "kill worker", 4.0: "restart node", 5.0: "restart worker"}
        done_events: list[str] = []
        infos = []
        for j, (topic, payload) in enumerate(msgs):
            infos.append(pub.c.publish(topic, payload, qos=1))
            now = time.monotonic() - start
            for at, what in list(events.items()):
                if now >= at:
                    del events[at]
                    done_events.append(what)
                    if what == "kill node":
                        victim.kill()
                    elif what == "kill worker":
                        os.kill(workers[0].pid, signal.SIGKILL)
                        workers[0].wait(10)
                    elif what == "restart node":
                        victim.start()
                    elif what == "restart worker":
                        workers[0] = start_worker(env, tmp_path / "w0-restarted.log")
            ahead = start + (j + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        assert done_events == ["kill node", "kill worker", "restart node", "restart worker"], done_events
        deadline = time.monotonic() + 60
        while pub.acked < n_msgs and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pub.acked == n_msgs, f"only {pub.acked} of {n_msgs} PUBACKed"
        deadline = time.monotonic() + 60
        got = 0
        while time.monotonic() < deadline:
            got = stored(influx)
            if got >= n_msgs:
                break
            time.sleep(0.5)
        # every message acknowledged: nothing pending or in flight in the group. A worker acks after
        # its write, so from here on no redelivery can add a point: the count below is final (no
        # fixed wait past ack_wait needed)
        deadline = time.monotonic() + 20
        while consumer_state(cluster.urls[1]) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert consumer_state(cluster.urls[1]) == (0, 0)
        got = stored(influx)
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("w*.log"))
        assert got == n_msgs, f"stored {got} of {n_msgs} sent\n{logs}"
        pub.close()
        # SIGTERM stops a worker promptly (its drain once sat out a 30 s timeout): wait() raises
        # TimeoutExpired otherwise. Exit codes are not checked: a member restarted moments ago may
        # still be starting up when the signal comes.
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(10)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()


def test_each_city_lands_in_its_own_influxdb(settings: Settings, influx: InfluxClient, private_influx) -> None:
    """Two real InfluxDB instances: bogor is routed to the second, depok (not in the table) to the default."""
    from kotacerdas.routing import influx_for_city
    from kotacerdas.settings import InfluxSettings

    second = private_influx()
    s = settings.model_copy(deep=True)
    s.routing.cities = {"bogor": InfluxSettings(url=second.url, database="kc_bogor")}
    root = s.mqtt.topic_root
    t0 = int(time.time() * 1000) - 600_000
    batch = []
    for j in range(30):
        city = "bogor" if j % 3 == 0 else "depok"
        topic, payload = reading(root, j, t0, city=city)
        batch.append((backbone.MQTT_SUBJECT_PREFIX + backbone.mqtt_topic_to_subject(topic), payload))
    router = CityRouter(s)
    try:
        out = BatchWriter(s, router, CAT).process(batch, int(time.time() * 1000))
    finally:
        router.close()
    assert sorted(out.ack) == list(range(30)) and not out.dead and not out.nak
    assert len(out.written) == 2
    with InfluxClient(influx_for_city(s, "bogor")) as b:
        assert stored(b) == 10
        assert b.series('SHOW TAG VALUES FROM /.*/ WITH KEY = "city"')[0].column("value") == ["bogor"]
    assert stored(influx) == 20
    assert {v for x in influx.series('SHOW TAG VALUES FROM /.*/ WITH KEY = "city"') for v in x.column("value")} == {"depok"}
    # the schema (retention policies, continuous queries) was set up on the second instance too
    with InfluxClient(influx_for_city(s, "bogor")) as b:
        assert any(r[0] == "raw" for x in b.series('SHOW RETENTION POLICIES ON "kc_bogor"') for r in x.values)
    # a service serving one city reads where that city's data is
    assert influx_for_city(s.model_copy(update={"city": "bogor"})).url == second.url
    assert influx_for_city(s.model_copy(update={"city": "depok"})).url == settings.influx.url


def test_city_down_is_handed_back_other_city_written(settings: Settings, influx: InfluxClient) -> None:
    """bogor's InfluxDB is unreachable: its messages are NAKed (come back later), depok's are stored and acked."""
    from kotacerdas.settings import InfluxSettings
    from devtools.stack import free_port

    s = settings.model_copy(deep=True)
    s.routing.cities = {"bogor": InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="x", timeout_s=1)}
    t0 = int(time.time() * 1000) - 600_000
    batch = []
    for j in range(10):
        topic, payload = reading(s.mqtt.topic_root, j, t0, city="bogor" if j < 4 else "depok")
        batch.append((backbone.MQTT_SUBJECT_PREFIX + backbone.mqtt_topic_to_subject(topic), payload))
    router = CityRouter(s)
    try:
        out = BatchWriter(s, router, CAT).process(batch, int(time.time() * 1000))
    finally:
        router.close()
    assert sorted(out.nak) == [0, 1, 2, 3]
    assert sorted(out.ack) == list(range(4, 10))
    assert stored(influx) == 6
