"""The alert schema lives in the contract: analytics' record matches it, consumers validate against it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from analytics.alerts import Alert
from kotacerdas import contract
from kotacerdas.errors import ContractError


def _alert(**kw: object) -> Alert:
    base = dict(alert_id="a-1", rule="bin_full", device="bin-1", department="waste_department",
                severity="warning", state="open", value=91.0, opened_ms=1, updated_ms=1, resolved_ms=None,
                acknowledged=False, ack_by=None, text_id="Penuh", text_en="Full", observed_ms=1_700_000_000_000)
    return Alert(**{**base, **kw})  # type: ignore[arg-type]


def test_analytics_alert_record_has_exactly_the_contract_fields() -> None:
    ours = {f.name for f in dataclasses.fields(Alert)} | {"observed_at"}  # observed_at: derived ISO time
    assert ours == {f.name for f in contract.ALERT_FIELDS}
    assert list(_alert().to_json()) == [f.name for f in contract.ALERT_FIELDS]


def test_alert_round_trip_through_the_contract() -> None:
    raw = contract.encode_alert(_alert(lat=-6.4, concentration=12).to_json())
    assert raw.startswith(b'{"v":1,')
    doc = contract.decode_alert(raw)
    assert isinstance(doc, dict) and doc["observed_at"] == "2023-11-14T22:13:20Z" and doc["concentration"] == 12


@pytest.mark.parametrize(("change", "reason"), [
    ({"surprise": 1}, contract.Reason.UNKNOWN_FIELD),
    ({"alert_id": None}, contract.Reason.MISSING_KEY),
    ({"value": "high"}, contract.Reason.WRONG_TYPE),
    ({"opened_ms": 1.5}, contract.Reason.WRONG_TYPE),
    ({"acknowledged": 1}, contract.Reason.WRONG_TYPE),
    ({"severity": "panic"}, contract.Reason.OUT_OF_RANGE),
    ({"state": "closed"}, contract.Reason.OUT_OF_RANGE),
])
def test_consumers_get_a_reason_for_a_bad_alert(change: dict, reason: contract.Reason) -> None:
    doc = {"v": 1, **_alert().to_json(), **change}
    got = contract.decode_alert(json.dumps(doc).encode())
    assert isinstance(got, contract.Rejection) and got.reason is reason
    with pytest.raises(ContractError):  # the producer refuses to send it at all
        contract.encode_alert({k: v for k, v in doc.items() if k != "v"})


def test_decode_refuses_non_alerts() -> None:
    for raw, reason in [(b"\xff", contract.Reason.NOT_UTF8), (b"[1]", contract.Reason.NOT_AN_OBJECT),
                        (b"{", contract.Reason.MALFORMED_JSON), (b'{"v":9}', contract.Reason.UNSUPPORTED_VERSION)]:
        got = contract.decode_alert(raw)
        assert isinstance(got, contract.Rejection) and got.reason is reason
