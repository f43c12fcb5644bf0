"""Fault injection through the real services, counted from the simulator to InfluxDB.

Each test records a fleet (``kotacerdas simulate run --dry-run``: the exact set of
(device, seq) sent), runs ``kotacerdas ingest run`` and ``kotacerdas gateway run``
as subprocesses against private daemons, replays the fleet with ``kotacerdas
simulate replay`` while it breaks something, and then counts what InfluxDB holds.
Expected: every reading stored once, none lost, none duplicated. Each test appends
its row to the report (docs/reliability.md via ``kotacerdas reliability``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import mqtt_for
from tests.reliability.harness import (
    DevicePublisher, Fleet, Pipeline, Service, Tally, kc, make_fleet, metric, replay, require, service_env,
    start_pipeline, stored_rows, tally, wait_all_stored, wait_until,
)
from kotacerdas.influx import InfluxClient
from devtools.reliability_results import FaultRow

pytestmark = pytest.mark.long


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
    "(measured here; a plain persistent subscription keeps it). So ingest's default is a plain subscription; "
    "share_group (several workers) is opt-in with this caveat (docs/ingest.md)."
)


@pytest.mark.parametrize("how,sub", [("restart", "shared"), ("restart", "plain"), ("crash", "plain")])
def test_broker_restart_mid_stream(how, sub, need_parts, settings, private_broker, tmp_path, fault_log):
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)  # 600 readings
    broker = private_broker()
    extra = {"KC_INGEST__SHARE_GROUP": "ingest"} if sub == "shared" else {}  # plain is the default
    p = start_pipeline(tmp_path, fleet, mqtt_port=broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root, **extra)
    if how == "crash":
        # a broker that has run for a while has autosaved (every 5 s) the services' sessions; crashing
        # it before the first save would lose the subscriptions themselves, which is not the case to measure:
        # wait for a save written after the services subscribed (they are ready now)
        ready_at = time.time()
        db = broker.workdir / "mosquitto.db"
        assert wait_until(lambda: db.exists() and db.stat().st_mtime > ready_at, 15), "the broker never autosaved"
    t0 = time.monotonic()
    try:
        # the simulator's publisher gives up on messages published while disconnected, so
        # here the recorded fleet is published by firmware-like code that waits out the outage
        pub = DevicePublisher(fleet, mqtt_for(broker, settings.mqtt.topic_root), rate=100,
                              client_id=f"devices-{settings.mqtt.topic_root}").start()
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        broker.stop() if how == "restart" else broker.kill()
        time.sleep(3)  # the outage itself (the row reports "after 3 s")
        broker.start()
        pub.join()
        # the plain restart drains in seconds; the two known-lossy variants need not wait long to show it
        t = wait_all_stored(p.influx, fleet, timeout_s=30 if (how, sub) == ("restart", "plain") else 15, idle=p.idle)
        counters = p.counters() if t.lost else ""
    finally:
        p.stop()
    action = ("Mosquitto stopped (SIGTERM) mid-stream at 100 msg/s, restarted on the same port after 3 s"
              if how == "restart" else "Mosquitto SIGKILLed mid-stream at 100 msg/s, restarted after 3 s")
    action += f"; ingest on a {'shared ($share, opt-in)' if sub == 'shared' else 'plain persistent (default)'} subscription"
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
    outage_s = 60 if full_length else 8  # the spool takes over at the first refused write
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    ix = private_influx()
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=ix.url, database="kotacerdas",
                       root=settings.mqtt.topic_root)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=600 / (outage_s + 10))  # stream spans the whole outage
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        ix.stop()
        time.sleep(outage_s)  # the outage itself, while the stream goes on
        spooled = metric(p.ingest.env["KC_INGEST__HTTP_PORT"], "kc_ingest_spooled_total")
        ix.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=120, idle=p.idle)
    finally:
        p.stop()
    fault_log(row("InfluxDB stopped", f"InfluxDB stopped for {outage_s} s mid-stream, then started again", t, t0,
                  f"ingest spooled {spooled:.0f} readings while it was down"))
    assert t.perfect, t


def test_gateway_upstream_cut(need_parts, settings, private_broker, tmp_path, fault_log):
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    devices_broker = private_broker()
    upstream = private_broker()
    # ingest's default plain persistent subscription: with an opt-in shared one, restarting the upstream
    # broker loses what arrives before ingest re-subscribes (SHARED_SUB_FINDING, the broker-restart row)
    p = start_pipeline(tmp_path, fleet, mqtt_port=devices_broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root, upstream_port=upstream.port)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=50)
        assert wait_until(lambda: some_stored(p, fleet), 30), "nothing flowed before the fault"
        upstream.stop()
        time.sleep(10)  # the cut itself (the row reports 10 s), while the stream goes on
        queued = metric(p.gateway.env["KC_GATEWAY__HTTP_PORT"], "kc_gateway_queue_depth")
        upstream.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=45, idle=p.idle)
    finally:
        p.stop()
    fault_log(row("gateway upstream cut", "upstream broker (gateway -> ingest) stopped for 10 s mid-stream, "
                  "then restarted; ingest on a plain persistent subscription", t, t0,
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
        # the fault schedule is the thing under test (the row reports it): each down for 2 s, the
        # gateway killed 1 s after ingest came back, all while the stream goes on
        p.ingest.kill()
        time.sleep(2)
        p.ingest.start()
        time.sleep(1)
        p.gateway.kill()
        time.sleep(2)
        p.gateway.start()
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=45, idle=p.idle)
    finally:
        p.stop()
    fault_log(row("ingest and gateway SIGKILL", "ingest SIGKILLed mid-stream and restarted after 2 s, then the gateway",
                  t, t0))
    assert t.perfect, t


def _said_spool_full(log: str) -> bool:
    """A log record (its message, not a path in it) that says the spool is full / out of room."""
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        text = " ".join(str(rec.get(k, "")) for k in ("msg", "error", "reason")).lower()
        if "spool" in text and any(w in text for w in ("full", "no room", "capacity", "limit")):
            return True
    return False


def test_spool_nearly_full(need_parts, settings, private_influx, tmp_path, fault_log):
    """InfluxDB down and the ingest spool capped small: the cap holds, nothing is dropped, all lands later."""
    cap = 20_000
    fleet = make_fleet(tmp_path, per_kind=5, interval_s=10, span_s=600)
    ix = private_influx()
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=ix.url, database="kotacerdas",
                       root=settings.mqtt.topic_root, KC_INGEST__SPOOL_MAX_BYTES=str(cap))
    spool = Path(p.env["KC_INGEST__SPOOL_PATH"])
    t0 = time.monotonic()
    peak = 0
    try:
        ix.stop()
        pub = replay(fleet, p.env, tmp_path, rate=60)  # small batches, so a few fit before the cap
        while pub.alive:
            peak = max(peak, sum(f.stat().st_size for f in spool.glob("*.lp")))
            time.sleep(0.2)
        finish(pub)
        # the event the test is about: ingest reports its spool full (then the spool stops growing)
        wait_until(lambda: _said_spool_full(p.ingest.log()), 15)
        peak = max(peak, sum(f.stat().st_size for f in spool.glob("*.lp")))
        log_during = p.ingest.log()
        ix.start()
        t = wait_all_stored(p.influx, fleet, timeout_s=60, idle=p.idle)
    finally:
        p.stop()
    said_full = _said_spool_full(log_during)
    fault_log(row("disk spool nearly full", f"InfluxDB down, ingest spool capped at {cap} bytes, 600 readings sent",
                  t, t0, f"spool peaked at {peak} bytes (cap {cap}); the rest waited unacknowledged at the broker; "
                  + ("ingest logged the full spool" if said_full else "ingest did NOT log that its spool was full")))
    assert 0 < peak <= cap, f"spool peaked at {peak} bytes"
    assert t.perfect, t
    assert said_full, "ingest must say (log record + kc_ingest_spool_full) when its spool is full"


def test_device_offline_then_flushes_its_buffer(need_parts, settings, tmp_path, fault_log):
    """An hour of buffered readings from devices that were offline arrives in one burst, stamped when measured."""
    fleet = make_fleet(tmp_path, per_kind=10, interval_s=60, span_s=3600, prefix="off")
    p = start_pipeline(tmp_path, fleet, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=settings.mqtt.topic_root)
    t0 = time.monotonic()
    try:
        pub = replay(fleet, p.env, tmp_path, rate=0)  # as fast as the simulator can: the buffer flush
        finish(pub)
        t = wait_all_stored(p.influx, fleet, timeout_s=45, idle=p.idle)
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


def test_firmware_virtual_device_offline_then_flushes(settings, private_broker, tmp_path, fault_log):
    """The real firmware main loop (host build) with its broker away for a while: its ring buffer flushes on return."""
    require("gateway", "ingest", "firmware")
    r = kc("firmware", "virtual", "--help", env=service_env(tmp_path, mqtt_port=1, influx_url="", database="",
                                                             root="x"))
    if r.returncode != 0:
        pytest.skip("`kotacerdas firmware virtual` is not available yet: cannot run the firmware offline test")
    broker = private_broker()
    # The device stops once it has taken and delivered `count` readings (`--duration` only bounds a
    # failure), not after a fixed run: a fixed 30 s run once ended before the device reconnected (CI),
    # because the firmware retries with full-jitter backoff (kc_backoff.py) and with its default 60 s
    # ceiling a late draw after five or six failures during the 12 s outage waited 16-32 s. A 2 s
    # ceiling (config backoff_cap_ms) bounds the wait after the broker returns.
    root, device, interval, count, backoff_cap_s = settings.mqtt.topic_root, "fw-air-1", 1, 20, 2
    devices = tmp_path / "fw-devices.json"
    devices.write_text(f'[{{"device": "{device}", "kind": "air", "city": "depok", "district": "beji"}}]')
    fleet = Fleet(tmp_path / "none.jsonl", devices, {"air": set()})
    p = start_pipeline(tmp_path, fleet, mqtt_port=broker.port, influx_url=settings.influx.url,
                       database=settings.influx.database, root=root, KC_CITY="depok")
    t0 = time.monotonic()
    dev = Service("firmware", ["firmware", "virtual", "--kind", "air", "--device", device, "--count", str(count),
                               "--duration", "120", "--interval", str(interval), "--backoff-cap", str(backoff_cap_s)],
                  {**p.env, "KC_CITY": "depok"}, tmp_path, None).start()
    try:
        def stored() -> int:
            with InfluxClient(p.influx) as c:
                return int(c.scalar(f"SELECT count(\"seq\") FROM \"air\" WHERE \"device\" = '{device}'") or 0)
        assert wait_until(lambda: stored() > 0, 30), "the device never got a reading through"  # online first
        broker.stop()  # the device goes offline: readings pile up in its ring buffer
        time.sleep(12)  # the outage itself (the row reports 12 s)
        broker.start()
        dev.proc.wait(180)
        with InfluxClient(p.influx) as c:
            def seqs() -> list[int]:
                return sorted(int(v[1]) for s in c.series(f"SELECT \"seq\" FROM \"air\" WHERE \"device\" = '{device}'")
                              for v in s.values)
            wait_until(lambda: len(seqs()) >= count, 60, 0.25)
            got = seqs()
    finally:
        p.stop()
        dev.stop()
    gaps = (got[-1] - got[0] + 1 - len(set(got))) if got else 0
    dup = len(got) - len(set(got))
    fault_log(FaultRow("device offline (firmware)", f"virtual firmware device, broker away 12 s of a {count}-reading run "
                       f"at {interval} s interval", len(got) + gaps, len(got), gaps, dup,
                       round(time.monotonic() - t0, 1), "sent = seq range the device produced"))
    assert dev.proc.returncode == 0, dev.log()[-2000:]
    assert got and len(got) >= count, got  # every reading taken was delivered before the device stopped
    assert gaps == 0 and dup == 0, (gaps, dup)
