import json
import time

import pytest

from kotacerdas import contract as c
from kotacerdas.contract import Limits, Reason, Rejection

NOW = int(time.time() * 1000)
TOPIC = c.telemetry_topic("kc", "depok", "air", "air-001")


def good(**over):
    doc = {"v": 1, "ts": NOW, "seq": 7, "fields": {"pm25": 35.0, "co2": 450}, "bat": 3.9, "fw": "1.2.0"}
    doc.update(over)
    return json.dumps(doc).encode()


def test_good_payload_accepted():
    r = c.validate_telemetry(TOPIC, good(), NOW)
    assert isinstance(r, c.Reading)
    assert (r.city, r.kind, r.device, r.seq, r.ts_ms) == ("depok", "air", "air-001", 7, NOW)
    assert r.fields == {"pm25": 35.0, "co2": 450.0} and r.battery == 3.9 and r.fw == "1.2.0"


def test_encode_round_trip():
    p = c.encode_telemetry(NOW, 3, {"ph": 7.1}, battery=None, fw="x")
    r = c.validate_telemetry(c.telemetry_topic("kc", "depok", "water", "w1"), p, NOW)
    assert isinstance(r, c.Reading) and r.fields == {"ph": 7.1}


CASES = [
    (TOPIC, b"x" * 5000, Reason.OVERSIZED),
    ("kc/v1/depok/air/air-001", good(), Reason.BAD_TOPIC),
    ("other/v1/depok/air/air-001/telemetry", good(), Reason.BAD_TOPIC),
    ("kc/v2/depok/air/air-001/telemetry", good(), Reason.UNSUPPORTED_VERSION),
    ("kc/v1/Depok!/air/air-001/telemetry", good(), Reason.BAD_TOPIC),
    ("kc/v1/depok/air/../telemetry", good(), Reason.BAD_TOPIC),
    ("kc/v1/depok/air/air-001/status", good(), Reason.BAD_TOPIC),
    ("kc/v1/depok/volcano/v-1/telemetry", good(), Reason.UNKNOWN_KIND),
    (TOPIC, b"\xff\xfe{}", Reason.NOT_UTF8),
    (TOPIC, b"{not json", Reason.MALFORMED_JSON),
    (TOPIC, b"[1,2,3]", Reason.NOT_AN_OBJECT),
    (TOPIC, json.dumps({"v": 1, "ts": NOW, "seq": 1}).encode(), Reason.MISSING_KEY),
    (TOPIC, good(v=2), Reason.UNSUPPORTED_VERSION),
    (TOPIC, good(v=True), Reason.UNSUPPORTED_VERSION),
    (TOPIC, good(ts="yesterday"), Reason.WRONG_TYPE),
    (TOPIC, good(ts=float(NOW)), Reason.WRONG_TYPE),
    (TOPIC, good(seq=-1), Reason.WRONG_TYPE),
    (TOPIC, good(seq=2**32), Reason.WRONG_TYPE),
    (TOPIC, good(ts=NOW + 3_600_000), Reason.FUTURE_TIMESTAMP),
    (TOPIC, good(ts=NOW - 30 * 86_400_000), Reason.STALE_TIMESTAMP),
    (TOPIC, good(fields=[1, 2]), Reason.WRONG_TYPE),
    (TOPIC, good(fields={}), Reason.EMPTY_FIELDS),
    (TOPIC, good(fields={"ph": 7.0}), Reason.UNKNOWN_FIELD),
    (TOPIC, good(fields={"pm25": "35"}), Reason.WRONG_TYPE),
    (TOPIC, good(fields={"pm25": True}), Reason.WRONG_TYPE),
    (TOPIC, good(fields={"pm25": None}), Reason.WRONG_TYPE),
    (TOPIC, b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":NaN}}' % NOW, Reason.NOT_FINITE),
    (TOPIC, b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":Infinity}}' % NOW, Reason.NOT_FINITE),
    (TOPIC, good(fields={"pm25": -1.0}), Reason.OUT_OF_RANGE),
    (TOPIC, good(fields={"humidity": 101}), Reason.OUT_OF_RANGE),
    (TOPIC, good(bat="full"), Reason.WRONG_TYPE),
    (TOPIC, good(bat=9.0), Reason.OUT_OF_RANGE),
    (TOPIC, good(fw=123), Reason.WRONG_TYPE),
    (TOPIC, good(fw="x" * 40), Reason.WRONG_TYPE),
    (TOPIC, good(rssi="strong"), Reason.WRONG_TYPE),
]


@pytest.mark.parametrize("topic,payload,reason", CASES, ids=[f"{i}-{r.value}" for i, (_, _, r) in enumerate(CASES)])
def test_every_rejection_has_its_reason(topic, payload, reason):
    r = c.validate_telemetry(topic, payload, NOW)
    assert isinstance(r, Rejection), r
    assert r.reason is reason
    assert r.detail  # a human-readable explanation, never empty
    assert not r


def test_limits_are_configurable():
    small = Limits(max_payload_bytes=50, max_future_ms=0, max_age_ms=1000)
    assert c.validate_telemetry(TOPIC, good(), NOW, limits=small).reason is Reason.OVERSIZED
    p = c.encode_telemetry(NOW - 2000, 1, {"pm25": 1})
    assert c.validate_telemetry(TOPIC, p, NOW, limits=Limits(max_age_ms=1000)).reason is Reason.STALE_TIMESTAMP


def test_topic_builders_refuse_unsafe_segments():
    for bad in ["+", "#", "a/b", "..", "x" * 65, "", "ünï"]:
        with pytest.raises(ValueError):
            c.telemetry_topic("kc", "depok", "air", bad)
    with pytest.raises(ValueError):
        c.telemetry_topic("kc", "_platform", "air", "a1")
    with pytest.raises(ValueError):
        c.telemetry_topic("k/c", "depok", "air", "a1")


def test_platform_topics_cannot_collide_with_device_topics():
    norm = c.normalized_topic("kc", "depok", "air", "a1")
    assert isinstance(c.parse_device_topic(norm, "kc"), Rejection)
    assert c.normalized_subscription("kc", "ingest") == "$share/ingest/kc/v1/_platform/norm/+/+/+"
    assert c.device_subscription("kc", "telemetry") == "kc/v1/+/+/+/telemetry"
    assert c.deadletter_topic("kc", "gateway", Reason.OVERSIZED).endswith("/deadletter/gateway/oversized")


def test_normalized_round_trip_and_refusals():
    n = c.NormalizedReading(
        city="depok", kind="air", device="a1", ts_ms=NOW, seq=1, fields={"pm25": 3.0}, battery=4.0,
        fw="1", district="beji", department="environment_agency", lat=-6.4, lon=106.8, rx_ms=NOW + 5,
    )
    back = c.decode_normalized(c.encode_normalized(n))
    assert back == n
    assert c.decode_normalized(b"nope").reason is Reason.MALFORMED_JSON
    assert c.decode_normalized(b'{"v":1,"fields":{}}').reason is Reason.EMPTY_FIELDS
    assert c.decode_normalized(b'{"v":1,"fields":{"a":"x"},"ts":1,"seq":1}').reason is Reason.WRONG_TYPE
    assert c.decode_normalized(b'{"v":1,"fields":{"a":1}}').reason is Reason.MISSING_KEY


def test_deadletter_payload_carries_reason_and_truncated_raw():
    rej = Rejection(Reason.OVERSIZED, "too big")
    doc = json.loads(c.deadletter_payload("gateway", rej, TOPIC, b"y" * 5000, NOW, keep_bytes=100))
    assert doc["reason"] == "oversized" and doc["size"] == 5000 and doc["truncated"] is True
    assert doc["stage"] == "gateway" and doc["topic"] == TOPIC


def test_a_batch_over_a_packet_limit_is_cut_in_order_and_a_single_reading_is_left_whole():
    docs = [json.loads(c.encode_normalized(_norm(f"air-{i}", 1_700_000_000_000 + i))) for i in range(37)]
    body = c.encode_normalized_batch(docs)
    topic = c.normalized_batch_topic("kc", "depok", "air")
    assert c.split_normalized_batch(body, len(body)) == [body]
    limit = len(body) // 5
    pieces = c.split_normalized_batch(body, limit)
    assert all(len(p) <= limit for p in pieces) and 5 <= len(pieces) <= 16
    assert [r for p in pieces for r in c.decode_normalized_batch(topic, p)] == c.decode_normalized_batch(topic, body)
    one = c.encode_normalized_batch(docs[:1])
    assert c.split_normalized_batch(one, 10) == [one]  # cannot be cut: the caller decides
    assert c.split_normalized_batch(b"not json" * 10, 10) == [b"not json" * 10]


def test_status_payload():
    assert json.loads(c.encode_status("offline", NOW, reason="lwt"))["state"] == "offline"
    with pytest.raises(ValueError):
        c.encode_status("sleepy", NOW)


def _norm(device: str, ts: int, city: str = "depok", kind: str = "air") -> c.NormalizedReading:
    return c.NormalizedReading(city=city, kind=kind, device=device, ts_ms=ts, seq=ts % 100, fields={"pm25": 5.0},
                               battery=3.9, district="beji", rx_ms=ts + 5)


def test_normalized_batch_round_trip_count_head_and_refusals():
    rs = [_norm(f"air-{i}", 1_700_000_000_000 + i) for i in range(3)]
    docs = [json.loads(c.encode_normalized(r)) for r in rs]
    topic = c.normalized_batch_topic("kc", "depok", "air")
    body = c.encode_normalized_batch(docs)
    assert c.is_normalized_batch_topic(topic) and not c.is_normalized_batch_topic(
        c.normalized_topic("kc", "depok", "air", "air-0"))
    assert c.normalized_batch_count(body) == 3
    assert c.normalized_batch_count(b'{"v":1,"device":"x"}') == 1
    assert c.decode_normalized_batch(topic, body) == rs
    # a reading of another kind is refused alone; a count that lies refuses the whole message
    odd = json.loads(c.encode_normalized(_norm("water-1", 1_700_000_000_000, kind="water")))
    out = c.decode_normalized_batch(topic, c.encode_normalized_batch([docs[0], odd]))
    assert out[0] == rs[0] and out[1].reason is Reason.BAD_TOPIC
    lie = c.decode_normalized_batch(topic, json.dumps({"v": 1, "n": 5, "readings": docs}).encode())
    assert isinstance(lie, Rejection) and lie.reason is Reason.WRONG_TYPE
    assert c.decode_normalized_batch(topic, b'{"v":2,"n":0,"readings":[]}').reason is Reason.UNSUPPORTED_VERSION
    assert c.decode_normalized_batch(c.normalized_topic("kc", "depok", "air", "a"), body).reason is Reason.BAD_TOPIC
