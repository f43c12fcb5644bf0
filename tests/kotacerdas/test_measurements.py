"""One schema per InfluxDB measurement: the encoder refuses strays, coerces types, and every
hand-built writer (ingest's converter) and the synthetic day stay inside the schemas."""

from __future__ import annotations

import re

import orjson
import pytest

from tests.dashboards import synthetic_day as synthetic
from ingest.convert import Converter
from kotacerdas import contract
from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Reason, Rejection

CAT = load_catalogue()
BY_NAME = {m.name: m for m in M.ALL} | {k.measurement: M.raw(k) for k in CAT}

# a line of plain identifiers (no escapes): measurement,tags fields time
_LINE = re.compile(r"^(?P<m>[^, ]+)(?P<tags>(?:,[^ ]+)?) (?P<fields>.+?) (?P<ts>\d+)$")


def _kind_of(value: str) -> str:
    if value.startswith('"'):
        return "str"
    return "int" if value.endswith("i") and value[:-1].lstrip("-").isdigit() else "float"


def check(line: str) -> None:
    m = _LINE.match(line)
    assert m, line
    meas = BY_NAME[m["m"]]
    tags = {kv.split("=", 1)[0] for kv in m["tags"].lstrip(",").split(",") if kv}
    assert tags <= set(meas.tags), (line, tags - set(meas.tags))
    for kv in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,]+)', m["fields"]):
        assert kv[0] in meas.fields, (line, kv[0])
        assert _kind_of(kv[1]) == meas.fields[kv[0]], (line, kv)


def test_unknown_tag_or_field_is_refused() -> None:
    with pytest.raises(M.SchemaError, match="unknown tag"):
        M.BIN_FORECAST.line({"city": "depok", "bin": "x"}, {"fill": 1.0}, 1)
    with pytest.raises(M.SchemaError, match="unknown field"):
        M.BIN_FORECAST.line({"city": "depok"}, {"fil": 1.0}, 1)


def test_values_are_coerced_to_the_declared_type() -> None:
    line = M.WATER_COMPLIANCE.line({"device": "w-1", "parameter": "ph"},
                                   {"value": 7, "limit_lo": 6.5, "limit_hi": 8.5, "compliant": True}, 5)
    assert line == "water_compliance,device=w-1,parameter=ph value=7.0,limit_lo=6.5,limit_hi=8.5,compliant=1i 5"
    assert M.ALERTS.line({"rule": "r"}, {"value": float("nan"), "state": None}) is None  # nothing storable


def test_raw_schema_follows_the_catalogue() -> None:
    for k in CAT:
        raw = M.raw(k)
        assert raw.name == k.measurement and set(k.field_names) <= set(raw.fields)
        assert set(M.RAW_META_FIELDS) <= set(raw.fields)


def test_ingest_converter_writes_inside_the_schemas() -> None:
    conv = Converter(CAT)
    for k in CAT:
        r = contract.NormalizedReading(city="depok", kind=k.name, device="d-1", ts_ms=1_700_000_000_000, seq=3,
                                       fields={f.name: f.quantise(f.typical) for f in k.fields}, battery=3.9,
                                       fw="1.2.0", rssi=-61, district="beji", department=k.department,
                                       rx_ms=1_700_000_000_040)
        out = conv.telemetry(contract.encode_normalized(r))
        assert isinstance(out, tuple)
        check(out[0])
    dl = contract.deadletter_payload("gateway", Rejection(Reason.OUT_OF_RANGE, "pm25 9999"), "kc/x", b"{}", 5)
    check(str(conv.deadletter(dl, "kc/v1/_platform/deadletter/gateway/out_of_range")))
    status = orjson.dumps({"v": 1, "device": "a", "kind": "air", "city": "depok", "district": "beji",
                           "state": "online", "stale": False, "last_seen": 1, "battery": 3.8, "fw": "1"})
    check(str(conv.device_status(status, 9)))


def test_synthetic_day_writes_inside_the_schemas() -> None:
    lines, _ = synthetic.generate(1_700_000_000_000, hours=2.0, per_kind=2)
    names = set()
    for ln in lines:
        if " detail=" in ln or "text_id=" in ln:  # free text with spaces: only the measurement is checked
            assert ln.split(",", 1)[0] in BY_NAME
            continue
        check(ln)
        names.add(ln.split(",", 1)[0])
    # qc_episode: written by analytics only (tests/analytics/test_episodes.py)
    assert {m.name for m in M.ALL} - {"deadletter", "alerts", "qc_episode"} <= names
