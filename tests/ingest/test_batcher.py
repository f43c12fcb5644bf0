"""The batcher (bounded buffer, batch cuts) and the pure batch conversion, without broker or database."""

from __future__ import annotations

import threading

import orjson

from kotacerdas import contract
from kotacerdas.contract import Reason
from kotacerdas.settings import Settings
from ingest.batcher import Batcher, convert_batch
from ingest.convert import Converter
from ingest.service import routes, subscriptions
from ingest.source import Msg
from tests.ingest.helpers import CAT, normalized_messages

ROOT = "kc"


def _msgs(pairs: list[tuple[str, bytes]], gen: int = 1) -> list[Msg]:
    return [Msg(gen, i + 1, 1, t, p) for i, (t, p) in enumerate(pairs)]


def test_convert_batch_routes_each_kind_of_message_and_keeps_owners_aligned() -> None:
    tel = normalized_messages(ROOT, 6)
    status = (contract.devstatus_topic(ROOT, "depok", "air", "air-0"),
              orjson.dumps({"v": 1, "device": "air-0", "kind": "air", "city": "depok", "district": "beji",
                            "state": "online", "stale": False, "last_seen": 1, "battery": 3.8, "fw": "1"}))
    rej = contract.Rejection(Reason.OUT_OF_RANGE, "pm25 is 9999")
    dl_topic = contract.deadletter_topic(ROOT, "gateway", Reason.OUT_OF_RANGE)
    dead = (dl_topic, contract.deadletter_payload("gateway", rej, "x/y", b"{}", 5))
    bad_tel = (tel[0][0], b"{not json")
    bad_dead = (dl_topic, b"[]")
    msgs = _msgs([*tel, status, dead, bad_tel, bad_dead])
    b = convert_batch(msgs, Converter(CAT), routes(ROOT), now_ms=1_000, started=2.0)
    assert b.msgs == msgs and (b.now_ms, b.started) == (1_000, 2.0)
    assert len(b.lines) == len(b.owners) == 8  # 6 telemetry, 1 status, 1 dead letter
    assert [o.topic for o in b.owners[6:]] == [status[0], dl_topic]
    assert b.lines[6].startswith("device_status,") and b.lines[7].startswith("deadletter,")
    assert b.n_telemetry == 6
    assert b.ts_sum_ms == sum(contract.decode_normalized(p).ts_ms for _, p in tel)
    assert [(r.reason, m.payload) for r, m in b.rejected] == [(Reason.MALFORMED_JSON, b"{not json")]
    # a malformed dead letter is only dropped (counted), never dead-lettered again
    assert [m.payload for _, m in b.dropped] == [b"[]"]


def test_shared_group_shares_telemetry_and_deadletters_but_not_retained_status() -> None:
    s = Settings()
    s.ingest.share_group = "g"
    subs = [t for t, _ in subscriptions(s)]
    assert subs[0].startswith("$share/g/") and subs[1].startswith("$share/g/")
    assert not subs[2].startswith("$share/")


def _batcher(**kw: float) -> Batcher:
    args = dict(max_buffered=10, batch_size=4, max_unacked=100, batch_interval_s=60.0, idle_flush_s=60.0)
    args.update(kw)
    return Batcher(**args)  # type: ignore[arg-type]


def test_take_cuts_by_size_and_keeps_order() -> None:
    b = _batcher()
    msgs = _msgs([("t", b"%d" % i) for i in range(9)])
    b.put(msgs)
    assert b.take(0.01) == msgs[:4]
    assert b.take(0.01) == msgs[4:8]
    assert len(b) == 1


def test_take_cuts_before_the_in_flight_window_fills() -> None:
    b = _batcher(max_unacked=3)
    b.put(_msgs([("t", b"x")] * 3))
    assert len(b.take(0.01)) == 3


def test_take_cuts_a_small_batch_when_the_stream_pauses() -> None:
    b = _batcher(idle_flush_s=0.01)
    b.put(_msgs([("t", b"x")] * 2))
    assert len(b.take(5.0)) == 2  # returns after the quiet period, not after the 5 s idle wait


def test_take_returns_empty_after_the_idle_wait_when_nothing_comes() -> None:
    assert _batcher().take(0.01) == []


def test_put_blocks_at_max_buffered_until_a_take_makes_room() -> None:
    b = _batcher(max_buffered=4)
    done = threading.Event()

    def producer() -> None:
        b.put(_msgs([("t", b"x")] * 6))
        done.set()

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    assert not done.wait(0.2)  # held: 4 buffered, 2 waiting in put
    assert len(b) == 4
    assert len(b.take(0.01)) == 4
    assert done.wait(5)
    assert len(b) == 2
    t.join(5)


def test_stop_releases_a_blocked_put_and_take_returns_what_is_left() -> None:
    b = _batcher(max_buffered=2)
    t = threading.Thread(target=b.put, args=(_msgs([("t", b"x")] * 3),), daemon=True)
    t.start()
    b.stop()
    t.join(5)
    assert not t.is_alive()
    assert len(b.take(10.0)) >= 2


def _gateway_batch(pairs: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    docs = [orjson.loads(p) for _, p in pairs]
    return (contract.normalized_batch_topic(ROOT, docs[0]["city"], docs[0]["kind"]),
            contract.encode_normalized_batch(docs))


def test_a_gateway_batch_converts_to_the_same_lines_as_its_readings_one_by_one() -> None:
    air = [m for m in normalized_messages(ROOT, 40) if "/air/" in m[0]]
    single = convert_batch(_msgs(air), Converter(CAT), routes(ROOT), now_ms=1, started=0.0)
    doc = orjson.loads(air[1][1])
    wrong = {**doc, "kind": "water"}  # another kind than the batch's topic
    broken = {**doc, "fields": {}}
    topic, body = _gateway_batch(air)
    bad_body = contract.encode_normalized_batch([orjson.loads(air[0][1]), wrong, broken])
    msgs = _msgs([(topic, body), (topic, bad_body), (topic, b'{"v":1,"n":3,"readings":[]}')])
    b = convert_batch(msgs, Converter(CAT), routes(ROOT), now_ms=1, started=0.0)
    assert b.lines == single.lines + single.lines[:1]
    assert b.n_telemetry == len(air) + 1 and b.ts_sum_ms == single.ts_sum_ms + orjson.loads(air[0][1])["ts"]
    assert all(o.topic == topic for o in b.owners)
    # refused readings are dead-lettered one by one, each with its own payload; a lying batch whole
    assert [(r.reason, orjson.loads(o.payload)) for r, o in b.rejected[:2]] == [
        (Reason.BAD_TOPIC, wrong), (Reason.EMPTY_FIELDS, broken)]
    assert [(r.reason, o) for r, o in b.rejected[2:]] == [(Reason.WRONG_TYPE, msgs[2])]


def test_batches_are_cut_by_readings_not_messages() -> None:
    air = [m for m in normalized_messages(ROOT, 40) if "/air/" in m[0]]
    heavy = _msgs([_gateway_batch(air[:3]), _gateway_batch(air[3:6]), air[6]])
    b = _batcher(max_buffered=7, batch_size=4)
    b.put(heavy)
    assert len(b) == 7
    assert [m.mid for m in b.take(0.01)] == [1]  # 3 readings; the next 3 would pass batch_size 4
    assert [m.mid for m in b.take(0.01)] == [2, 3]
    assert len(b) == 0
