"""The fast converter produces exactly what the shared line-protocol formatter would."""

from __future__ import annotations

import orjson
import pytest

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Reason, Rejection
from kotacerdas.lineprotocol import format_line
from ingest.convert import NS_PER_MS, Converter

CAT = load_catalogue()
TRICKY = ["plain", "with space", "a,b", "k=v", 'quo"te', "back\\slash", "tab\there", "új-ñ", "end\\"]


def reference_line(r: contract.NormalizedReading) -> str:
    kind = CAT[r.kind]
    fields: dict[str, object] = {k: float(v) for k, v in r.fields.items()}
    if r.battery is not None:
        fields["battery"] = float(r.battery)
    fields["seq"] = r.seq
    if r.fw is not None:
        fields["fw"] = r.fw
    if r.rssi is not None:
        fields["rssi"] = r.rssi
    if r.rx_ms:
        fields["gw_lag_ms"] = r.rx_ms - r.ts_ms
    tags = {"device": r.device, "city": r.city, "district": r.district or "unknown", "kind": r.kind}
    return format_line(kind.measurement, tags, fields, r.ts_ms * NS_PER_MS)


@pytest.mark.parametrize("text", TRICKY)
def test_same_escaping_as_shared_formatter(text):
    conv = Converter(CAT)
    for kind in CAT:
        r = contract.NormalizedReading(
            city=text, kind=kind.name, device=f"d{text}", ts_ms=1_700_000_000_123, seq=7,
            fields={f.name: f.typical for f in kind.fields}, battery=3.71, fw=f"fw {text}", rssi=-70,
            district=text, rx_ms=1_700_000_000_200,
        )
        line, ts = conv.telemetry(contract.encode_normalized(r))
        assert ts == r.ts_ms
        assert line == reference_line(r)
        # cached tag prefix gives the same result the second time
        assert conv.telemetry(contract.encode_normalized(r))[0] == line


def test_integer_field_values_are_written_as_floats():
    conv = Converter(CAT)
    r = contract.NormalizedReading(city="depok", kind="air", device="a1", ts_ms=1, seq=1, fields={"pm25": 12})
    line, _ = conv.telemetry(contract.encode_normalized(r))
    assert "pm25=12.0" in line and "seq=1i" in line and "battery" not in line and "gw_lag_ms" not in line


def _payload(**over):
    d = {"v": 1, "city": "depok", "kind": "air", "device": "a1", "ts": 1, "seq": 1, "fields": {"pm25": 1.0}}
    d.update(over)
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


@pytest.mark.parametrize("payload,reason", [
    (b"{nope", Reason.MALFORMED_JSON),
    (b'{"v":1,"fields":{"pm25":NaN}}', Reason.MALFORMED_JSON),
    (b"[]", Reason.NOT_AN_OBJECT),
    (_payload(v=2), Reason.UNSUPPORTED_VERSION),
    (_payload(v=True), Reason.UNSUPPORTED_VERSION),
    (_payload(ts=...), Reason.MISSING_KEY),
    (_payload(kind="rocket"), Reason.UNKNOWN_KIND),
    (_payload(fields={}), Reason.EMPTY_FIELDS),
    (_payload(fields={"ph": 7.0}), Reason.UNKNOWN_FIELD),
    (_payload(fields={"pm25": "x"}), Reason.WRONG_TYPE),
    (_payload(fields={"pm25": True}), Reason.WRONG_TYPE),
    (_payload(ts="1"), Reason.WRONG_TYPE),
    (_payload(seq=1.5), Reason.WRONG_TYPE),
    (_payload(device=""), Reason.WRONG_TYPE),
    (_payload(bat="x"), Reason.WRONG_TYPE),
    (_payload(fw=3), Reason.WRONG_TYPE),
    (_payload(rssi=1.5), Reason.WRONG_TYPE),
])
def test_rejections_carry_a_reason(payload, reason):
    r = Converter(CAT).telemetry(payload)
    assert isinstance(r, Rejection) and r.reason == reason, r
    # the shared decoder refuses the same payloads (its reason may differ, it knows no catalogue)
    if reason not in (Reason.UNKNOWN_KIND, Reason.UNKNOWN_FIELD):
        assert isinstance(contract.decode_normalized(payload), Rejection) or reason == Reason.WRONG_TYPE


def test_deadletter_and_device_status_lines():
    conv = Converter(CAT)
    rej = Rejection(Reason.OUT_OF_RANGE, 'pm25=5000 "too high"')
    p = contract.deadletter_payload("gateway", rej, "kc/v1/depok/air/a1/telemetry", b"x" * 10, 1_700_000_000_000)
    line = conv.deadletter(p, "kc/v1/_platform/deadletter/gateway/out_of_range")
    assert line.startswith("deadletter,reason=out_of_range,stage=gateway count=1i,detail=")
    assert '\\"too high\\"' in line and "size=10i" in line
    t = int(line.rsplit(" ", 1)[1])
    assert 1_700_000_000_000 * NS_PER_MS <= t < 1_700_000_000_001 * NS_PER_MS
    assert conv.deadletter(p, "x") == line  # deterministic: a replay overwrites itself
    st = orjson.dumps({"v": 1, "device": "a1", "kind": "air", "city": "depok", "district": "beji",
                       "state": "offline", "stale": True, "last_seen": 5, "battery": 3.6, "fw": "1.0"})
    line = conv.device_status(st, 1000)
    assert line == ('device_status,city=depok,device=a1,district=beji,kind=air state="offline",online=0i,'
                    f'stale=1i,last_seen_ms=5i,battery=3.6,fw="1.0" {1000 * NS_PER_MS}')
    assert isinstance(conv.device_status(b'{"state":"x"}', 1), Rejection)


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

_text = st.text(min_size=1, max_size=20)


@hsettings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([k.name for k in CAT]), city=_text, device=_text, district=st.text(max_size=12),
       fw=st.one_of(st.none(), st.text(max_size=32)), ts=st.integers(0, 2**41), seq=st.integers(0, 2**32 - 1),
       rssi=st.one_of(st.none(), st.integers(-130, 0)), data=st.data())
def test_fast_converter_matches_decode_normalized_and_format_line(kind, city, device, district, fw, ts, seq, rssi, data):
    fields = {f.name: data.draw(st.floats(f.lo, f.hi, allow_nan=False)) for f in CAT[kind].fields}
    r = contract.NormalizedReading(city=city, kind=kind, device=device, ts_ms=ts, seq=seq, fields=fields,
                                   battery=3.7, fw=fw, rssi=rssi, district=district, rx_ms=ts + 5)
    payload = contract.encode_normalized(r)
    ref = contract.decode_normalized(payload)
    assert not isinstance(ref, Rejection)
    line, got_ts = Converter(CAT).telemetry(payload)
    assert got_ts == ts
    assert line == reference_line(ref)
