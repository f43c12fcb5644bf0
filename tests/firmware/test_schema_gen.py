from __future__ import annotations

import ast

from firmware import schema_gen
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue


def test_committed_schema_is_fresh() -> None:
    assert schema_gen.SCHEMA_PATH.read_text() == schema_gen.render(), (
        "firmware/device/kc_schema.py is stale: run `kotacerdas firmware schema`")


def test_schema_carries_catalogue_and_contract() -> None:
    ns: dict = {}
    exec(compile(schema_gen.render(), "kc_schema", "exec"), ns)
    cat = load_catalogue()
    assert set(ns["KINDS"]) == set(cat.kind_names)
    for k in cat:
        interval, battery, fields = ns["KINDS"][k.name]
        assert interval == k.report_interval_s and battery == k.battery
        assert tuple(f[0] for f in fields) == k.field_names
        for row, f in zip(fields, k.fields):
            assert row[1:4] == (f.lo, f.hi, f.resolution)
    assert ns["VERSION"] == contract.VERSION and ns["SEQ_MAX"] == contract.SEQ_MAX
    topic = ns["TOPIC"].format(root="r", city="c", kind="air", device="D", channel="telemetry")
    assert topic == contract.telemetry_topic("r", "c", "air", "D")
    # the update command's shape: the firmware checks what the gateway's rollout sends
    assert ns["COMMANDS"] == contract.COMMANDS and ns["UPDATE_ARGS"] == contract.UPDATE_ARGS
    assert (ns["UPDATE_MANIFEST"], ns["UPDATE_URL_MAX"], ns["SHA256_HEX_LEN"], ns["SIGNATURE_HEX_LEN"]) == (
        contract.UPDATE_MANIFEST, contract.UPDATE_URL_MAX, contract.SHA256_HEX_LEN, contract.SIGNATURE_HEX_LEN)


def test_schema_is_plain_micropython() -> None:
    tree = ast.parse(schema_gen.render())
    # only constant assignments: no imports, no calls (nothing MicroPython could lack)
    assert all(isinstance(n, ast.Assign) for n in tree.body)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Call, ast.Import, ast.ImportFrom))]


def test_decimals() -> None:
    assert [schema_gen.decimals(r) for r in (1.0, 10.0, 0.1, 0.01, 0.0625)] == [0, 0, 1, 2, 4]
