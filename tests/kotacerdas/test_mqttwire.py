"""ingest's own MQTT 3.1.1 consumer: packet parsing, and sessions against the real Mosquitto."""

from __future__ import annotations

import threading
import time

import pytest

from kotacerdas import mqttwire as wire
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.settings import MqttSettings

from tests.ingest.helpers import wait_for


# ---------------------------------------------------------------- parsing (pure)


def test_parse_splits_publishes_and_control_packets_and_keeps_the_incomplete_tail():
    p1 = wire.publish_packet("a/b", b"x" * 200, 1, 7)  # remaining length > 127: a 2-byte varint
    p2 = wire.publish_packet("c", b"", 0, 0)
    ping = bytes([wire.PINGRESP, 0])
    suback = wire.packet(wire.SUBACK, b"\x00\x05\x01\x80")
    data = p1 + ping + p2 + suback + p1
    ctrl, msgs, used = wire.parse(data)
    assert used == len(data)
    assert msgs == [("a/b", b"x" * 200, 7, 1), ("c", b"", 0, 0), ("a/b", b"x" * 200, 7, 1)]
    assert ctrl == [(wire.PINGRESP, b""), (wire.SUBACK, b"\x00\x05\x01\x80")]
    # cut anywhere: what is complete is returned, the rest waits for the next read
    for cut in range(1, len(data)):
        c1, m1, u1 = wire.parse(data[:cut])
        c2, m2, u2 = wire.parse(data[u1:])
        assert m1 + m2 == msgs and c1 + c2 == ctrl and u1 + u2 == len(data)


def test_packets_match_the_31_1_encoding():
    assert wire.pubacks([1, 258]) == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2])
    c = wire.connect_packet("id", clean=False, keepalive_s=30, username="u", password="p")
    # fixed header, "MQTT", level 4, flags user+password (no clean session), keep-alive 30
    assert c[:2] == bytes([0x10, len(c) - 2]) and c[2:12] == b"\x00\x04MQTT\x04\xc0\x00\x1e"
    assert c.endswith(b"\x00\x02id\x00\x01u\x00\x01p")
    with pytest.raises(wire.ProtocolError):
        wire.parse(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))


def test_connack_properties_give_the_brokers_packet_limit():
    # MQTT 5 CONNACK properties (3.2.2.3): receive maximum 20 (0x21), maximum packet size 65,536
    # (0x27), a user property and an assigned client id (strings skipped), topic alias maximum (0x22)
    props = (bytes([0x21, 0, 20, 0x27, 0, 1, 0, 0, 0x26, 0, 1]) + b"k" + bytes([0, 2]) + b"vv"
             + bytes([0x12, 0, 3]) + b"cid" + bytes([0x22, 0, 10]))
    got = wire.connack_properties(bytes([len(props)]) + props)
    assert got[wire.MAXIMUM_PACKET_SIZE] == 65_536 and got[0x21] == 20 and got[0x22] == 10
    assert wire.connack_properties(b"\x00") == {}
    with pytest.raises(wire.ProtocolError):
        wire.connack_properties(bytes([5, 0x27, 0, 1]))  # says 5 bytes, holds 3
    with pytest.raises(wire.ProtocolError):
        wire.connack_properties(bytes([2, 0x7F, 0]))  # no such property
    # what a payload must leave free: header with a 4-byte length, topic, packet id, v5 properties
    assert wire.publish_overhead("a/b", 5) == len(wire.publish_packet("a/b", b"", 1, 1, protocol=5)) + 3


# ---------------------------------------------------------------- against Mosquitto


class Sink:
    def __init__(self) -> None:
        self.msgs: list[tuple[int, str, bytes, int]] = []  # (generation, topic, payload, mid)
        self.connects: list[bool] = []
        self.disconnects: list[str] = []
        self.subacks: list[list[int]] = []
        self.lock = threading.Lock()

    def client(self, mqtt: MqttSettings, cid: str, topic: str) -> wire.WireClient:
        c: wire.WireClient

        def on_connect(session_present: bool) -> None:
            self.connects.append(session_present)
            c.subscribe([(topic, 1)])

        def on_messages(gen: int, msgs: wire.Messages) -> None:
            with self.lock:
                self.msgs += [(gen, t, p, mid) for t, p, mid, _ in msgs]

        c = wire.WireClient(mqtt, cid, on_connect=on_connect, on_messages=on_messages,
                            on_disconnect=self.disconnects.append, on_subscribed=self.subacks.append)
        return c


def _publish(mqtt: MqttSettings, topic: str, payloads: list[bytes]) -> None:
    p = make_client(mqtt)
    connect(p, mqtt)
    try:
        wait_published([p.publish(topic, x, qos=1) for x in payloads])
    finally:
        p.disconnect()
        p.loop_stop()


def _forget(mqtt: MqttSettings, cid: str) -> None:
    c = make_client(mqtt, cid, clean=True)
    connect(c, mqtt)
    c.disconnect()
    c.loop_stop()


def test_unacknowledged_messages_are_redelivered_to_the_persistent_session(settings, uid):
    topic = f"{settings.mqtt.topic_root}/w/#"
    cid = f"kc-wire-{uid}"
    sink = Sink()
    c = sink.client(settings.mqtt, cid, topic)
    c.start()
    try:
        assert wait_for(lambda: sink.subacks == [[1]], 5), sink.subacks
        _publish(settings.mqtt, f"{settings.mqtt.topic_root}/w/x", [b"m%d" % i for i in range(300)])
        assert wait_for(lambda: len(sink.msgs) == 300, 10), len(sink.msgs)
        assert [m[2] for m in sink.msgs] == [b"m%d" % i for i in range(300)]
        gen = sink.msgs[0][0]
        assert c.ack(gen, [m[3] for m in sink.msgs[:200]])  # the last 100 stay unacknowledged
        assert not c.ack(gen + 1, [1])  # acks of another connection are refused
    finally:
        c.stop()  # its DISCONNECT follows the PUBACKs on the same stream: the broker has them first
    sink2 = Sink()
    c2 = sink2.client(settings.mqtt, cid, topic)
    c2.start()
    try:
        assert wait_for(lambda: len(sink2.msgs) >= 100, 10), len(sink2.msgs)
        # a sentinel published now comes after the session's redeliveries: a redelivery beyond the
        # 100 unacknowledged would have arrived before it
        _publish(settings.mqtt, f"{settings.mqtt.topic_root}/w/x", [b"end"])
        assert wait_for(lambda: any(m[2] == b"end" for m in sink2.msgs), 10), len(sink2.msgs)
        assert sink2.connects == [True]  # the session survived the disconnect
        assert sorted(m[2] for m in sink2.msgs if m[2] != b"end") == sorted(b"m%d" % i for i in range(200, 300))
        assert len(sink2.msgs) == 101
        c2.ack(sink2.msgs[0][0], [m[3] for m in sink2.msgs])  # stop()'s DISCONNECT follows on the same stream
    finally:
        c2.stop()
        _forget(settings.mqtt, cid)


def test_keepalive_holds_an_idle_connection_and_dead_letters_are_published(settings, uid):
    mqtt = settings.mqtt.model_copy(update={"keepalive_s": 1})
    root = settings.mqtt.topic_root
    sink = Sink()
    c = sink.client(mqtt, f"kc-wire-{uid}", f"{root}/k")
    got: list[bytes] = []
    listener = make_client(mqtt)
    listener.on_message = lambda cl, u, m: got.append(m.payload)
    connect(listener, mqtt)
    listener.subscribe(f"{root}/dl", qos=1)
    c.start()
    try:
        time.sleep(3.0)  # 3 x keep-alive (> 1.5 x): the broker would drop a client that never pinged
        assert c.is_connected() and sink.disconnects == [] and len(sink.connects) == 1
        c.publish(f"{root}/dl", b"dead letter", qos=1)
        _publish(mqtt, f"{root}/k", [b"after idle"])
        assert wait_for(lambda: got == [b"dead letter"] and len(sink.msgs) == 1, 5), (got, sink.msgs)
        assert wait_for(lambda: not c._outgoing, 5)  # the broker's PUBACK cleared our copy
    finally:
        c.stop()
        listener.disconnect()
        listener.loop_stop()
        _forget(mqtt, f"kc-wire-{uid}")


def test_reconnects_after_a_broker_restart_and_resubscribes(private_broker, uid):
    broker = private_broker()
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port, topic_root=f"t{uid}", keepalive_s=5)
    sink = Sink()
    c = sink.client(mqtt, f"kc-wire-{uid}", f"t{uid}/r")
    c.start()
    try:
        assert wait_for(lambda: len(sink.subacks) == 1, 5)
        broker.stop()
        assert wait_for(lambda: len(sink.disconnects) == 1 and not c.is_connected(), 10), sink.disconnects
        broker.start()
        assert wait_for(lambda: c.is_connected() and len(sink.subacks) == 2, 20), (sink.connects, sink.subacks)
        _publish(mqtt, f"t{uid}/r", [b"after restart"])
        assert wait_for(lambda: [m[2] for m in sink.msgs] == [b"after restart"], 5), sink.msgs
        assert sink.msgs[0][0] == c.generation == 2
    finally:
        c.stop()


def test_refused_credentials_raise_a_clear_error(private_broker, uid):
    from devtools import stack

    port = stack.free_port()
    broker = private_broker(f"listener {port} 127.0.0.1\nallow_anonymous false\n", port=port)
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    with pytest.raises(ConnectionError, match="not authorised"):
        wire.WireClient(mqtt, f"kc-wire-{uid}").start(timeout_s=5)
    with pytest.raises(ValueError):
        wire.WireClient(MqttSettings(tls_ca="/nonexistent/ca.pem"), "x")


def test_a_refused_subscription_keeps_ingest_not_ready(settings):
    # Mosquitto 2.0 grants subscriptions its ACL denies (it filters on delivery), so the
    # 0x80 return code comes only from plugins or other brokers: fed to the handler directly.
    from ingest.source import WireSource

    src = WireSource(settings, [])
    src.on_subscribed([1, 0x80, 1])
    assert not src._subscribed.is_set()
    src.on_subscribed([1, 1, 1])
    assert src._subscribed.is_set()
