"""Bad input through the running gateway: every refused message is counted with its reason, good ones still land.

Hypothesis makes the garbage (arbitrary bytes, mangled JSON documents, binary frames,
oversized payloads, injected topic segments); the contract says which reason each
one deserves; the real gateway must dead-letter exactly those, count them in
``kc_gateway_rejected_total`` and store every good reading published in between.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from kotacerdas import contract
from kotacerdas.contract import Rejection
from kotacerdas.mqtt import connect, make_client
from tests.reliability.harness import Service, kc, metric, require, service_env, wait_until
from tests.services import DeadLetters, start_all

pytestmark = pytest.mark.long

CITY, DEVICE = "depok", "bad-air-1"


def collect(strategy, n: int) -> list:
    out: list = []

    @hsettings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(x):
        out.append(x)

    gather()
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
docs = st.fixed_dictionaries({}, optional={k: json_values for k in ("v", "ts", "seq", "fields", "bat", "fw", "rssi")})


def test_garbage_is_dead_lettered_with_its_reason_and_good_data_still_lands(settings, influx, tmp_path):
    require("gateway", "ingest")
    root = settings.mqtt.topic_root
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=root)
    (tmp_path / "devices.json").write_text(json.dumps([{"device": DEVICE, "kind": "air", "city": CITY,
                                                        "district": "beji"}]))
    assert kc("gateway", "registry", "import", str(tmp_path / "devices.json"), env=env).returncode == 0

    topic = contract.telemetry_topic(root, CITY, "air", DEVICE)
    now = int(time.time() * 1000)
    bad: list[tuple[str, bytes]] = []
    bad += [(topic, b) for b in collect(st.binary(max_size=300), 60)]
    bad += [(topic, json.dumps(d, allow_nan=True).encode()) for d in collect(docs, 60)]
    bad += [(topic, p) for p in (b"\xff\xd8\xff\xe0JFIF", b"\x42\x4d\x00\x1c" + bytes(28), b"", b"[" * 3000,
                                 b"{" + b" " * 100_000 + b"}")]
    # topic segments the subscription still matches, so the gateway sees them
    for seg in ("Depok!", "a b", "..", "x" * 40, "é"):
        bad.append((f"{root}/v1/{seg}/air/{DEVICE}/telemetry", contract.encode_telemetry(now, 1, {"pm25": 5.0})))
    for seg in ("a.b", "x" * 70, "$x", "ü"):
        bad.append((f"{root}/v1/{CITY}/air/{seg}/telemetry", contract.encode_telemetry(now, 1, {"pm25": 5.0})))
    bad.append((f"{root}/v1/{CITY}/volcano/{DEVICE}/telemetry", contract.encode_telemetry(now, 1, {"pm25": 5.0})))
    expected = Counter()
    to_send = []
    for t, p in bad:
        r = contract.validate_telemetry(t, p, now, root=root)
        if isinstance(r, Rejection):  # the rare fuzz case that is valid is not garbage: leave it out
            expected[r.reason.value] += 1
            to_send.append((t, p))
    good = [(topic, contract.encode_telemetry(now - 60_000 + i * 100, i, {"pm25": 10.0 + i}, battery=3.9))
            for i in range(len(to_send))]

    dead = DeadLetters(settings.mqtt, contract.deadletter_subscription(root).replace("#", "gateway/#"))
    # both at once (imports overlap); nothing is published before both are ready
    ingest, gw = start_all(Service("ingest", ["ingest", "run"], env, tmp_path, "KC_INGEST__HTTP_PORT"),
                           Service("gateway", ["gateway", "run"], env, tmp_path, "KC_GATEWAY__HTTP_PORT"))
    try:
        pub = make_client(settings.mqtt)
        connect(pub, settings.mqtt)
        infos = []
        for (bt, bp), (gt, gp) in zip(to_send, good):  # garbage and good data interleaved
            infos.append(pub.publish(bt, bp, qos=1))
            infos.append(pub.publish(gt, gp, qos=1))
        for i in infos:
            i.wait_for_publish(30)
        n = sum(expected.values())
        port = env["KC_GATEWAY__HTTP_PORT"]
        wait_until(lambda: dead.total() >= n and metric(port, "kc_gateway_rejected_total") >= n, 60, 0.5)

        def stored() -> int:
            return int(influx.scalar(f"SELECT count(\"seq\") FROM \"air\" WHERE \"device\" = '{DEVICE}'") or 0)

        # the last message sent was good: once every good one is stored, the gateway has handled all
        # the input before it, so its counter and the dead letters are final (no settling sleep)
        wait_until(lambda: stored() == len(good), 60, 0.5)
        rejected_metric = metric(port, "kc_gateway_rejected_total")
        pub.loop_stop()
        pub.disconnect()
    finally:
        gw.stop()
        ingest.stop()
        dead.close()
    got = dead.counts()
    assert got == dict(expected), {"expected": dict(expected), "dead-lettered": got}
    assert rejected_metric == n, (rejected_metric, n)
    assert stored() == len(good)
    assert gw.proc.returncode == 0, "gateway did not stop cleanly after the garbage"


def test_ingest_dead_letters_garbage_on_the_normalised_topic(settings, influx, tmp_path):
    """Whatever reaches ingest's topic (a buggy or hostile publisher), ingest survives, refuses it with a reason
    on its dead-letter topic, and keeps storing the good messages around it."""
    require("ingest")
    root = settings.mqtt.topic_root
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=root)
    now = int(time.time() * 1000)
    norm_topic = contract.normalized_topic(root, CITY, "air", DEVICE)
    garbage = collect(st.binary(max_size=200), 40) + [b"", b"[" * 5000, b"null", b"[]", b'{"v":1}',
                                                       b'{"v":1,"fields":{"pm25":1e400},"ts":1,"seq":1}',
                                                       b'{"v":[1]}', b'{"v":1,"fields":{"pm25":1},"ts":1,"seq":1,'
                                                       b'"city":"c","kind":"air","device":"d","rx":1e400}']
    garbage = [g for g in garbage if isinstance(contract.decode_normalized(g), Rejection)]
    good = [contract.encode_normalized(contract.NormalizedReading(
        city=CITY, kind="air", device=DEVICE, ts_ms=now - 60_000 + i * 100, seq=i, fields={"pm25": 5.0 + i},
        district="beji", rx_ms=now)) for i in range(len(garbage))]
    dead = DeadLetters(settings.mqtt, contract.deadletter_subscription(root).replace("#", "ingest/#"))
    ingest = Service("ingest", ["ingest", "run"], env, tmp_path, "KC_INGEST__HTTP_PORT").start()
    try:
        pub = make_client(settings.mqtt)
        connect(pub, settings.mqtt)
        infos = []
        for g, ok in zip(garbage, good):
            infos.append(pub.publish(norm_topic, g, qos=1))
            infos.append(pub.publish(norm_topic, ok, qos=1))
        for i in infos:
            i.wait_for_publish(30)

        def stored() -> int:
            return int(influx.scalar(f"SELECT count(\"seq\") FROM \"air\" WHERE \"device\" = '{DEVICE}'") or 0)

        wait_until(lambda: stored() == len(good) and dead.total() >= len(garbage), 60, 0.5)
        pub.loop_stop()
        pub.disconnect()
        assert ingest.alive, ingest.log()[-2000:]
    finally:
        ingest.stop()
        dead.close()
    got = dead.counts()
    assert stored() == len(good)
    assert sum(got.values()) == len(garbage), got
    assert set(got) <= {r.value for r in contract.Reason}, got
