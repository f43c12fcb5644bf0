"""Pure parts of the gateway: normalisation decisions, dedup keys, lifecycle, the durable store."""

from __future__ import annotations

import json

from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Limits, Reason, Rejection

from gateway.core import dedup_key, normalise_telemetry, parse_status
from gateway.lifecycle import Lifecycle
from gateway.registry import Device
from gateway.store import Outgoing, Store

CAT = load_catalogue()
NOW = 1_795_441_731_961
DEVS = {"w1": Device("w1", "water", "depok", district="beji", lat=-6.3, lon=106.8, department="water_utility"),
        "gone": Device("gone", "water", "depok", status="decommissioned")}


def norm(topic: str, payload: bytes):
    return normalise_telemetry(topic, payload, NOW, root="kc", limits=Limits(), catalogue=CAT, lookup=DEVS.get)


def test_normalise_enriches_from_registry_and_stamps_receive_time():
    r = norm("kc/v1/depok/water/w1/telemetry", contract.encode_telemetry(NOW - 5000, 7, {"ph": 7.1}, battery=3.8))
    assert not isinstance(r, Rejection)
    assert (r.district, r.department, r.lat, r.lon, r.rx_ms, r.battery) == ("beji", "water_utility", -6.3, 106.8, NOW, 3.8)
    back = contract.decode_normalized(contract.encode_normalized(r))
    assert back.fields == {"ph": 7.1} and back.rx_ms == NOW


def test_registry_reasons():
    p = contract.encode_telemetry(NOW, 1, {"ph": 7.0})
    assert norm("kc/v1/depok/water/nobody/telemetry", p).reason == Reason.UNKNOWN_DEVICE
    assert norm("kc/v1/depok/water/gone/telemetry", p).reason == Reason.DECOMMISSIONED
    assert norm("kc/v1/depok/air/w1/telemetry", contract.encode_telemetry(NOW, 1, {"pm25": 3.0})).reason == Reason.WRONG_KIND
    assert norm("kc/v1/bogor/water/w1/telemetry", p).reason == Reason.BAD_TOPIC
    # contract validation runs first: a malformed message from an unknown device says what is wrong with it
    assert norm("kc/v1/depok/water/nobody/telemetry", b"{").reason == Reason.MALFORMED_JSON


def test_dedup_key_distinguishes_a_rebooted_device():
    a = norm("kc/v1/depok/water/w1/telemetry", contract.encode_telemetry(NOW - 60_000, 0, {"ph": 7.0}))
    b = norm("kc/v1/depok/water/w1/telemetry", contract.encode_telemetry(NOW, 0, {"ph": 7.0}))  # seq restarted
    assert dedup_key(a) != dedup_key(b)


def test_dedup_key_is_the_reading_identity_device_and_time():
    """Same ts, another seq: the same InfluxDB point, so the same identity (not stored twice)."""
    a = norm("kc/v1/depok/water/w1/telemetry", contract.encode_telemetry(NOW, 5, {"ph": 7.0}))
    b = norm("kc/v1/depok/water/w1/telemetry", contract.encode_telemetry(NOW, 6, {"ph": 7.1}))
    assert dedup_key(a) == dedup_key(b) == ("w1", NOW)


def test_status_parsing():
    st = parse_status("kc/v1/depok/water/w1/status", contract.encode_status("offline", NOW, reason="lwt"), root="kc",
                      limits=Limits(), catalogue=CAT, lookup=DEVS.get)
    assert (st.state, st.reason) == ("offline", "lwt")
    bad = parse_status("kc/v1/depok/water/w1/status", b'{"v":1,"state":"sleepy"}', root="kc", limits=Limits(),
                       catalogue=CAT, lookup=DEVS.get)
    assert bad.reason == Reason.WRONG_TYPE
    assert parse_status("kc/v1/depok/water/w1/status", b"", root="kc", limits=Limits(), catalogue=CAT,
                        lookup=DEVS.get) is None  # a cleared retained message


def test_lifecycle_online_stale_offline():
    lc = Lifecycle(3, lambda dev, kind: 60.0)
    s = lc.on_status("w1", "water", "depok", "beji", "online", NOW, "1.0")
    assert s is not None and s.state == "online" and s.last_seen == NOW
    assert lc.on_reading("w1", "water", "depok", "beji", NOW - 10, NOW + 1000, 3.7, "1.0") is None  # no visible change
    assert lc.sweep(NOW + 1000 + 180_000) == []  # exactly 3 intervals: not yet
    stale = lc.sweep(NOW + 1000 + 180_001)
    assert [x.device for x in stale] == ["w1"] and stale[0].stale
    assert lc.sweep(NOW + 1000 + 999_999) == []  # reported once
    back = lc.on_reading("w1", "water", "depok", "beji", NOW, NOW + 2_000_000, None, None)
    assert back is not None and not back.stale and back.battery == 3.7
    off = lc.on_status("w1", "water", "depok", "beji", "offline", NOW + 2_000_001, None)
    doc = json.loads(off.payload())
    assert doc == {"v": 1, "device": "w1", "kind": "water", "city": "depok", "district": "beji", "state": "offline",
                   "stale": False, "last_seen": NOW + 2_000_000, "battery": 3.7, "fw": "1.0"}


def test_store_dedup_and_outbox_survive_reopen_and_accept_out_of_order(tmp_path):
    st = Store(tmp_path / "q.sqlite")
    with st.transaction() as t:
        assert [t.first_time("d", s, 1000 + s) for s in (5, 3, 4)] == [True, True, True]  # out of order is fine
        assert t.first_time("d", 3, 1003) is False
        for i in range(3):
            t.queue(Outgoing(f"t/{i}", b"x%d" % i))
    st.close()
    st = Store(tmp_path / "q.sqlite")
    assert st.depth == 3 and [q.topic for q in st.peek()] == ["t/0", "t/1", "t/2"]
    with st.transaction() as t:
        assert t.first_time("d", 4, 1004) is False
    st.delete([st.peek()[0].id])
    assert st.depth == 2 and st.peek()[0].topic == "t/1"
    assert st.forget_before(1005) == 2 and st.seen_count() == 1
    # a failed batch leaves nothing behind
    try:
        with st.transaction() as t:
            t.first_time("d", 9, 9999)
            t.queue(Outgoing("t/x", b""))
            raise RuntimeError("crash mid-batch")
    except RuntimeError:
        pass
    assert st.depth == 2
    with st.transaction() as t:
        assert t.first_time("d", 9, 9999) is True
    st.close()


def test_a_replayed_retained_birth_does_not_make_a_silent_device_look_alive():
    lc = Lifecycle(3, lambda dev, kind: 60.0)
    lc.on_reading("w1", "water", "depok", "beji", NOW, NOW, None, None)
    assert [x.device for x in lc.sweep(NOW + 200_000)] == ["w1"]
    # gateway restarts; the broker replays the device's retained "online" from long ago
    s = lc.on_status("w1", "water", "depok", "beji", "online", NOW + 300_000, None, fresh=False)
    assert s is None or (s.last_seen == NOW and s.stale)
    assert lc.devices["w1"].stale and lc.devices["w1"].last_seen == NOW
    lc.on_status("w1", "water", "depok", "beji", "online", NOW + 400_000, None)  # a live birth does
    assert not lc.devices["w1"].stale and lc.devices["w1"].last_seen == NOW + 400_000
