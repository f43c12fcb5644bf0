"""The ingest service in-process against the real broker and the real InfluxDB."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.mqtt import connect, make_client
from ingest.service import IngestService
from tests.ingest.helpers import normalized_messages, publish, telemetry_count, wait_for

CAT = load_catalogue()


@pytest.fixture
def service(settings):
    svcs = []

    def start(**overrides):
        s = settings.model_copy(deep=True)
        for k, v in overrides.items():
            setattr(s.ingest, k, v)
        svc = IngestService(s).start()
        svcs.append(svc)
        return svc

    yield start
    for svc in svcs:
        svc.stop()


def test_n_messages_make_exactly_n_points(settings, influx, service):
    svc = service()
    n = 3000
    msgs = normalized_messages(settings.mqtt.topic_root, n)
    publish(settings.mqtt, msgs)
    assert wait_for(lambda: telemetry_count(influx) >= n, 30), telemetry_count(influx)
    assert wait_for(lambda: svc.metrics.received._value.get() >= n, 5)
    assert telemetry_count(influx) == n
    assert wait_for(lambda: svc.metrics.written._value.get() >= n, 5)  # counted after the write returns
    # schema of one stored point: tags, fields with their types, device time
    kind = CAT["air"]
    s = influx.series(f'SELECT * FROM "{kind.measurement}" WHERE "device" = \'air-0\' ORDER BY time LIMIT 1')
    row = dict(zip(s[0].columns, s[0].values[0]))
    assert (row["city"], row["district"], row["kind"], row["device"]) == ("depok", "beji", "air", "air-0")
    assert row["fw"] == "1.2.0" and row["seq"] == 0 and row["rssi"] == -61 and row["gw_lag_ms"] == 40
    assert row["battery"] == 3.9
    for f in kind.fields:
        assert row[f.name] == f.quantise(f.typical)
    first_ts = min(int(contract.decode_normalized(p).ts_ms) for t, p in msgs if "/air/air-0" in t)
    assert row["time"] == first_ts
    # only device/city/district/kind are tags
    tag_keys = {v[0] for x in influx.series(f'SHOW TAG KEYS FROM "{kind.measurement}"') for v in x.values}
    assert tag_keys == {"city", "device", "district", "kind"}


def test_gateway_batches_make_one_point_per_reading_and_refused_readings_are_dead_lettered(settings, influx, service):
    """The gateway's batch form (gateway.forward_batch > 1): each reading a point; a bad reading
    in a batch is dead-lettered alone and the rest of its batch is stored."""
    root = settings.mqtt.topic_root
    svc = service(batch_size=700)  # smaller than what arrives: batches are cut by readings
    by_kind: dict[tuple[str, str], list[dict]] = {}
    for _, p in normalized_messages(root, 2000):
        d = orjson.loads(p)
        by_kind.setdefault((d["city"], d["kind"]), []).append(d)
    msgs = [(contract.normalized_batch_topic(root, city, kind), contract.encode_normalized_batch(docs[i:i + 300]))
            for (city, kind), docs in by_kind.items() for i in range(0, len(docs), 300)]
    air = by_kind[("depok", "air")]
    bad = {**air[0], "fields": {"nope": 1.0}}
    msgs.append((contract.normalized_batch_topic(root, "depok", "air"),
                 contract.encode_normalized_batch([bad, {**air[0], "ts": air[0]["ts"] - 1}])))
    publish(settings.mqtt, msgs)
    assert wait_for(lambda: telemetry_count(influx) >= 2001, 30), telemetry_count(influx)
    assert wait_for(lambda: svc.metrics.deadlettered.labels("unknown_field")._value.get() == 1, 10)
    # every batch message received (the dead letter ingest sends comes back as one more)
    assert wait_for(lambda: svc.metrics.received._value.get() >= len(msgs), 10)
    assert telemetry_count(influx) == 2001


def test_replaying_the_same_messages_adds_no_points(settings, influx, service):
    svc = service()
    msgs = normalized_messages(settings.mqtt.topic_root, 600)
    publish(settings.mqtt, msgs)
    assert wait_for(lambda: telemetry_count(influx) == 600, 30)
    publish(settings.mqtt, msgs)  # e.g. the gateway's store-and-forward re-sending
    assert wait_for(lambda: svc.metrics.written._value.get() >= 1200, 30)
    assert telemetry_count(influx) == 600


def test_malformed_messages_are_dead_lettered_and_stream_continues(settings, influx, service):
    svc = service()
    root = settings.mqtt.topic_root
    good = normalized_messages(root, 300)
    t = contract.normalized_topic(root, "depok", "air", "air-0")
    bad = [
        (t, b"{oops"),
        (t, b"[1,2]"),
        (t, b'{"v":9,"kind":"air"}'),
        (t, b'{"v":1,"kind":"rocket","city":"depok","device":"x","ts":1,"seq":1,"fields":{"a":1}}'),
        (t, b'{"v":1,"kind":"air","city":"depok","device":"x","ts":1,"seq":1,"fields":{"pm25":"high"}}'),
    ]
    publish(settings.mqtt, good[:150] + bad + good[150:])
    assert wait_for(lambda: telemetry_count(influx) == 300, 30), telemetry_count(influx)
    want = {"malformed_json": 1, "not_an_object": 1, "unsupported_version": 1, "unknown_kind": 1, "wrong_type": 1}
    got = lambda: {r: svc.metrics.deadlettered.labels(r)._value.get() for r in want}  # noqa: E731
    assert wait_for(lambda: got() == want, 10), got()
    # the dead letters come back through the dead-letter topic into the `deadletter` measurement
    def dl():
        s = influx.series('SELECT count("count") FROM "deadletter" GROUP BY "reason", "stage"')
        return {x.tags["reason"]: x.values[0][1] for x in s if x.tags["stage"] == "ingest"}
    assert wait_for(lambda: dl() == want, 20), dl()


def test_health_ready_metrics(settings, service):
    from kotacerdas.runtime import HealthServer

    svc = service()
    hs = HealthServer("127.0.0.1", 0, svc.registry, ready=svc.ready).start()
    try:
        base = f"http://127.0.0.1:{hs.port}"
        assert httpx.get(base + "/healthz").status_code == 200
        deadline = time.monotonic() + 10  # ready once the broker has acknowledged the subscriptions
        while (r := httpx.get(base + "/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["checks"] == {"influxdb": True, "mqtt": True}
        body = httpx.get(base + "/metrics").text
        for name in ("kc_ingest_received_total", "kc_ingest_written_total", "kc_ingest_spooled_total",
                     "kc_ingest_lag_seconds_bucket", "kc_ingest_batch_latency_seconds_bucket"):
            assert name in body
    finally:
        hs.stop()


def test_lines_refused_by_influxdb_are_dead_lettered_and_the_rest_kept(settings, influx, service):
    """Points older than the raw retention policy get a 400 partial write from InfluxDB."""
    svc = service(raw_retention="1d")
    root = settings.mqtt.topic_root
    good = normalized_messages(root, 200)
    old = normalized_messages(root, 3, t0_ms=int(time.time() * 1000) - 40 * 86_400_000)
    publish(settings.mqtt, good[:100] + old + good[100:])
    assert wait_for(lambda: svc.metrics.deadlettered.labels("write_rejected")._value.get() == 3, 30)
    assert wait_for(lambda: telemetry_count(influx) == 200, 10), telemetry_count(influx)

    def dl():
        return influx.scalar('SELECT count("count") FROM "deadletter" WHERE "reason" = \'write_rejected\'')
    assert wait_for(lambda: dl() == 3, 20), dl()
    detail = influx.scalar('SELECT last("detail") FROM "deadletter" WHERE "reason" = \'write_rejected\'')
    assert "retention" in detail


def test_device_status_pipeline_stats_and_schema(settings, influx, service):
    root = settings.mqtt.topic_root
    status = orjson.dumps({"v": 1, "device": "air-0", "kind": "air", "city": "depok", "district": "beji",
                           "state": "online", "stale": False, "last_seen": 123, "battery": 3.8, "fw": "1.2.0"})
    c = make_client(settings.mqtt)
    connect(c, settings.mqtt)
    c.publish(contract.devstatus_topic(root, "depok", "air", "air-0"), status, qos=1, retain=True).wait_for_publish(5)
    svc = service(stats_interval_s=0.5)  # retained status is delivered on subscribe
    try:
        assert wait_for(lambda: influx.scalar('SELECT last("online") FROM "device_status"') == 1, 15)
        s = influx.series('SELECT * FROM "device_status"')
        row = dict(zip(s[0].columns, s[0].values[-1]))
        assert (row["state"], row["stale"], row["last_seen_ms"], row["fw"]) == ("online", 0, 123, "1.2.0")
        publish(settings.mqtt, normalized_messages(root, 50))
        assert wait_for(lambda: (influx.scalar(
            'SELECT last("written") FROM "kc_pipeline" WHERE "service" = \'ingest\'') or 0) >= 50, 15)
        tags = influx.series('SHOW TAG VALUES FROM "kc_pipeline" WITH KEY = "instance"')
        assert tags[0].values[0][1] == svc.cfg.client_id
        rps = {r[0]: r for x in influx.series("SHOW RETENTION POLICIES") for r in x.values}
        assert rps["raw"][4] is True and rps["raw"][1] == "720h0m0s"
        assert {"agg_1m", "agg_1h"} <= set(rps)
        cqs = {r[0] for x in influx.series("SHOW CONTINUOUS QUERIES") if x.name == settings.influx.database
               for r in x.values}
        assert cqs == {f"cq_{k.measurement}_{i}" for k in CAT for i in ("1m", "1h")}
    finally:
        c.publish(contract.devstatus_topic(root, "depok", "air", "air-0"), b"", qos=1, retain=True).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()


def test_continuous_query_statement_aggregates_per_minute(settings, influx, service):
    """Run one CQ's SELECT ... INTO by hand (a backfill) to check what it produces."""
    from ingest import schema

    service()
    root = settings.mqtt.topic_root
    publish(settings.mqtt, normalized_messages(root, 300))
    assert wait_for(lambda: telemetry_count(influx) == 300, 30)
    _, stmt = schema.continuous_query(settings.influx.database, "raw", CAT["air"], "agg_1m", "1m")
    select = stmt.split(" BEGIN ", 1)[1].rsplit(" END", 1)[0]
    select = select.replace(" GROUP BY ", " WHERE time > now() - 3h GROUP BY ")
    influx.query(select)
    s = influx.series('SELECT * FROM "agg_1m"."air" WHERE "device" = \'air-0\'')
    row = dict(zip(s[0].columns, s[0].values[0]))
    pm25 = CAT["air"].field("pm25")
    assert row["pm25"] == row["pm25_min"] == row["pm25_max"] == pm25.quantise(pm25.typical)
    assert row["n"] >= 1 and row["district"] == "beji"
