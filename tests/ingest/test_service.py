"""The ingest service in-process against the real broker and the real InfluxDB."""

from __future__ import annotations

import httpx
import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
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
    assert svc.metrics.written._value.get() >= n
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
    from kotacerdas.observability import HealthServer

    svc = service()
    hs = HealthServer("127.0.0.1", 0, svc.registry, ready=svc.ready).start()
    try:
        base = f"http://127.0.0.1:{hs.port}"
        assert httpx.get(base + "/healthz").status_code == 200
        r = httpx.get(base + "/readyz")
        assert r.status_code == 200 and r.json()["checks"] == {"influxdb": True, "mqtt": True}
        body = httpx.get(base + "/metrics").text
        for name in ("kc_ingest_received_total", "kc_ingest_written_total", "kc_ingest_spooled_total",
                     "kc_ingest_lag_seconds_bucket", "kc_ingest_batch_latency_seconds_bucket"):
            assert name in body
    finally:
        hs.stop()
