"""Faults mid-stream: InfluxDB stopped and restarted, ingest SIGKILLed and restarted,
two workers sharing the load. Each ends with exactly N points: none lost, none doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kotacerdas.influx import InfluxClient
from kotacerdas.mqtt import connect, make_client, wait_published
from devtools.stack import free_port
from ingest.service import IngestService
from tests.conftest import influx_for
from tests.ingest.helpers import normalized_messages, publish, telemetry_count, wait_for


class Streamer(threading.Thread):
    """Publishes messages at a steady pace in the background (QoS 1), like the gateway."""

    def __init__(self, mqtt, msgs, per_s: float):
        super().__init__(daemon=True)
        self.mqtt, self.msgs, self.per_s = mqtt, msgs, per_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            c = make_client(self.mqtt)
            connect(c, self.mqtt)
            infos = []
            t0 = time.monotonic()
            for i, (t, p) in enumerate(self.msgs):
                infos.append(c.publish(t, p, qos=1))
                self.sent = i + 1
                ahead = t0 + (i + 1) / self.per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            wait_published(infos, 60)
            c.disconnect()
            c.loop_stop()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.parametrize("mqtt_v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_two_workers_on_a_shared_subscription_write_each_message_once(settings, influx, mqtt_v5):
    workers = []
    for i in range(2):
        s = settings.model_copy(deep=True)
        s.ingest.mqtt_v5 = mqtt_v5
        s.ingest.share_group = "ingest"  # opt-in: the default is one worker on a plain subscription
        s.ingest.client_id = f"{settings.ingest.client_id}-w{i}"
        s.ingest.spool_path = Path(str(settings.ingest.spool_path) + f"-w{i}")
        workers.append(IngestService(s).start(setup_schema=(i == 0)))
    try:
        n = 2000
        publish(settings.mqtt, normalized_messages(settings.mqtt.topic_root, n))
        got = lambda: [w.metrics.received._value.get() for w in workers]  # noqa: E731
        assert wait_for(lambda: sum(got()) >= n and telemetry_count(influx) >= n, 30), (got(), telemetry_count(influx))
        wait_for(lambda: False, 1.0)  # anything extra would arrive now
        assert telemetry_count(influx) == n
        assert sum(got()) == n  # each message delivered to exactly one worker
        assert all(x > n * 0.2 for x in got()), got()  # and the load is split
    finally:
        for w in workers:
            w.stop()


@pytest.mark.long
def test_influxdb_stopped_mid_stream_then_restarted(settings, private_influx):
    ix = private_influx()
    s = settings.model_copy(deep=True)
    s.influx = influx_for(ix, "ingest_fault")
    s.ingest.batch_interval_s = 0.2
    svc = IngestService(s).start()
    ic = InfluxClient(s.influx)
    try:
        n = 3000
        st = Streamer(s.mqtt, normalized_messages(s.mqtt.topic_root, n), per_s=600)
        st.start()
        assert wait_for(lambda: telemetry_count(ic) > 300, 20)
        ix.stop()
        assert wait_for(lambda: svc.metrics.spooled._value.get() > 300, 20), "nothing spooled while InfluxDB down"
        spool_files = len(svc.spool)
        assert spool_files > 0
        ix.start()
        st.join(60)
        assert st.error is None and st.sent == n
        assert wait_for(lambda: telemetry_count(ic) >= n and len(svc.spool) == 0, 60), (telemetry_count(ic), len(svc.spool))
        wait_for(lambda: False, 1.0)
        assert telemetry_count(ic) == n
        assert svc.metrics.replayed._value.get() >= svc.metrics.spooled._value.get() > 0
    finally:
        svc.stop()
        ic.close()


def _env(settings, tmp_path: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root, "KC_INFLUX__URL": settings.influx.url,
        "KC_INFLUX__DATABASE": settings.influx.database, "KC_INGEST__SPOOL_PATH": str(tmp_path / "spool"),
        "KC_INGEST__CLIENT_ID": settings.ingest.client_id, "KC_INGEST__HTTP_PORT": str(port),
        "KC_INGEST__BATCH_INTERVAL_S": "0.2", "KC_STATE_DIR": str(tmp_path / "state"),
    })
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "ingest", "run"], env=env,
                             stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['KC_INGEST__HTTP_PORT']}/readyz"
    ok = wait_for(lambda: p.poll() is None and _get(url) == 200, 30, 0.2)
    assert ok, log.read_text()[-3000:]
    return p


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.long
def test_ingest_sigkilled_mid_stream_then_restarted(settings, influx, tmp_path):
    env = _env(settings, tmp_path, free_port())
    log = tmp_path / "ingest.log"
    p = _start(env, log)
    n = 4000
    st = Streamer(settings.mqtt, normalized_messages(settings.mqtt.topic_root, n), per_s=800)
    st.start()
    try:
        assert wait_for(lambda: telemetry_count(influx) > 500, 30), log.read_text()[-2000:]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        killed_at = telemetry_count(influx)
        assert killed_at < n
        # messages keep coming while ingest is dead: the broker queues them (half a second's worth)
        sent_at_kill = st.sent
        assert wait_for(lambda: st.sent >= min(n, sent_at_kill + 400), 30), st.sent
        p = _start(env, log)
        st.join(60)
        assert st.error is None and st.sent == n
        assert wait_for(lambda: telemetry_count(influx) >= n, 60), telemetry_count(influx)
        # no settling wait: a redelivered reading rewrites its own point (same series and time), so
        # the count cannot grow past n later; more than n now would mean a reading stored twice
        assert telemetry_count(influx) == n
        # SIGTERM stops cleanly
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert '"msg": "stopped"' in log.read_text()
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.long
def test_influxdb_down_at_start_spools_then_creates_database_and_replays(settings, private_influx):
    ix = private_influx()
    s = settings.model_copy(deep=True)
    s.influx = influx_for(ix, "ingest_late")
    s.influx.timeout_s = 2.0
    ix.stop()
    svc = IngestService(s).start()  # must not fail: InfluxDB is down
    ic = InfluxClient(s.influx)
    try:
        n = 500
        publish(s.mqtt, normalized_messages(s.mqtt.topic_root, n))
        assert wait_for(lambda: svc.metrics.spooled._value.get() == n, 20)
        ix.start()
        assert wait_for(lambda: telemetry_count(ic) == n and len(svc.spool) == 0, 40), telemetry_count(ic)
        rps = {r[0] for x in ic.series("SHOW RETENTION POLICIES") for r in x.values}
        assert {"raw", "agg_1m", "agg_1h"} <= rps
    finally:
        svc.stop()
        ic.close()


def test_memory_stays_bounded_under_a_burst(settings, influx):
    """A burst far larger than the buffer: the broker keeps the surplus, ingest holds <= max_buffered."""
    s = settings.model_copy(deep=True)
    s.ingest.max_buffered = 100
    s.ingest.max_unacked = 50
    svc = IngestService(s).start()
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(svc.batcher))
            time.sleep(0.001)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        n = 5000
        publish(s.mqtt, normalized_messages(s.mqtt.topic_root, n))
        assert wait_for(lambda: telemetry_count(influx) == n, 60), telemetry_count(influx)
        done.set()
        assert 0 < peak[0] <= 100
    finally:
        done.set()
        svc.stop()


@pytest.mark.long
def test_spool_full_holds_messages_unacked_until_influxdb_returns(settings, private_influx):
    ix = private_influx()
    s = settings.model_copy(deep=True)
    s.influx = influx_for(ix, "ingest_full")
    s.ingest.spool_max_bytes = 0  # nothing fits: the only durable place left is the broker
    svc = IngestService(s).start()
    ic = InfluxClient(s.influx)
    try:
        ix.stop()
        n = 800
        publish(s.mqtt, normalized_messages(s.mqtt.topic_root, n))
        assert wait_for(lambda: svc.metrics.received._value.get() > 0, 10)
        # never silent: the full spool shows in the metrics while it lasts; once it does, the writer
        # has failed a batch and found no room, and neither wrote nor spooled anything
        assert wait_for(lambda: svc.metrics.spool_full._value.get() == 1, 10)
        assert svc.metrics.spooled._value.get() == 0 and svc.metrics.written._value.get() == 0
        assert svc.metrics.spool_full_events._value.get() >= 1
        ix.start()
        assert wait_for(lambda: telemetry_count(ic) == n, 60), telemetry_count(ic)
        assert wait_for(lambda: svc.metrics.spool_full._value.get() == 0, 10)
    finally:
        svc.stop()
        ic.close()


@pytest.mark.long
def test_spool_survives_a_restart_and_is_replayed_once(settings, private_influx):
    ix = private_influx()
    s = settings.model_copy(deep=True)
    s.influx = influx_for(ix, "ingest_restart")
    s.influx.timeout_s = 2.0
    svc = IngestService(s).start()
    ix.stop()
    n = 600
    publish(s.mqtt, normalized_messages(s.mqtt.topic_root, n))
    assert wait_for(lambda: svc.metrics.spooled._value.get() == n, 20)
    svc.stop()  # everything was acked (spooled): the broker has nothing left for us
    ix.start()
    svc2 = IngestService(s).start()
    ic = InfluxClient(s.influx)
    try:
        assert len(svc2.spool) > 0 or telemetry_count(ic) > 0
        assert wait_for(lambda: telemetry_count(ic) == n and len(svc2.spool) == 0, 40), telemetry_count(ic)
        assert svc2.metrics.replayed._value.get() == n and svc2.metrics.received._value.get() == 0
    finally:
        svc2.stop()
        ic.close()
