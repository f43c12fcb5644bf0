"""Fault injection through the real services, counted from the simulator to InfluxDB.

Each test records a fleet (``kotacerdas simulate run --dry-run``: the exact set of
(device, seq) sent), runs ``kotacerdas ingest run`` and ``kotacerdas gateway run``
as subprocesses against private daemons, replays the fleet with ``kotacerdas
simulate replay`` while it breaks something, and then counts what InfluxDB holds.
Expected: every reading stored once, none lost, none duplicated. Each test appends
its row to the report (docs/reliability.md via ``kotacerdas reliability``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import mqtt_for
from tests.reliability.harness import (
    DevicePublisher, Fleet, Service, Tally, kc, make_fleet, metric, replay, require, service_env, stored_rows, tally,
    wait_all_stored, wait_until,
)
from tests.reliability.results import FaultRow
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import InfluxSettings

pytestmark = pytest.mark.long


@dataclass
class Pipeline:
    env: dict[str, str]
    gateway: Service
    ingest: Service
    influx: InfluxSettings

    def counters(self) -> str:
        """What the services say they did (for the notes when counts disagree)."""
        try:
            g = self.gateway.env["KC_GATEWAY__HTTP_PORT"]
            i = self.ingest.env["KC_INGEST__HTTP_PORT"]
            return (f"gateway received {metric(g, 'kc_gateway_received_total'):.0f}, "
                    f"accepted {metric(g, 'kc_gateway_accepted_total'):.0f}, "
                    f"forwarded {metric(g, 'kc_gateway_forwarded_total'):.0f}; "
                    f"ingest written {metric(i, 'kc_ingest_written_total'):.0f}")
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"counters unavailable ({type(exc).__name__})"

    def stop(self) -> None:
        for s in (self.gateway, self.ingest):
            s.stop()


def start_pipeline(tmp: Path, fleet: Fleet, *, mqtt_port: int, influx_url: str, database: str, root: str,
                   upstream_port: int | None = None, **extra: str) -> Pipeline:
    env = service_env(tmp, mqtt_port=mqtt_port, influx_url=influx_url, database=database, root=root,
                      upstream_port=upstream_port, **extra)
    r = kc("gateway", "registry", "import", str(fleet.devices_json), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    ingest_env = dict(env) if upstream_port is None else {**env, "KC_MQTT__PORT": str(upstream_port)}
    # ingest first: its persistent session must exist before the gateway forwards anything
    ingest = Service("ingest", ["ingest", "run"], ingest_env, tmp, "KC_INGEST__HTTP_PORT").start()
    gateway = Service("gateway", ["gateway", "run"], env, tmp, "KC_GATEWAY__HTTP_PORT").start()
    return Pipeline(env, gateway, ingest, InfluxSettings(url=influx_url, database=database))


def some_stored(p: Pipeline, fleet: Fleet) -> bool:
    return tally(fleet, stored_rows(p.influx, fleet)).stored > 0


def finish(pub: Service, timeout_s: float = 180) -> None:
    pub.proc.wait(timeout_s)
    assert pub.proc.returncode == 0, f"publisher failed:\n{pub.log()[-2000:]}"


def row(fault: str, action: str, t: Tally, t0: float, notes: str = "") -> FaultRow:
    if t.unexpected:
        notes = (notes + f"; {t.unexpected} points not sent by the fleet").lstrip("; ")
    return FaultRow(fault, action, t.sent, t.stored, t.lost, t.duplicated, round(time.monotonic() - t0, 1), notes)


@pytest.fixture
def need_parts():
    require("gateway", "ingest", "simulate")


SHARED_SUB_FINDING = (
    "Mosquitto 2.0.11 does not restore a persistent session's shared ($share/...) subscription after a "
    "restart: what the gateway forwards before ingest reconnects matches no subscriber and is dropped "
    "(measured here; a plain persistent subscription keeps it). Ingest's default share_group='ingest'."
)


@pytest.mark.parametrize("how,sub", [("restart", "shared"), ("restart", "plain"), ("crash", "plain")])
def test_broker_restart_mid_stream(how, sub, need_parts, settings, private_broker, tmp_path, fault_log):
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)  # 600 readings
    broker = private_broker()
    extra = {} if sub == "shared" else {"KC_INGEST__SHARE_GROUP": ""}
    p = start_pipeline(tmp_path, fleet, mqtt_port=broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root, **extra)
    t0 = time.monotonic()
    try:
        # the simulator's publisher gives up on messages published while disconnected, so
        # here the recorded fleet is published by firmware-like code that waits out the outage
        pub = DevicePublisher(fleet, mqtt_for(broker, settings.mqtt.topic_root), rate=100,
                              client_id=f"devices-{settings.mqtt.topic_root}").start()
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        broker.stop() if how == "restart" else broker.kill()
        time.sleep(3)
        broker.start()
        pub.join()
        t = wait_all_stored(p.influx, fleet, timeout_s=30)
        counters = p.counters() if t.lost else ""
    finally:
        p.stop()
    action = ("Mosquitto stopped (SIGTERM) mid-stream at 100 msg/s, restarted on the same port after 3 s"
              if how == "restart" else "Mosquitto SIGKILLed mid-stream at 100 msg/s, restarted after 3 s")
    action += f"; ingest on a {'shared ($share, the default)' if sub == 'shared' else 'plain persistent'} subscription"
    notes = "" if how == "restart" else "broker persistence autosaves every 5 s: a crash may lose what it had not saved"
    if t.lost:
        notes = "; ".join(x for x in (notes, f"lost e.g. {t.missing[:3]}", counters) if x)
    fault_log(row(f"broker {how}", action, t, t0, notes))
    if t.lost and sub == "shared":
        pytest.xfail(SHARED_SUB_FINDING)
    if how == "crash" and t.lost:
        pytest.xfail(f"broker crash lost {t.lost} readings the broker had acknowledged but not persisted")
    assert t.perfect, t


def test_influxdb_stopped(need_parts, settings, private_influx, tmp_path, fault_log, full_length):
    outage_s = 60 if full_length else 15
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    ix = private_influx()
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=ix.url, database="kotacerdas",
                       root=settings.mqtt.topic_root)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=600 / (outage_s + 10))  # stream spans the whole outage
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        ix.stop()
        time.sleep(outage_s)
        spooled = metric(p.ingest.env["KC_INGEST__HTTP_PORT"], "kc_ingest_spooled_total")
        ix.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=120)
    finally:
        p.stop()
    fault_log(row("InfluxDB stopped", f"InfluxDB stopped for {outage_s} s mid-stream, then started again", t, t0,
                  f"ingest spooled {spooled:.0f} readings while it was down"))
    assert t.perfect, t


def test_gateway_upstream_cut(need_parts, settings, private_broker, tmp_path, fault_log):
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    devices_broker = private_broker()
    upstream = private_broker()
    p = start_pipeline(tmp_path, fleet, mqtt_port=devices_broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root, upstream_port=upstream.port)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=50)
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        upstream.stop()
        time.sleep(10)
        queued = metric(p.gateway.env["KC_GATEWAY__HTTP_PORT"], "kc_gateway_queue_depth")
        upstream.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=90)
    finally:
        p.stop()
    fault_log(row("gateway upstream cut", "upstream broker (gateway -> ingest) down for 10 s mid-stream", t, t0,
                  f"gateway outbox held {queued:.0f} messages during the cut"))
    assert queued > 0, "the cut happened while nothing was flowing"
    assert t.perfect, t


def test_ingest_and_gateway_sigkilled(need_parts, settings, private_broker, tmp_path, fault_log):
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    broker = private_broker()
    p = start_pipeline(tmp_path, fleet, mqtt_port=broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=60)  # ~10 s stream
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        p.ingest.kill()
        time.sleep(2)
        p.ingest.start()
        time.sleep(1)
        p.gateway.kill()
        time.sleep(2)
        p.gateway.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=90)
    finally:
        p.stop()
    fault_log(row("ingest and gateway SIGKILL", "ingest SIGKILLed mid-stream and restarted after 2 s, then the gateway",
                  t, t0))
    assert t.perfect, t


def test_spool_nearly_full(need_parts, settings, private_influx, tmp_path, fault_log):
    """InfluxDB down and the ingest spool capped small: the cap holds, nothing is dropped, all lands later."""
    cap = 40_000
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    ix = private_influx()
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=ix.url, database="kotacerdas",
                       root=settings.mqtt.topic_root, KC_INGEST__SPOOL_MAX_BYTES=str(cap))
    spool = Path(p.env["KC_INGEST__SPOOL_PATH"])
    t0 = time.monotonic()
    try:
        ix.stop()
        pub = replay(fleet, p.env, tmp_path, rate=200)
        finish(pub)
        time.sleep(5)
        spool_bytes = sum(f.stat().st_size for f in spool.glob("*.lp"))
        log_during = p.ingest.log()
        ix.start()
        t = wait_all_stored(p.influx, fleet, timeout_s=120)
    finally:
        p.stop()
    said_full = "spool" in log_during.lower() and "full" in log_during.lower()
    fault_log(row("disk spool nearly full", f"InfluxDB down, ingest spool capped at {cap} bytes, 600 readings sent",
                  t, t0, f"spool held {spool_bytes} bytes (cap {cap}); the rest waited unacknowledged at the broker; "
                  + ("ingest logged the full spool" if said_full else "ingest did NOT log that the spool was full")))
    assert spool_bytes <= cap
    assert t.perfect, t
    if not said_full:
        pytest.xfail("ingest holds messages back silently when its spool is full (no log line saying so)")


def test_device_offline_then_flushes_its_buffer(need_parts, settings, tmp_path, fault_log):
    """An hour of buffered readings from devices that were offline arrives in one burst, stamped when measured."""
    fleet = make_fleet(tmp_path, per_kind=10, interval_s=60, span_s=3600, prefix="off")
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=0)  # as fast as the simulator can: the buffer flush
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=90)
        with InfluxClient(p.influx) as c:
            t_first = c.series('SELECT first("seq") FROM "air"')[0].values[0][0]
            t_last = c.series('SELECT last("seq") FROM "air"')[0].values[0][0]
    finally:
        p.stop()
    span_min = (t_last - t_first) / 60_000
    fault_log(row("device offline, buffer flushed", "1 h of readings from 20 devices published in one burst", t, t0,
                  f"stored readings keep their device timestamps: {span_min:.0f} min apart"))
    assert span_min > 50, "readings were restamped on arrival"
    assert t.perfect, t
