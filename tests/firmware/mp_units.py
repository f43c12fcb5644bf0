# Firmware unit tests that run unchanged on real MicroPython (Node + WebAssembly,
# via tests/firmware/test_mp_units.py) and on CPython. Plain asserts, no pytest:
# MicroPython has no pytest. Every test_* function is one case.
try:
    import kc_mqtt
except ImportError:  # CPython: make the flat device modules importable
    from firmware.virtual import device_path
    device_path()
    import kc_mqtt

import gc
import json
import struct

import kc_config
import kc_fakes
import kc_payload
import kc_ring
import kc_schema
from kc_backoff import Backoff
from kc_drivers import analog, bme280, ds18b20, mhz19b, pms5003, ultrasonic

try:
    import os
    _rm = os.remove
except ImportError:  # pragma: no cover
    _rm = None

if __import__("sys").implementation.name == "micropython":
    TMP = "/data"
else:  # a private directory: several checkouts run these tests at once on one machine
    TMP = __import__("tempfile").mkdtemp(prefix="kc_mp_")
_n = [0]


def _tmp(name):
    _n[0] += 1
    p = TMP + "/kc_mp_%s_%d" % (name, _n[0])
    for suffix in ("", ".tmp"):
        try:
            _rm(p + suffix)
        except OSError:
            pass
    _rmtree(p)  # a directory left by an earlier run (the flash log is a directory of segments)
    return p


def _rmtree(p):
    try:
        names = os.listdir(p)
    except OSError:
        return
    for name in names:
        try:
            _rm(p + "/" + name)
        except OSError:
            _rmtree(p + "/" + name)
    try:
        os.rmdir(p)
    except OSError:
        pass


# ---------------------------------------------------------------- MQTT packets
def test_mqtt_remaining_length_boundaries():
    # MQTT 3.1.1 table 2.4: 1..4 bytes, 0..268435455
    cases = [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (321, b"\xc1\x02"), (16383, b"\xff\x7f"),
             (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"),
             (268435455, b"\xff\xff\xff\x7f")]
    for n, enc in cases:
        assert kc_mqtt.encode_len(n) == enc, n
        assert kc_mqtt.decode_len(b"\x30" + enc, 1) == (n, 1 + len(enc))
    try:
        kc_mqtt.encode_len(268435456)
        assert False, "over-long length accepted"
    except ValueError:
        pass
    try:
        kc_mqtt.decode_len(b"\x30\xff\xff\xff\xff\x01", 1)
        assert False, "5-byte varint accepted"
    except kc_mqtt.MQTTError:
        pass


def test_mqtt_connect_packet_flags():
    p = kc_mqtt.encode_connect("dev1", 30, False, "u", "pw", "a/status", b"off", 1, True)
    first, body, used = kc_mqtt.parse_packet(p)
    assert first == 0x10 and used == len(p)
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4
    # user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04; clean session 0x02 off
    assert body[7] == 0xEC
    assert struct.unpack("!H", body[8:10])[0] == 30
    assert body[10:16] == b"\x00\x04dev1"
    clean = kc_mqtt.encode_connect("d", 0, True)
    assert kc_mqtt.parse_packet(clean)[1][7] == 0x02


def test_mqtt_publish_roundtrip_and_partial_stream():
    p = kc_mqtt.encode_publish("a/b", b"xyz", qos=1, retain=True, pid=513, dup=True)
    assert p[0] == 0x30 | 0x08 | 0x02 | 0x01
    for cut in range(len(p)):
        assert kc_mqtt.parse_packet(p[:cut]) is None  # a partial read never yields a packet
    first, body, used = kc_mqtt.parse_packet(p + b"\xd0\x00")
    assert used == len(p)
    assert kc_mqtt.parse_publish(first, body) == ("a/b", b"xyz", 1, 513, True, True)
    q0 = kc_mqtt.encode_publish("t", "m")
    assert kc_mqtt.parse_publish(*kc_mqtt.parse_packet(q0)[:2]) == ("t", b"m", 0, 0, False, False)
    assert kc_mqtt.encode_subscribe(7, [("x/#", 1)]) == b"\x82\x08\x00\x07\x00\x03x/#\x01"


def test_mqtt_client_puback_tracking_and_dup_resend():
    socks = []

    def factory(host, port, timeout, drop=[True]):
        s = kc_fakes.FakeBrokerSocket(drop_acks=drop[0])
        drop[0] = False
        socks.append(s)
        return s

    c = kc_mqtt.MQTTClient("d1", "h", socket_factory=factory, keepalive=0)
    acked = []
    c.on_puback = acked.append
    c.connect()
    pids = [c.publish("t", b"m%d" % i, qos=1) for i in range(3)]
    c.poll(1)
    assert acked == [] and len(c.inflight) == 3  # the first broker never acknowledges
    c.close()
    c.connect()  # 3.1.1 section 4.4: resend unacknowledged PUBLISH with DUP, in order
    c.poll(1)
    assert acked == pids and not c.inflight
    resent = socks[1].published
    assert [m for _, m, _ in resent] == [b"m0", b"m1", b"m2"] and all(d for _, _, d in resent)
    assert c.stats["resent"] == 3


def test_mqtt_refuses_oversized_incoming_packet():
    class Flood(kc_fakes.FakeBrokerSocket):
        def sendall(self, data):
            kc_fakes.FakeBrokerSocket.sendall(self, data)
            if data[0] == 0x82:  # after SUBSCRIBE the "broker" announces a 1 MB PUBLISH
                self.out.extend(b"\x30" + kc_mqtt.encode_len(1 << 20) + b"\x00\x01t")

    c = kc_mqtt.MQTTClient("d", "h", socket_factory=lambda h, p, t: Flood(), keepalive=0)
    c.connect()
    try:
        c.subscribe("t")
        c.poll(1)
        assert False, "oversized packet accepted"
    except kc_mqtt.MQTTError as e:
        assert "exceeds" in str(e)
    assert not c.connected() and len(c.rbuf) < 100


def test_mqtt_refused_connack():
    class Refuse(kc_fakes.FakeBrokerSocket):
        def sendall(self, data):
            self.out.extend(b"\x20\x02\x00\x05")

    c = kc_mqtt.MQTTClient("d", "h", socket_factory=lambda h, p, t: Refuse())
    try:
        c.connect()
        assert False, "refused CONNACK accepted"
    except kc_mqtt.MQTTError as e:
        assert "not authorized" in str(e)
    assert not c.connected()


# ---------------------------------------------------------------- ring buffer
def test_ring_fifo_and_persistence():
    path = _tmp("ring")
    r = kc_ring.Ring(path, capacity=8, slot_size=64)
    ids = [r.push(b"reading-%d" % i, seq=i + 1) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5] and len(r) == 5
    assert r.get(r.oldest_id()) == b"reading-0"
    r.ack(2)
    r.close()
    r = kc_ring.Ring(path, capacity=8, slot_size=64)  # "reboot"
    assert len(r) == 3 and r.oldest_id() == 3 and r.seq == 5
    assert [r.get(i) for i in (3, 4, 5)] == [b"reading-2", b"reading-3", b"reading-4"]
    assert r.get(2) is None  # acked records are gone
    r.close()


def test_ring_overflow_counts_loss():
    path = _tmp("ringfull")
    r = kc_ring.Ring(path, capacity=4, slot_size=32)
    for i in range(10):
        r.push(b"r%d" % i)
    assert len(r) == 4 and r.dropped == 6
    assert r.get(r.oldest_id()) == b"r6"  # oldest surviving reading; the loss is counted, not silent
    r.close()


def test_ring_state_lost_resends_never_loses():
    path = _tmp("ringstate")
    r = kc_ring.Ring(path, capacity=8, slot_size=32, seg_records=2)
    for i in range(5):
        r.push(b"r%d" % i, seq=100 + i)
    r.ack(3)
    assert [s[0] for s in r.segs] == [3, 5]  # the fully acked segment (ids 1-2) is deleted
    _rm(path + "/state")  # power cut that lost the state file: resend, never lose
    r = kc_ring.Ring(path, capacity=8, slot_size=32, seg_records=2)
    assert r.oldest_id() == 3 and len(r) == 3 and r.get(5) == b"r4"
    assert r.seq == 104  # the newest record carries its seq: the sequence continues after a power cut


def test_ring_torn_append_is_cut_off():
    path = _tmp("ringtorn")
    r = kc_ring.Ring(path, capacity=8, slot_size=32, seg_records=4)
    r.push(b"a")
    r.push(b"b")
    with open(path + "/00000001", "ab") as f:
        f.write(b"\x03\x00\x00")  # half a record: power cut mid-append on a non-atomic file system
    r = kc_ring.Ring(path, capacity=8, slot_size=32, seg_records=4)
    assert len(r) == 2 and r.get(2) == b"b"
    assert r.push(b"c") == 3 and r.get(3) == b"c"


def test_ring_detects_corrupt_slot():
    path = _tmp("ringcrc")
    r = kc_ring.Ring(path, capacity=4, slot_size=32)
    rid = r.push(b"hello")
    with open(path + "/00000001", "r+b") as f:
        f.seek(kc_ring.SLOT_HDR_SIZE)
        f.write(b"J")
    assert r.get(rid) is None and r.corrupt == 1
    r.close()


# ---------------------------------------------------------------- payloads and config
def test_payload_every_kind_matches_contract():
    for kind in kc_schema.KINDS:
        values = {}
        for f in kc_schema.KINDS[kind][2]:
            values[f[0]] = f[5]
        p, bad = kc_payload.telemetry(kind, 1795441731961, 42, values, battery=3.912, fw="1.0.0", rssi=-67)
        doc = json.loads(p)
        assert bad == []
        assert doc["v"] == kc_schema.VERSION and doc["ts"] == 1795441731961 and doc["seq"] == 42
        assert sorted(doc["fields"]) == sorted(values)
        assert doc["bat"] == 3.91 and doc["fw"] == "1.0.0" and doc["rssi"] == -67
        assert len(p) <= kc_schema.MAX_PAYLOAD


def test_payload_drops_impossible_values_and_quantises():
    p, bad = kc_payload.telemetry("air", 1, 1, {"pm25": 35.4, "co2": 20000, "humidity": float("nan"),
                                                "temperature": 29.126})
    doc = json.loads(p)
    assert sorted(bad) == ["co2", "humidity"]
    assert doc["fields"] == {"pm25": 35, "temperature": 29.13}
    assert kc_payload.telemetry("air", 1, 1, {"co2": -5})[0] is None
    assert b'"temperature":24.9375' in kc_payload.telemetry("water", 1, 1, {"temperature": 24.9375})[0]
    # seq wraps inside 0..2^32-1 as the contract requires
    assert json.loads(kc_payload.telemetry("air", 1, kc_schema.SEQ_MAX + 1, {"pm25": 1})[0])["seq"] == 0


def test_topics_from_schema():
    assert kc_payload.topic("kc", "depok", "air", "A-1", "telemetry") == "kc/v1/depok/air/A-1/telemetry"


def test_remote_config_validation():
    cal = {"ph_v7": 1.5}
    ok = kc_config.validate_remote({"v": 1, "interval_s": 120, "thresholds": {"ph": [6.5, 8.5]},
                                    "calibration": {"ph_v7": 1.49}}, "water", cal)
    assert ok["interval_s"] == 120 and ok["thresholds"]["ph"] == [6.5, 8.5]
    bad = [
        ([1, 2], "object"), ({"interval_s": 60}, "version"), ({"v": 1, "interval_s": 1}, "interval_s"),
        ({"v": 1, "interval_s": True}, "interval_s"), ({"v": 1, "thresholds": {"pm25": [0, 1]}}, "unknown field"),
        ({"v": 1, "thresholds": {"ph": [9, 1]}}, "lo > hi"), ({"v": 1, "calibration": {"zz": 1}}, "unknown calibration"),
        ({"v": 1, "calibration": {"ph_v7": "x"}}, "finite"), ({"v": 1, "intervl_s": 60}, "unknown config key"),
    ]
    for doc, why in bad:
        try:
            kc_config.validate_remote(doc, "water", cal)
            assert False, "accepted: %r" % (doc,)
        except kc_config.ConfigError as e:
            assert why in str(e), (why, str(e))


def test_device_config_validation_and_persistence():
    cfg = kc_config.validate_device({"kind": "air", "device": "AIR-001", "city": "depok"})
    assert cfg["interval_s"] == kc_schema.KINDS["air"][0] and cfg["mqtt"]["keepalive"] == 30
    for bad in ({"kind": "air", "device": "a/#"}, {"kind": "nope", "device": "a"},
                {"kind": "air", "device": "a", "city": "Depok"}, {"kind": "air", "device": "a", "mqtt": {"port": 0}}):
        try:
            kc_config.validate_device(bad)
            assert False, "accepted %r" % (bad,)
        except kc_config.ConfigError:
            pass
    path = _tmp("cfg") + ".json"
    kc_config.save_json(path, {"v": 1, "interval_s": 30})
    kc_config.save_json(path, {"v": 1, "interval_s": 45})
    assert kc_config.load_json(path) == {"v": 1, "interval_s": 45}


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(500, 8000, rand=lambda n: n - 1)
    seq = [b.next_ms() for _ in range(8)]
    assert seq[0] < seq[1] < seq[2] and max(seq) <= 8000
    b.reset()
    assert b.next_ms() == seq[0]
    lo = Backoff(500, 8000, rand=lambda n: 0)
    assert lo.next_ms() == 250  # jitter floor: never a zero-delay reconnect storm


# ---------------------------------------------------------------- drivers
def test_pms5003_frames_and_commands():
    assert pms5003.command(pms5003.CMD_READ) == bytes([0x42, 0x4D, 0xE2, 0, 0, 0x01, 0x71])
    assert pms5003.command(pms5003.CMD_SLEEP, 0) == bytes([0x42, 0x4D, 0xE4, 0, 0, 0x01, 0x73])
    assert pms5003.command(pms5003.CMD_SLEEP, 1) == bytes([0x42, 0x4D, 0xE4, 0, 1, 0x01, 0x74])
    fake = kc_fakes.FakePMS5003(None)
    f = fake.frame(10, 35, 52)
    assert len(f) == 32 and pms5003.parse_frame(f)["pm25"] == 35
    assert pms5003.parse_frame(f[:-1] + bytes([f[-1] ^ 1])) is None
    assert pms5003.find_frame(b"\x42\x4d\x00" + f + f[:10])["pm10"] == 52


def test_mhz19b_checksum_and_parse():
    # datasheet example: read command FF 01 86 00 00 00 00 00 79
    assert mhz19b.command(mhz19b.CMD_READ) == bytes([0xFF, 1, 0x86, 0, 0, 0, 0, 0, 0x79])
    assert mhz19b.command(mhz19b.CMD_ZERO)[8] == 0x78
    r = bytearray([0xFF, 0x86, 0x01, 0xC2, 0x40, 0, 0, 0, 0])
    r[8] = mhz19b.checksum(r)
    assert mhz19b.parse_response(bytes(r)) == 450
    r[3] ^= 1
    assert mhz19b.parse_response(bytes(r)) is None


def test_bme280_compensation():
    # Bosch BMP280 datasheet 3.12 worked example (same temperature formula as the BME280):
    # dig_T1=27504, dig_T2=26435, dig_T3=-1000, adc_T=519888 -> 25.08 degC
    t, t_fine = bme280.compensate_t(519888, (27504, 26435, -1000, 0, 0, 0, 0, 0, 0))
    assert t == 2508 and t_fine == 128422
    w = kc_fakes.World("air", lambda: 0.0)
    w.override = {"temperature": 31.25, "humidity": 68.5}
    sensor = bme280.BME280(kc_fakes.FakeBME280(w))
    r = sensor.read()
    assert abs(r["temperature"] - 31.25) <= 0.02 and abs(r["humidity"] - 68.5) <= 0.05, r


def test_ds18b20_scratchpad_and_crc():
    # Maxim AN27 worked example: ROM 02 1C B8 01 00 00 00 has CRC 0xA2
    assert ds18b20.crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0, 0, 0])) == 0xA2
    for raw, t in ((0x0191, 25.0625), (0xFF5E, -10.125), (0x07D0, 125.0), (0xFC90, -55.0)):
        sp = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
        assert ds18b20.parse_scratchpad(sp + bytes([ds18b20.crc8(sp)])) == t
    sp = bytes([0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])  # power-on 85 degC: no conversion
    assert ds18b20.parse_scratchpad(sp + bytes([ds18b20.crc8(sp)])) is None
    w = kc_fakes.World("water", lambda: 0.0)
    w.override = {"temperature": 27.3}
    assert ds18b20.DS18B20(kc_fakes.FakeOneWire(w)).read() == 27.3125


def test_ultrasonic_false_echo_rejection_and_fill():
    assert abs(ultrasonic.speed_of_sound(20) - 343.4) < 0.1
    assert abs(ultrasonic.echo_to_cm(5831, 20.0) - 100.1) < 0.1
    assert ultrasonic.robust_distance([80.1, 80.3, 15.0, None, 80.2, 250.0, 79.9]) == 80.15
    assert ultrasonic.robust_distance([None, None, 80.0]) is None
    assert ultrasonic.fill_percent(120, 120, 20) == 0.0 and ultrasonic.fill_percent(20, 120, 20) == 100.0
    assert ultrasonic.fill_percent(70, 120, 20) == 50.0
    assert ultrasonic.Tilt(kc_fakes.FakePin(1)).read() == 1


def test_analog_curves():
    ph = analog.PH(None, 1.5, 2.032)
    assert abs(ph.from_volts(1.5) - 7.0) < 1e-9 and abs(ph.from_volts(2.032) - 4.0) < 1e-9
    assert analog.ntu_from_volts(4.3) == 0.0 and analog.ntu_from_volts(2.0) == 3000.0
    # the same probe voltage reads lower TDS in warmer water (conductivity rises ~2 %/degC)
    assert analog.tds_from_volts(1.0, 35.0) < analog.tds_from_volts(1.0, 25.0)
    assert abs(analog.do_from_volts(1.6, 25.0) - 8.25) < 1e-9  # at the calibration point: saturation
    gas = analog.GasChannel(None, None, "no2", 225.0, 230.0, 0.2)
    assert abs(gas.ppb(245.0, 230.0) - 100.0) < 1e-9


# ---------------------------------------------------------------- the node loop
SimBoard = kc_fakes.SimBoard


def _node(kind="air", interval=1, deep_sleep=False, board=None, storage=None, extra=None):
    from kc_node import Node
    if storage is None:
        storage = _tmp("node")
        try:
            os.mkdir(storage)
        except OSError:
            pass
        for f in ("/remote.json", "/log/state"):
            try:
                os.remove(storage + f)
            except OSError:
                pass
        try:
            for f in os.listdir(storage + "/log"):
                os.remove(storage + "/log/" + f)
        except OSError:
            pass
    doc = {"kind": kind, "device": "SIM-1", "interval_s": interval,
           "ring": {"capacity": 32, "slot": 384}, "deep_sleep": deep_sleep}
    doc.update(extra or {})
    cfg = kc_config.validate_device(doc)
    board = board or SimBoard(kind, storage)
    return Node(board, cfg), board


def _seqs(board, channel="telemetry"):
    out = []
    for topic, msg, _dup in board.published:
        if topic.endswith("/" + channel):
            out.append(json.loads(msg)["seq"])
    return out


def test_node_loop_store_and_forward_no_gap():
    gc.collect()
    node, board = _node("air")
    node.run(max_readings=5)
    assert _seqs(board) == [1, 2, 3, 4, 5]
    # link down: the broker socket dies and reconnects are refused; readings go to flash
    board.down = True
    board.sock.closed = True
    node.next_read = board.t  # run(max_readings=) parked the schedule
    node.run(duration_ms=8000)
    buffered = len(node.ring)
    assert buffered >= 5, buffered
    board.down = False
    node.next_read = board.t
    node.run(duration_ms=90000, max_readings=node.stats["readings"] + 2)
    seqs = sorted(set(_seqs(board)))
    assert seqs == list(range(1, seqs[-1] + 1)), seqs  # no gap in sequence numbers
    assert len(node.ring) == 0 and node.ring.dropped == 0
    node.shutdown()


def test_node_every_kind_one_cycle():
    for kind in kc_schema.KINDS:
        gc.collect()
        node, board = _node(kind)
        node.run(max_readings=2)
        msgs = [json.loads(m) for t, m, d in board.published if t.endswith("/telemetry")]
        assert len(msgs) == 2, (kind, board.logs)
        assert sorted(msgs[0]["fields"]) == sorted(f[0] for f in kc_schema.KINDS[kind][2]), (kind, msgs[0])
        node.shutdown()


def test_node_config_and_commands():
    node, board = _node("water", interval=60)
    node.run(max_readings=1)

    def deliver(topic, doc):
        node._on_message(topic, json.dumps(doc).encode(), False)

    deliver(node.t_config, {"v": 1, "interval_s": 30, "calibration": {"tds_k": 1.1}})
    deliver(node.t_config, {"v": 1, "interval_s": 1})
    deliver(node.t_cmd, {"v": 1, "id": "c1", "cmd": "ping"})
    deliver(node.t_cmd, {"v": 1, "id": "c2", "cmd": "selfdestruct"})
    deliver(node.t_cmd, {"v": 1, "id": "c3", "cmd": "calibrate", "args": {"sensor": "ph", "point": 7}})
    deliver("oldroot/v1/depok/water/SIM-1/cmd", {"v": 1, "id": "c9", "cmd": "reboot"})  # ignored
    node.step()
    acks = [json.loads(m) for t, m, d in board.published if t.endswith("/ack")]
    assert [a["ok"] for a in acks] == [True, False, True, False, True], acks
    assert acks[2]["data"]["seq"] == 1 and node.interval_s == 30 and node.cal["tds_k"] == 1.1
    assert 1.4 < node.cal["ph_v7"] < 1.6  # the probe sat in the pH 7 buffer of the fake
    assert node.stats["foreign"] == 1 and node.reboot_at is None
    stored = kc_config.load_json(node.remote_path)
    assert stored["interval_s"] == 30 and "ph_v7" in stored["calibration"]
    deliver(node.t_cmd, {"v": 1, "id": "c4", "cmd": "reboot"})
    node.step()
    try:
        for _ in range(100):
            node.step()
        assert False, "no reset after the reboot command"
    except kc_fakes.Reset:
        pass


def test_wifi_outage_backoff_watchdog_and_flush():
    node, board = _node("water", interval=5)
    node.run(max_readings=1)
    node.wifi_backoff.rand = lambda n: n - 1  # the top of each jitter window: deterministic gaps
    board.wifi = False
    board.sock.closed = True
    node.next_read = board.t
    feeds = board.wdt_feeds
    node.run(duration_ms=60000)
    gaps = [b - a for a, b in zip(board.wifi_attempts, board.wifi_attempts[1:])]
    assert len(gaps) >= 4 and gaps[0] < gaps[1] < gaps[2] < gaps[3], gaps  # exponential
    assert max(gaps) <= 60000 + 500
    assert board.wdt_feeds - feeds > 100  # the loop keeps feeding the watchdog while offline
    assert board.wifi_resets == (len(board.wifi_attempts) - 1) // 5 >= 1  # radio power-cycled every 5 failures
    assert len(node.ring) >= 10  # readings continue into flash
    board.wifi = True
    node.next_read = board.t
    node.run(duration_ms=120000, max_readings=node.stats["readings"] + 1)
    seqs = sorted(set(_seqs(board)))
    assert seqs == list(range(1, seqs[-1] + 1)) and len(node.ring) == 0
    node.shutdown()


def test_deep_sleep_keeps_seq_in_rtc_memory():
    node, board = _node("waste_bin", interval=60, deep_sleep=True)
    boots = 0
    while boots < 3:
        try:
            node.run(duration_ms=120000)
            assert False, "a battery node must deep-sleep once flushed"
        except kc_fakes.DeepSleep as e:
            assert 50000 < e.ms <= 60000, e.ms  # sleeps until the next reading is due
            board.t += e.ms  # asleep; RAM is lost, RTC memory and flash survive
            node.ring.close()
            node, board = _node("waste_bin", interval=60, deep_sleep=True, board=board, storage=board.storage)
            boots += 1
    assert _seqs(board) == [1, 2, 3] and node.boots == 4
    # a clean DISCONNECT before each sleep: no last-will "offline" for a sleeping bin
    assert not [m for t, m, d in board.published if t.endswith("/status") and b"offline" in m]
    node.shutdown()


def test_pms5003_sleeps_between_widely_spaced_readings():
    node, board = _node("air", interval=300)
    node.run(max_readings=1)
    assert board.pms.asleep  # put to sleep right after the reading
    node.next_read = board.t + 300000
    node.run(duration_ms=250000)
    assert board.pms.asleep  # still asleep well before the next reading
    node.run(duration_ms=40000)
    assert not board.pms.asleep and node.warm  # woken 30 s ahead (datasheet warm-up)
    node.run(duration_ms=20000)
    assert len(_seqs(board)) == 2 and board.pms.asleep
    assert "pm25" in json.loads([m for t, m, d in board.published if t.endswith("/telemetry")][-1])["fields"]
    node.shutdown()


# ---------------------------------------------------------------- field scenarios (issue 15, items 3-4)
def _storage(name):
    p = _tmp(name)
    try:
        os.mkdir(p)
    except OSError:
        pass
    return p


def _telemetry(board):
    return [json.loads(m) for t, m, d in board.published if t.endswith("/telemetry")]


def _sleeping_node(board, storage, wakes, interval=900):
    """Boot, run, deep-sleep `wakes` times as a board does; (awake ms, sleep ms, wake start times)."""
    awake = slept = 0
    starts = []
    node = None
    for _ in range(wakes):
        node, _b = _node("waste_bin", interval, True, board, storage, {"ntp_hosts": ["a.ntp", "b.ntp"],
                                                                   "ring": {"capacity": 64, "slot": 384}})
        t0 = board.t
        starts.append(t0)
        try:
            node.run(duration_ms=600000)
            assert False, "a battery node stayed awake for 10 minutes"
        except kc_fakes.DeepSleep as e:
            awake += board.t - t0
            slept += e.ms
            board.t += e.ms
    return awake, slept, starts, node


def test_scenario_lost_ntp_reply():
    """One NTP reply lost at boot: readings start at once, NTP is retried within a minute on the
    second server, and every reading goes out stamped with the true time, none with a wrong one."""
    board = SimBoard("air", _storage("ntp"))
    board.clock_ok = False
    board.ntp_fail = 1
    node, _b = _node("air", 10, board=board, storage=board.storage, extra={"ntp_hosts": ["a.ntp", "b.ntp"]})
    node.run(duration_ms=150000)
    tel = _telemetry(board)
    assert [m["seq"] for m in tel] == list(range(1, len(tel) + 1)) and len(tel) >= 14, len(tel)
    assert [h for t, h in board.ntp_calls[:2]] == ["a.ntp", "b.ntp"]  # several servers, in order
    first = tel[0]["ts"] - board.EPOCH_MS
    assert 0 <= first <= 2000, first  # taken at boot, stamped after the sync with its true time
    for a, b in zip(tel, tel[1:]):
        assert abs(b["ts"] - a["ts"] - 10000) <= 200, (a["ts"], b["ts"])
    assert node.stats["no_clock"] >= 1 and node.synced
    node.shutdown()


def test_scenario_bin_without_clock():
    """A waste bin whose NTP never answers: it keeps measuring, sleeps ~the whole interval, sends
    nothing with a wrong time; once time comes, every buffered reading goes out correctly stamped."""
    board = SimBoard("waste_bin", _storage("noclock"))
    board.clock_ok = False
    board.ntp_fail = 10 ** 6
    awake, slept, starts, node = _sleeping_node(board, board.storage, 12)
    assert awake / (awake + slept) < 0.01, (awake, slept)  # issue 15 found ~99 % (1 s sleeps, Wi-Fi each time)
    assert _telemetry(board) == [] and len(node.ring) == 12
    board.ntp_fail = 0
    _sleeping_node(board, board.storage, 1)
    tel = _telemetry(board)
    assert [m["seq"] for m in tel] == list(range(1, 14)), [m["seq"] for m in tel]
    for m, t0 in zip(tel, starts + [None]):
        if t0 is not None:
            assert abs(m["ts"] - (board.EPOCH_MS + t0)) <= 1000, (m["ts"] - board.EPOCH_MS, t0)


def test_scenario_bin_without_wifi():
    """No Wi-Fi for 40 wakes: readings buffered, the radio tried on ever fewer wakes (failure
    counter in RTC memory), awake well under 1 %; when Wi-Fi returns everything is delivered."""
    board = SimBoard("waste_bin", _storage("nowifi"))
    board.wifi = False
    board.scan_ms = 10000
    awake, slept, starts, node = _sleeping_node(board, board.storage, 40)
    assert awake / (awake + slept) < 0.01, (awake, slept)
    assert len(node.ring) == 40 and 4 <= len(board.wifi_attempts) <= 12, len(board.wifi_attempts)
    assert struct.unpack(kc_node_rtc_fmt(), board.rtc[:struct.calcsize(kc_node_rtc_fmt())])[7] >= 4  # fails
    board.wifi = True
    _sleeping_node(board, board.storage, 17)  # the next try comes within 16 wakes
    assert [m["seq"] for m in _telemetry(board)] == list(range(1, 58))


def test_scenario_low_battery_keeps_radio_off():
    board = SimBoard("waste_bin", _storage("lowbat"), battery_v=3.3)
    awake, slept, starts, node = _sleeping_node(board, board.storage, 5)
    assert board.wifi_attempts == [] and len(node.ring) == 5 and node.stats["low_battery"] == 1


def test_birth_reports_last_crash_and_clears_the_count():
    storage = _storage("crash")
    kc_config.save_json(storage + "/crash.json", {"count": 3, "tb": "Traceback: boom", "cause": 3})
    board = SimBoard("air", storage)
    node, _b = _node("air", board=board, storage=storage)
    node.run(max_readings=1)
    birth = [json.loads(m) for t, m, d in board.published if t.endswith("/status")][0]
    assert birth["crashes"] == 3 and "boom" in birth["last_crash"] and birth["synced"] is True
    crash = kc_config.load_json(storage + "/crash.json")
    assert crash["count"] == 0 and "boom" in crash["tb"]  # delivered: main.py's back-off starts afresh
    node.shutdown()


class WrappingBoard(SimBoard):
    """ticks_ms wraps at 2**30 like the ESP32 port's."""
    PERIOD = 1 << 30

    def ticks_ms(self):
        return self.t & (self.PERIOD - 1)

    def ticks_diff(self, a, b):
        return ((a - b + self.PERIOD // 2) & (self.PERIOD - 1)) - self.PERIOD // 2

    def ticks_add(self, a, d):
        return (a + d) & (self.PERIOD - 1)


def test_uptime_and_schedule_survive_ticks_wrap():
    board = WrappingBoard("water", _storage("wrap"))
    board.t = (1 << 30) - 20000
    node, _b = _node("water", 5, board=board, storage=board.storage)
    node.run(duration_ms=40000)
    up = node.health()["uptime_s"]
    assert 39 <= up <= 41, up
    assert len(_seqs(board)) >= 7  # readings kept their 5 s rhythm across the wrap
    node.shutdown()


def test_mains_node_resets_after_hours_without_link():
    board = SimBoard("air", _storage("nolink"))
    node, _b = _node("air", 5, board=board, storage=board.storage, extra={"reboot_no_link_h": 0.01})
    board.down = True
    try:
        node.run(duration_ms=120000)
        assert False, "no reset after 36 s without a link"
    except kc_fakes.Reset:
        pass
    assert 30000 <= board.t <= 45000, board.t


# ---------------------------------------------------------------- sensor honesty (issue 15, item 6)
def test_pms_humidity_correction():
    hc = pms5003.humidity_correct
    assert hc(100, 60) == 100 and hc(100, 80) == 100 and hc(100, None) == 100 and hc(100, 90, 0) == 100
    assert abs(hc(100, 80.01) - 100) < 0.2  # continuous at the reference humidity
    v90 = hc(100, 90, 0.2)  # C(90)/C(80) = (1 + 0.1212/0.1111) / (1 + 0.1212/0.25) = 1.408
    assert abs(v90 - 100 / 1.408) < 0.3, v90
    assert hc(100, 96) is None  # fog: no dry-mass reading


def test_air_warmup_humidity_and_o3_cross_sensitivity():
    """PMS5003 30 s before the first reading, MH-Z19B 3 min preheat, gas cells after their settling
    time; at 90 % RH the PM is the dry-equivalent; O3 is corrected for the cell's NO2 response."""
    board = SimBoard("air", _storage("warm"))
    board.warmup_scale = 1.0
    board.world.override["humidity"] = 90.0
    board.world.override["no2"] = 80.0  # ug/m3: a busy road, the O3 cell's NO2 share is large
    node, _b = _node("air", 10, board=board, storage=board.storage)
    node.run(duration_ms=640000)
    tel = _telemetry(board)
    t = [m["ts"] - board.EPOCH_MS for m in tel]
    assert t[0] >= 30000 and "pm25" in tel[0]["fields"], t[0]
    for m, ti in zip(tel, t):
        f = m["fields"]
        assert ("co2" in f) == (ti >= 180000) or abs(ti - 180000) < 1000, (ti, sorted(f))
        assert ("o3" in f) == (ti >= 600000) or abs(ti - 600000) < 1000, (ti, sorted(f))
        assert f["humidity"] == 90.0
    last = tel[-1]
    world = kc_fakes.World("air", lambda: t[-1] / 1000, seed=1)
    world.override = dict(board.world.override)
    assert abs(last["fields"]["pm25"] - world.value("pm25")) <= 1.5, (last["fields"]["pm25"], world.value("pm25"))
    assert abs(last["fields"]["o3"] - world.value("o3")) <= 0.03 * world.value("o3") + 1, (
        last["fields"]["o3"], world.value("o3"))
    assert node.suite.warming > 0
    node.shutdown()


def test_several_ssids_and_status_led():
    board = SimBoard("water", _storage("ssids"))
    board.wifi = False
    board.good_ssid = "site-ap"
    nets = [{"ssid": "installer-phone", "password": "x"}, {"ssid": "site-ap", "password": "y"}]
    node, _b = _node("water", 5, board=board, storage=board.storage, extra={"wifi_networks": nets})
    node.run(max_readings=2)
    assert board.ssids[:2] == ["installer-phone", "site-ap"] and len(_seqs(board)) == 2
    assert board.led and board.led[-1][1] is True  # lit once the broker link is up
    node.shutdown()


def test_unstamped_readings_of_a_crashed_epoch_are_given_up_not_misdated():
    """No clock, then a crash (no planned save of the monotonic time): the readings taken before it
    cannot be dated exactly any more, so they are counted and dropped; later ones are stamped."""
    board = SimBoard("water", _storage("crashclock"))
    board.clock_ok = False
    board.ntp_fail = 10 ** 6
    node, _b = _node("water", 5, board=board, storage=board.storage)
    node.run(duration_ms=21000)
    old = len(node.ring)
    assert old >= 4 and _telemetry(board) == []
    board.t += 7000  # the crash and main.py's back-off: time no RTC memory save accounts for
    board.ntp_fail = 0
    node, _b = _node("water", 5, board=board, storage=board.storage)
    t_boot = board.t
    node.run(duration_ms=12000)
    tel = _telemetry(board)
    assert node.stats["unstampable"] == old and len(tel) >= 2, (node.stats, len(tel))
    assert all(m["ts"] - board.EPOCH_MS >= t_boot for m in tel)  # only readings of the new epoch
    node.shutdown()


def kc_node_rtc_fmt():
    import kc_node
    return kc_node.RTC_FMT


def run_all(names=None):
    run_cases(globals(), names)


def run_cases(g, names=None):
    """Run every test_* function of the module namespace `g`: one PASS/FAIL line per case."""
    import sys
    for name in sorted(g):
        if not name.startswith("test_") or (names and name not in names):
            continue
        try:
            g[name]()
            print("PASS " + name)
        except Exception as e:  # report and continue: one line per case for the pytest side
            print("FAIL %s: %r" % (name, e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
