"""The rollout's pure core (waves, acks, births, timeouts, halt, persistence) and the update
command of the contract, which the firmware (kc_ota) checks with the same rules."""

from __future__ import annotations

import json

import pytest

from firmware.virtual import device_path
from gateway.rollout import Policy, Rollout
from gateway.rollout_service import new_rollout
from kotacerdas import contract

device_path()
import kc_ota  # type: ignore[import-not-found]  # noqa: E402

GOOD = {"url": "http://gw:18081/releases/air/1.2.0/", "version": "1.2.0", "sha256": "ab" * 32,
        "signature": "cd" * 64}
REL = {"kind": "air", "version": "1.2.0", "sha256": GOOD["sha256"], "signature": GOOD["signature"]}


def rollout(n: int, **policy: object) -> Rollout:
    r = new_rollout("t", REL, [(f"D{i}", "air", "depok") for i in range(n)], Policy.make(n, **policy))  # type: ignore[arg-type]
    r.url = GOOD["url"]
    return r


def online(fw: str) -> contract.DeviceStatus:
    st = contract.decode_status(json.dumps({"v": 1, "state": "online", "ts": 0, "fw": fw}).encode())
    assert isinstance(st, contract.DeviceStatus)
    return st


def ack(cid: str | None, ok: bool, detail: str) -> contract.Ack:
    a = contract.decode_ack(json.dumps({"v": 1, "id": cid, "ok": ok, "detail": detail}).encode())
    assert isinstance(a, contract.Ack)
    return a


def test_waves_wait_for_the_previous_wave_and_births_finish_devices() -> None:
    r = rollout(5, wave_percent=40)  # 2 per wave
    w1 = r.next_wave(0)
    assert [d.device for d in w1] == ["D0", "D1"] and r.next_wave(1) == []  # wave in flight
    rev = r.rev
    r.on_ack("D0", ack(w1[0].cmd_id, True, "staged 1.2.0 in slot a, rebooting"), 10)
    assert r.rev > rev  # every transition moves rev: the service persists on it
    assert r.by_device("D0").state == "staged"  # type: ignore[union-attr]
    r.on_status("D0", online("1.2.0"), 20)
    r.on_status("D1", online("1.0.0"), 20)  # old version: still waiting
    assert r.next_wave(30) == []
    r.on_ack("D1", ack(w1[1].cmd_id, True, "confirmed 1.2.0"), 40)
    assert [d.device for d in r.next_wave(50)] == ["D2", "D3"] and r.waves_sent == 2
    assert r.counts() == {"pending": 1, "sent": 2, "staged": 0, "done": 2, "failed": 0}


def test_failures_past_the_threshold_halt_and_timeouts_fail() -> None:
    r = rollout(4, wave=2, max_failures=1, timeout_s=60)
    w = r.next_wave(0)
    r.on_ack("D0", ack("another-command", False, "x"), 1)  # not this rollout's command: ignored
    assert r.failures() == 0 and r.events["acks_ignored"] == 1
    r.on_ack("D0", ack(w[0].cmd_id, False, "update failed: bad signature"), 2)
    assert r.halted is None  # 1 failure is allowed
    r.tick(60_000)
    assert r.by_device("D1").state == "sent"  # type: ignore[union-attr]
    r.tick(60_001)  # D1 silent past the timeout: second failure
    assert r.by_device("D1").state == "failed" and r.halted and "2 failed" in r.halted  # type: ignore[union-attr]
    assert r.next_wave(70_000) == [] and r.finished()
    assert r.counts()["pending"] == 2


def test_rollback_after_done_counts_as_failure_and_state_round_trips() -> None:
    r = rollout(2, wave=2, max_failures=0)
    w = r.next_wave(0)
    r.on_status("D0", online("1.2.0"), 5)
    assert r.by_device("D0").state == "done"  # type: ignore[union-attr]
    r.on_ack("D0", ack(w[0].cmd_id, False, "rolled back from 1.2.0"), 9)
    assert r.by_device("D0").state == "failed" and r.halted  # type: ignore[union-attr]
    again = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    assert again == r and not again.finished()  # D1 still in flight


def test_device_already_on_the_version_is_not_commanded() -> None:
    r = rollout(2, wave=1)
    r.on_status("D0", online("1.2.0"), 0)
    assert [d.device for d in r.next_wave(1)] == ["D1"]


def test_policy_make() -> None:
    assert Policy.make(10, wave_percent=25, max_failure_percent=10) == Policy(wave=3, max_failures=1)
    assert Policy.make(3).wave == 1 and Policy.make(3).max_failures == 0
    for bad in ({"wave": 0}, {"wave": 1, "wave_percent": 5}, {"max_failures": -1}, {"timeout_s": 0}):
        with pytest.raises(ValueError):
            Policy.make(3, **bad)  # type: ignore[arg-type]


def test_new_rollout_refuses_devices_of_another_kind() -> None:
    with pytest.raises(ValueError, match="not of kind"):
        new_rollout("t", REL, [("W1", "water", "depok")], Policy())


BAD_ARGS = [
    {**GOOD, "url": "https://gw/releases/"},  # only http (the signature is the trust)
    {**GOOD, "url": "http://gw/releases"},  # a directory ends in /
    {**GOOD, "url": "http://gw/" + "x" * 300 + "/"},
    {**GOOD, "version": ""},
    {**GOOD, "version": "v" * 33},
    {**GOOD, "sha256": "AB" * 32},  # lower-case hex only
    {**GOOD, "sha256": "ab" * 31},
    {**GOOD, "signature": "zz" * 64},
    {**GOOD, "extra": "x"},
    {k: v for k, v in GOOD.items() if k != "signature"},
    {**GOOD, "version": 120},
    "not an object",
]


def test_update_args_contract_and_firmware_agree() -> None:
    assert contract.validate_update_args(GOOD) == GOOD and kc_ota.check_args(GOOD) is None
    for args in BAD_ARGS:
        assert isinstance(contract.validate_update_args(args), contract.Rejection), args
        assert kc_ota.check_args(args) is not None, args


def test_encode_cmd_and_decode_ack() -> None:
    doc = json.loads(contract.encode_cmd("c1", "update", GOOD, 5))
    assert doc == {"v": 1, "id": "c1", "cmd": "update", "args": GOOD, "ts": 5}
    with pytest.raises(ValueError):
        contract.encode_cmd("c1", "update", {**GOOD, "sha256": "0"}, 5)
    with pytest.raises(ValueError):
        contract.encode_cmd("c1", "format_flash", {}, 5)
    for bad in (b"[]", b"{", b'{"v":1,"id":"x","ok":1}', b'{"v":1,"ok":true}'):
        assert isinstance(contract.decode_ack(bad), contract.Rejection), bad
    a = contract.decode_ack(b'{"v":1,"id":"x","ok":false,"detail":"' + b"d" * 500 + b'"}')
    assert isinstance(a, contract.Ack) and not a.ok and len(a.detail) == contract.ACK_DETAIL_MAX
