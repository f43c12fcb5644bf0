"""The conformance corpus end to end: real Tasmota/ESPHome payloads -> Mosquitto -> gateway -> ingest -> InfluxDB.

Every corpus message is stored exactly once or dead-lettered (under its ORIGINAL topic) with the
reason the corpus states, and the gateway's own ledger (``kotacerdas gateway ledger``) shows
received = stored + rejected by reason for the run.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter

import httpx

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client, wait_published
from tests.gateway import corpus
from tests.gateway.helpers import Collector, wait_for
from tests.services import Service, kc, service_env

CAT = load_catalogue()


def _now_without_ms_collision() -> int:
    """A run time at which the corpus' two same-second Tasmota messages get different milliseconds.

    The adapter takes the millisecond from the payload's checksum: 1 pair in 1000 collides (and would
    be one InfluxDB point); the test picks its clock so this run is not that pair.
    """
    now = int(time.time())
    while True:
        _, entries = corpus.load(now)
        pair = [e.payload for e in entries if e.topic == "tele/tas-air-8266/SENSOR" and e.stored]
        if len({zlib.crc32(p) % 1000 for p in pair}) == len(pair):
            return now
        now -= 1


def test_corpus_ledger_end_to_end(settings, influx, tmp_path, uid):
    root = settings.mqtt.topic_root
    tas, esp = f"x{uid}/", f"y{uid}/"
    now = _now_without_ms_collision()
    devices, entries = corpus.load(now)
    full = {e.id: (tas if e.vendor == "tasmota" else esp) + e.topic for e in entries}
    (tmp_path / "devices.json").write_text(json.dumps(devices))
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=root,
                      KC_GATEWAY__ADAPTERS='["tasmota","esphome"]', KC_GATEWAY__TASMOTA_PREFIX=tas,
                      KC_GATEWAY__ESPHOME_PREFIX=esp)
    assert kc("gateway", "registry", "import", str(tmp_path / "devices.json"), env=env).returncode == 0
    for e in entries:
        if e.decommission:
            assert kc("gateway", "registry", "decommission", e.decommission, env=env).returncode == 0

    pub = make_client(settings.mqtt)
    connect(pub, settings.mqtt)
    dead = Collector(settings.mqtt, contract.deadletter_subscription(root))
    gw = ing = None
    try:
        # what ESPHome left retained before the gateway came up
        wait_published([pub.publish(full[e.id], e.payload, qos=1, retain=True) for e in entries if e.retain])
        gw = Service("gateway", ["gateway", "run"], env, tmp_path, "KC_GATEWAY__HTTP_PORT").start()
        ing = Service("ingest", ["ingest", "run"], env, tmp_path, "KC_INGEST__HTTP_PORT").start()
        infos = []
        for e in entries:
            if not e.retain:
                infos.append(pub.publish(full[e.id], e.payload, qos=1))
                if e.id == "esp8266-redelivered-copy":
                    wait_published(infos)  # a copy arrives after the original, as a redelivery does
        wait_published(infos)

        url = f"http://127.0.0.1:{env['KC_GATEWAY__HTTP_PORT']}/ledger"
        want_rejected = Counter(e.reason for e in entries if not e.stored)
        n_stored = sum(e.stored for e in entries)

        def ledger() -> dict:
            return httpx.get(url, timeout=5).json()

        assert wait_for(lambda: ledger()["totals"]["received"] >= len(entries), timeout=30), ledger()
        doc = ledger()
        assert doc["totals"] == {"received": len(entries), "stored": n_stored,
                                 "rejected": sum(want_rejected.values()), "ignored": 0}, doc
        assert doc["rejected"] == dict(want_rejected) and doc["balanced"]
        # the operator's view of the same ledger
        r = kc("gateway", "ledger", "--url", url.rsplit("/", 1)[0], "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["totals"] == doc["totals"], r.stderr

        # every rejected message is dead-lettered once, under the topic the device used, with its reason
        def dead_by_topic() -> Counter:
            return Counter((json.loads(p)["topic"], t.rsplit("/", 1)[1]) for t, p in dead.msgs)

        want_dead = Counter((full[e.id], e.reason) for e in entries if not e.stored)
        assert wait_for(lambda: sum(dead_by_topic().values()) >= len(want_dead), timeout=20)
        assert dead_by_topic() == want_dead

        # every stored telemetry message is in InfluxDB exactly once
        tele = [e for e in entries if e.stored and isinstance(e.expect["stored"], dict)]
        kinds = {d["device"]: d["kind"] for d in devices}
        tas_points = Counter(e.topic.split("/")[1] for e in tele if e.vendor == "tasmota")

        def rows(device: str) -> list[dict]:
            m = CAT[kinds[device]].measurement
            out = []
            for s in influx.series(f"SELECT * FROM \"{m}\" WHERE \"device\" = '{device}'"):
                out += [dict(zip(s.columns, v)) for v in s.values]
            return out

        def all_there() -> bool:
            return all(len(rows(d)) >= n for d, n in tas_points.items()) and all(
                any(all(row.get(k) == v for k, v in e.expect["stored"].items()) for row in rows(e.topic.split("/")[0]))
                for e in tele if e.vendor == "esphome")

        assert wait_for(all_there, timeout=30)
        for device, n in tas_points.items():
            got = rows(device)
            assert len(got) == n, (device, got)  # nothing lost, nothing doubled (the copy was refused)
        for e in tele:
            device = e.topic.split("/")[1 if e.vendor == "tasmota" else 0]
            want = e.expect["stored"]
            matching = [row for row in rows(device)
                        if all(abs((row.get(k) or -1e9) - v) < 1e-9 for k, v in want.items())]
            assert len(matching) == 1, (e.id, want, rows(device))
            if e.vendor == "tasmota":
                # only the mapped quantities: the ESP32 die temperature is not an air temperature
                fields = {k for k, v in matching[0].items() if v is not None and k in CAT[kinds[device]].field_names}
                assert fields == set(want), (e.id, fields)
    finally:
        for e in entries:
            if e.retain:
                pub.publish(full[e.id], b"", qos=1, retain=True)
        pub.disconnect()
        pub.loop_stop()
        dead.close()
        for s in (ing, gw):
            if s is not None:
                s.stop()
