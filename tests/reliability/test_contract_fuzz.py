"""Property-based tests of the wire contract: bad input is refused with a reason, never a crash.

Pure functions, no daemons: hypothesis drives arbitrary bytes, JSON documents and
topics through ``validate_telemetry`` / ``decode_normalized`` / the topic builders.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from kotacerdas import contract as c
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Limits, NormalizedReading, Reading, Reason, Rejection

CAT = load_catalogue()
NOW = int(time.time() * 1000)
ROOT = "kc"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = [k.name for k in CAT]
device_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")
cities = st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def good_topic(kind: str = "air", device: str = "air-001", city: str = "depok") -> str:
    return c.telemetry_topic(ROOT, city, kind, device)


def _check(result: object) -> None:
    """Every outcome is a Reading or a Rejection whose reason is a Reason member with a detail string."""
    assert isinstance(result, (Reading, Rejection)), type(result)
    if isinstance(result, Rejection):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.detail, str) and result.detail
        assert not result  # falsy, so `if result:` never mistakes a rejection for data


@FUZZ
@given(topic=st.text(max_size=120), payload=st.binary(max_size=600))
@example(topic=good_topic(), payload=b"\x00" * 10)
@example(topic=good_topic(), payload=b"[" * 5000)
@example(topic=good_topic(), payload=b'{"v":1,"ts":1e400,"seq":1,"fields":{"pm25":1}}')
def test_validate_never_raises_on_arbitrary_bytes_and_topics(topic, payload):
    _check(c.validate_telemetry(topic, payload, NOW, root=ROOT))


@FUZZ
@given(payload=st.binary(max_size=800))
def test_validate_arbitrary_bytes_on_a_good_topic(payload):
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    _check(r)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["v", "ts", "seq", "fields", "bat", "fw", "rssi", "x"]), json_values, max_size=8))
def test_validate_arbitrary_json_documents(doc):
    payload = json.dumps(doc, allow_nan=True).encode()
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    _check(r)


@st.composite
def good_messages(draw):
    kind = CAT[draw(st.sampled_from(KINDS))]
    names = draw(st.lists(st.sampled_from(kind.field_names), min_size=1, unique=True))
    fields = {n: draw(st.floats(kind.field(n).lo, kind.field(n).hi, allow_nan=False)) for n in names}
    b = CAT.battery
    doc = dict(
        ts_ms=draw(st.integers(NOW - 86_400_000, NOW + 60_000)),
        seq=draw(st.integers(0, c.SEQ_MAX)),
        fields=fields,
        battery=draw(st.none() | st.floats(b.lo, b.hi, allow_nan=False)),
        fw=draw(st.none() | st.from_regex(r"\A[0-9a-z.+-]{1,32}\Z")),
        rssi=draw(st.none() | st.integers(-120, 0)),
    )
    return kind.name, draw(device_ids), draw(cities), doc


@FUZZ
@given(msg=good_messages())
def test_good_payloads_round_trip(msg):
    kind, device, city, doc = msg
    topic = c.telemetry_topic(ROOT, city, kind, device)
    payload = c.encode_telemetry(doc["ts_ms"], doc["seq"], doc["fields"], battery=doc["battery"], fw=doc["fw"], rssi=doc["rssi"])
    r = c.validate_telemetry(topic, payload, NOW, root=ROOT)
    assert isinstance(r, Reading), r
    assert (r.city, r.kind, r.device, r.ts_ms, r.seq) == (city, kind, device, doc["ts_ms"], doc["seq"])
    assert r.fields == doc["fields"] and r.battery == doc["battery"] and r.fw == doc["fw"] and r.rssi == doc["rssi"]
    # and on through the gateway's normalised form
    n = NormalizedReading(**vars(r), district="beji", department="dlh", lat=-6.4, lon=106.8, rx_ms=NOW, extra_tags={"zone": "a b"})
    back = c.decode_normalized(c.encode_normalized(n))
    assert isinstance(back, NormalizedReading), back
    assert vars(back) == vars(n)


@FUZZ
@given(msg=good_messages(), key=st.sampled_from(["fw", "rssi", "bat"]), bad=json_values)
def test_optional_keys_of_wrong_type_are_refused_or_clean(msg, key, bad):
    """Whatever a device puts in an optional key, what passes is clean enough to store."""
    kind, device, city, doc = msg
    raw = json.loads(c.encode_telemetry(doc["ts_ms"], doc["seq"], doc["fields"]))
    raw[key] = bad
    r = c.validate_telemetry(c.telemetry_topic(ROOT, city, kind, device), json.dumps(raw, allow_nan=True).encode(), NOW, root=ROOT)
    _check(r)
    if isinstance(r, Reading):
        if r.fw is not None:
            assert isinstance(r.fw, str) and r.fw.isprintable() and len(r.fw) <= 32
            r.fw.encode("utf-8")  # storable as an InfluxDB string
        if r.rssi is not None:
            assert isinstance(r.rssi, int) and -2**63 < r.rssi < 2**63  # fits an InfluxDB integer
        if r.battery is not None:
            assert math.isfinite(r.battery)


def test_lone_surrogate_firmware_string_is_refused():
    """json.loads accepts "\\ud800"; such a string cannot be encoded for InfluxDB, so the contract refuses it."""
    payload = b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":5},"fw":"\\ud800"}' % NOW
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    assert isinstance(r, Rejection) and r.reason is Reason.WRONG_TYPE


def test_rssi_beyond_int64_is_refused():
    payload = b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":5},"rssi":%d}' % (NOW, 10**30)
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    assert isinstance(r, Rejection) and r.reason in (Reason.WRONG_TYPE, Reason.OUT_OF_RANGE)


# ---------------------------------------------------------------- normalised payloads (gateway -> ingest)


@FUZZ
@given(payload=st.binary(max_size=400))
@example(payload=b"[" * 100_000)
@example(payload=b'{"v":1,"fields":{"a":1},"ts":1,"seq":1,"city":"c","kind":"air","device":"d","rx":1e400}')
def test_decode_normalized_never_raises_on_bytes(payload):
    _check(c.decode_normalized(payload))


NORM_KEYS = ["v", "city", "kind", "device", "ts", "seq", "fields", "bat", "fw", "rssi", "district", "department", "lat", "lon", "rx", "tags"]


@st.composite
def mangled_normalized(draw):
    base = json.loads(c.encode_normalized(NormalizedReading(
        city="depok", kind="air", device="air-1", ts_ms=NOW, seq=1, fields={"pm25": 5.0}, battery=3.9, fw="1",
        rssi=-60, district="beji", department="dlh", lat=-6.4, lon=106.8, rx_ms=NOW, extra_tags={"zone": "a"},
    )))
    for key in draw(st.lists(st.sampled_from(NORM_KEYS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            base[key] = draw(json_values)
        else:
            base.pop(key)
    return json.dumps(base, allow_nan=True).encode()


@FUZZ
@given(payload=mangled_normalized())
def test_decode_normalized_refuses_or_returns_storable(payload):
    """What ingest gets from decode_normalized can always be written: right types, finite, int64-safe."""
    r = c.decode_normalized(payload)
    _check(r)
    if isinstance(r, NormalizedReading):
        assert all(isinstance(x, str) for x in (r.city, r.kind, r.device, r.district, r.department))
        assert isinstance(r.ts_ms, int) and not isinstance(r.ts_ms, bool) and 0 <= r.ts_ms < 2**63 // 10**6
        assert isinstance(r.seq, int) and not isinstance(r.seq, bool) and 0 <= r.seq <= c.SEQ_MAX
        assert r.fields and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in r.fields.values())
        assert r.battery is None or (isinstance(r.battery, (int, float)) and not isinstance(r.battery, bool) and math.isfinite(r.battery))
        assert r.fw is None or isinstance(r.fw, str)
        assert r.rssi is None or (isinstance(r.rssi, int) and not isinstance(r.rssi, bool) and abs(r.rssi) < 2**63)
        for v in (r.lat, r.lon):
            assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        assert isinstance(r.rx_ms, int) and abs(r.rx_ms) < 2**63
        assert isinstance(r.extra_tags, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in r.extra_tags.items())


# ---------------------------------------------------------------- oversized and binary payloads


@pytest.mark.parametrize("size", [4097, 65_536, 1_000_000])
def test_oversized_payloads_refused_before_parsing(size):
    payload = b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":5}' % NOW + b" " * size + b"}"
    t0 = time.perf_counter()
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    assert isinstance(r, Rejection) and r.reason is Reason.OVERSIZED
    assert time.perf_counter() - t0 < 0.05  # refused on length, not after a parse


def test_limit_from_settings_is_honoured():
    lim = Limits(max_payload_bytes=64)
    payload = c.encode_telemetry(NOW, 1, {"pm25": 5.0}, battery=3.9, fw="1.0.0-long-build-tag")
    assert len(payload) > 64
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT, limits=lim)
    assert isinstance(r, Rejection) and r.reason is Reason.OVERSIZED


@pytest.mark.parametrize("payload,reason", [
    (b"\xff\xd8\xff\xe0JFIF", Reason.NOT_UTF8),  # a JPEG header
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, Reason.NOT_UTF8),  # gzip
    (b"\x42\x4d\x00\x1c" + bytes(28), Reason.MALFORMED_JSON),  # a raw PMS5003 frame forwarded by mistake
    (b"\xef\xbb\xbf{}", Reason.MALFORMED_JSON),  # UTF-8 BOM
    (b"", Reason.MALFORMED_JSON),
    (b"\x00{}", Reason.MALFORMED_JSON),
])
def test_binary_payloads_refused_with_reason(payload, reason):
    r = c.validate_telemetry(good_topic(), payload, NOW, root=ROOT)
    assert isinstance(r, Rejection) and r.reason is reason, r


# ---------------------------------------------------------------- topic injection

INJECTIONS = ["+", "#", "..", ".", "/", "a/b", "a+b", "a#", "$SYS", "air-001/../x", "a b", "a\x00b", "é", "日本",
              "x" * 65, "x" * 10_000, "", "-lead", "a\nb", "%u", "${device}", "a\\b", "💧"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("builder", [c.telemetry_topic, c.status_topic, c.config_topic, c.cmd_topic])
def test_topic_builders_refuse_injection_in_device(builder, bad):
    with pytest.raises(ValueError):
        builder(ROOT, "depok", "air", bad)


@pytest.mark.parametrize("bad", INJECTIONS + ["Depok", "1city", "x" * 33])
def test_topic_builders_refuse_injection_in_city(bad):
    with pytest.raises(ValueError):
        c.telemetry_topic(ROOT, bad, "air", "air-001")


@pytest.mark.parametrize("bad", INJECTIONS)
def test_topic_builders_refuse_injection_in_kind_and_root(bad):
    with pytest.raises(ValueError):
        c.telemetry_topic(ROOT, "depok", bad, "air-001")
    with pytest.raises(ValueError):
        c.telemetry_topic(bad, "depok", "air", "air-001")


@pytest.mark.parametrize("bad", INJECTIONS)
def test_parse_device_topic_refuses_injected_device_and_city(bad):
    for topic in (f"{ROOT}/v1/depok/air/{bad}/telemetry", f"{ROOT}/v1/{bad}/air/air-001/telemetry"):
        r = c.parse_device_topic(topic, ROOT)
        assert isinstance(r, Rejection) and r.reason is Reason.BAD_TOPIC, (topic, r)
        v = c.validate_telemetry(topic, c.encode_telemetry(NOW, 1, {"pm25": 5.0}), NOW, root=ROOT)
        assert isinstance(v, Rejection) and v.reason is Reason.BAD_TOPIC


@FUZZ
@given(device=st.text(max_size=80), city=st.text(max_size=40), kind=st.text(max_size=40))
def test_builder_and_parser_agree(device, city, kind):
    """Whatever a builder accepts, the parser reads back unchanged; whatever it refuses never yields a wildcard topic."""
    try:
        topic = c.telemetry_topic(ROOT, city, kind, device)
    except ValueError:
        return
    assert not any(ch in topic for ch in "+#\x00") and ".." not in topic
    assert topic.count("/") == 5
    p = c.parse_device_topic(topic, ROOT)
    assert isinstance(p, c.DeviceTopic) and (p.city, p.kind, p.device, p.channel) == (city, kind, device, "telemetry")


@FUZZ
@given(topic=st.text(alphabet=st.sampled_from(list("kcv1/+#.a-_ é\x00")), max_size=60))
def test_parser_never_accepts_wildcards(topic):
    p = c.parse_device_topic(topic, ROOT)
    if isinstance(p, c.DeviceTopic):
        assert not any(ch in p.city + p.device for ch in "+#/.\x00 ")


# ---------------------------------------------------------------- batch validator == reference validator


def _same(a: object, b: object) -> bool:
    return vars(a) == vars(b) if isinstance(a, Reading) and isinstance(b, Reading) else a == b


@FUZZ
@given(msg=good_messages(), key=st.sampled_from(["v", "ts", "seq", "fields", "bat", "fw", "rssi", "x"]),
       bad=json_values, drop=st.booleans())
def test_batch_validator_answers_like_the_reference(msg, key, bad, drop):
    """TelemetryValidator (the gateway's hot path) must return exactly what validate_telemetry returns:
    a good message, the same message with one key changed or removed, and arbitrary bytes/topics."""
    kind, device, city, doc = msg
    topic = c.telemetry_topic(ROOT, city, kind, device)
    good = c.encode_telemetry(doc["ts_ms"], doc["seq"], doc["fields"], battery=doc["battery"], fw=doc["fw"], rssi=doc["rssi"])
    raw = json.loads(good)
    if drop:
        raw.pop(key, None)
    else:
        raw[key] = bad
    bent = json.dumps(raw, allow_nan=True).encode()
    items = [(topic, good), (topic, bent), (topic, b"\xff" + good), (topic.replace("/v1/", "/v2/"), good),
             (topic.rsplit("/", 1)[0] + "/telemtry", good), (topic, good + b" " * 5000)]
    v = c.TelemetryValidator(root=ROOT, catalogue=CAT)
    for _ in range(2):  # cold and warm topic cache
        got = v.validate_many(items, NOW)
        want = [c.validate_telemetry(t, p, NOW, root=ROOT, catalogue=CAT) for t, p in items]
        assert all(_same(a, b) for a, b in zip(got, want)), (got, want)


@pytest.mark.parametrize("payload", [
    b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":NaN}}' % NOW, b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":1e400}}' % NOW,
    b'{"v":true,"ts":%d,"seq":1,"fields":{"pm25":1}}' % NOW, b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":true}}' % NOW,
    b'{"v":1,"ts":%d,"seq":99999999999999999999999,"fields":{"pm25":1}}' % NOW,
    b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":1},"fw":"\\ud800"}' % NOW,
    b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":1},"bat":null,"fw":null,"rssi":null}' % NOW,
    b'{"v":1,"ts":%d,"seq":1,"fields":{"pm25":1,"pm25":2}}' % NOW, b"[]", b"",
])
def test_batch_validator_edge_cases(payload):
    v = c.TelemetryValidator(root=ROOT, catalogue=CAT)
    assert _same(v.validate_many([(good_topic(), payload)], NOW)[0],
                 c.validate_telemetry(good_topic(), payload, NOW, root=ROOT, catalogue=CAT))
