"""Bad input never crashes the gateway: every message gets exactly one outcome (forwarded or dead-lettered)."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from kotacerdas import contract

from gateway.registry import Registry
from gateway.service import Gateway
from tests.gateway.helpers import devices, unbatched

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({
        "v": st.sampled_from([1, 2, "1", None]), "ts": st.one_of(st.integers(), st.floats(), st.text(max_size=4)),
        "seq": st.integers(min_value=-5, max_value=2**33), "fields": json_values,
    }, optional={"bat": json_values, "fw": json_values, "rssi": json_values}).map(lambda d: json.dumps(d).encode()),
)
topics = st.sampled_from(["air/air-0", "air/air-1", "water/air-0", "air/ghost", "lava/air-0", "waste_bin/wastebin-0"])


def test_random_messages_each_get_exactly_one_outcome(settings):
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    gw = Gateway(settings)  # not connected: the batch step is what bad input reaches
    gw.reload_devices(force=True)
    root = settings.mqtt.topic_root
    try:
        @hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(st.tuples(topics, payloads), min_size=1, max_size=20))
        def check(batch):
            msgs = []
            for where, payload in batch:
                m = paho.MQTTMessage(topic=f"{root}/v1/depok/{where}/telemetry".encode())
                m.payload = payload
                msgs.append(m)
            gw.process_batch(msgs)
            rows = gw.store.peek(limit=10_000)  # emptied after every example, so these are this batch's
            # one outcome per message: a dead letter, or a reading (alone or in a batch of readings)
            norm = unbatched([(r.topic, r.payload) for r in rows if "/_platform/norm/" in r.topic])
            dead = [r for r in rows if "/_platform/deadletter/" in r.topic]
            assert len(norm) + len(dead) == len(batch)
            assert all(json.loads(r.payload)["v"] == 1 for r in dead) and all(d["v"] == 1 for _, d in norm)
            gw.store.delete(r.id for r in rows)

        check()
    finally:
        gw.store.close()
        gw.registry.close()


def test_a_valid_reading_among_garbage_is_not_lost(settings):
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    gw = Gateway(settings)
    gw.reload_devices(force=True)
    root = settings.mqtt.topic_root
    t = contract.telemetry_topic(root, "depok", "air", "air-0")
    msgs = []
    for p in [b"\xff\xfe", b"[]", contract.encode_telemetry(int(time.time() * 1000), 7, {"pm25": 8.0}),
                b'{"v":1,"ts":1,"seq":1,"fields":{"pm25":1e999}}', b"x" * 10_000]:
        m = paho.MQTTMessage(topic=t.encode())
        m.payload = p
        msgs.append(m)
    gw.process_batch(msgs)
    rows = gw.store.peek()
    norm = [d for _, d in unbatched([(r.topic, r.payload) for r in rows if "/norm/" in r.topic])]
    dead = sorted(r.topic.rsplit("/", 1)[1] for r in rows if "/deadletter/" in r.topic)
    assert [n["seq"] for n in norm] == [7]
    assert dead == ["not_an_object", "not_utf8", "oversized", "stale_timestamp"]
    gw.store.close()
    gw.registry.close()
