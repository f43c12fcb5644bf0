"""The thin pipeline end to end, through the real services as processes.

devices (published here) -> Mosquitto -> gateway -> Mosquitto -> ingest -> InfluxDB -> analytics.
N good messages published => exactly N points queryable; every bad message is
dead-lettered with its reason; the analytics pass writes its range check back.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client, wait_published
from tests.services import DeadLetters, Service, kc, service_env, start_all

pytestmark = pytest.mark.long


def test_thin_pipeline_counts_every_message(settings, influx, tmp_path):
    cat = load_catalogue()
    root, city = settings.mqtt.topic_root, "depok"
    devices = [
        {"device": f"{k.name.replace('_', '')}-{i}", "kind": k.name, "city": city, "district": "beji",
         "lat": -6.37 + i / 100, "lon": 106.82, "department": k.department}
        for k in cat for i in range(3)
    ]
    (tmp_path / "devices.json").write_text(json.dumps(devices))
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=root)
    r = kc("gateway", "registry", "import", str(tmp_path / "devices.json"), env=env)
    assert r.returncode == 0, r.stderr

    dead = DeadLetters(settings.mqtt, contract.deadletter_subscription(root))

    # both at once (imports overlap); nothing is published before both are ready
    gw, ing = start_all(Service("gateway", ["gateway", "run"], env, tmp_path, "KC_GATEWAY__HTTP_PORT"),
                        Service("ingest", ["ingest", "run"], env, tmp_path, "KC_INGEST__HTTP_PORT"))
    try:
        pub = make_client(settings.mqtt)
        connect(pub, settings.mqtt)
        now = int(time.time() * 1000)
        per_device = 20
        infos, good = [], Counter()
        for d in devices:
            kind = cat[d["kind"]]
            topic = contract.telemetry_topic(root, city, d["kind"], d["device"])
            for seq in range(per_device):
                fields = {f.name: f.quantise(f.typical) for f in kind.fields}
                payload = contract.encode_telemetry(now - (per_device - seq) * 1000, seq, fields, battery=3.9, fw="1.0.0")
                infos.append(pub.publish(topic, payload, qos=1))
                good[d["kind"]] += 1
        t_air = contract.telemetry_topic(root, city, "air", "air-0")
        bad = {
            "malformed_json": (t_air, b"{oops"),
            "not_finite": (t_air, b'{"v":1,"ts":%d,"seq":999,"fields":{"pm25":NaN}}' % now),
            "out_of_range": (t_air, contract.encode_telemetry(now, 1000, {"pm25": 5000.0})),
            "wrong_type": (t_air, b'{"v":1,"ts":%d,"seq":1001,"fields":{"pm25":"high"}}' % now),
            "unknown_device": (contract.telemetry_topic(root, city, "air", "ghost-1"), contract.encode_telemetry(now, 1, {"pm25": 5.0})),
            "oversized": (t_air, b"{" + b" " * 8000 + b"}"),
            "future_timestamp": (t_air, contract.encode_telemetry(now + 86_400_000, 1002, {"pm25": 5.0})),
            "duplicate": (t_air, contract.encode_telemetry(now - per_device * 1000, 0, {f.name: f.quantise(f.typical) for f in cat["air"].fields}, battery=3.9, fw="1.0.0")),
        }
        for topic, payload in bad.values():
            infos.append(pub.publish(topic, payload, qos=1))
        wait_published(infos)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = {k.name: int(influx.scalar(f'SELECT count("seq") FROM "{k.measurement}"') or 0) for k in cat}
            got_dead = dead.counts()
            if counts == dict(good) and all(got_dead.get(r, 0) >= 1 for r in bad):
                break
            time.sleep(0.5)
        assert counts == dict(good), counts  # exactly N points per kind: nothing lost, nothing doubled
        assert {r: got_dead.get(r, 0) for r in bad} == {r: 1 for r in bad}, got_dead

        # stored values are what the devices sent, tagged by device/city/district/kind
        s = influx.series('SELECT last("pm25") FROM "air" GROUP BY "device","district"')
        assert {x.tags["device"] for x in s} == {"air-0", "air-1", "air-2"}
        assert all(x.tags["district"] == "beji" and x.values[0][1] == cat["air"].field("pm25").typical for x in s)

        r = kc("analytics", "run", "--once", env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        # typical readings for 20 s: indices, and no qc verdicts (2 "not evaluated" and 9 "missing" are never stored)
        assert int(influx.scalar('SELECT count("value") FROM "ispu"') or 0) > 0
        assert int(influx.scalar('SELECT count("flag") FROM "qc" WHERE "flag" < 3 OR "flag" > 4') or 0) == 0
    finally:
        ing.stop()
        gw.stop()
        dead.close()
