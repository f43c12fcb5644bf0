# Field provisioning and ADS1115 cases that run unchanged on MicroPython's unix port and on
# CPython (tests/firmware/test_provisioning.py runs both). Plain asserts, no pytest.
try:
    import kc_config
except ImportError:  # CPython: make the flat device modules importable
    from firmware.virtual import device_path
    device_path()
    import kc_config

import kc_fake_prov
import kc_fakes
from kc_drivers import ads1115, analog

if __import__("sys").implementation.name == "micropython":
    import os
    TMP = "/tmp/kc_prov_%d" % (__import__("time").ticks_us() & 0xFFFFFF)
    os.mkdir(TMP)
else:
    import os
    TMP = __import__("tempfile").mkdtemp(prefix="kc_prov_")
_n = [0]


def _dir(name):
    _n[0] += 1
    p = TMP + "/%s_%d" % (name, _n[0])
    os.mkdir(p)
    return p


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


# -- ADS1115 -------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep_ms(self, ms):
        self.t += ms


def test_ads1115_config_word_per_datasheet():
    # AIN0 vs GND, +-4.096 V, single-shot, 128 SPS, comparator off: OS|MUX=100|PGA=001|MODE|DR=100|11
    assert ads1115.config_word(0, 4.096, 128) == 0xC383
    assert ads1115.config_word(3, 0.256, 860) == 0x8000 | (7 << 12) | (5 << 9) | 0x0100 | (7 << 5) | 3
    assert ads1115.config_word(1, 6.144, 8) == 0x8000 | (5 << 12) | 0x0100 | 3
    for bad in ((4, 4.096, 128), (0, 5.0, 128), (0, 4.096, 100)):
        _raises(ValueError, ads1115.config_word, *bad)
    assert ads1115.raw_to_uv(32767, 4.096) == 4095875 and ads1115.raw_to_uv(-32768, 4.096) == -4096000


def test_ads1115_single_shot_waits_for_the_conversion():
    clk = _Clock()
    volts = {0: 1.5, 1: 5.0, 2: -0.1, 3: 0.2}
    dev = kc_fake_prov.FakeADS1115({i: (lambda i=i: volts[i]) for i in range(4)}, clk)
    adc = ads1115.ADS1115(dev, sleep_ms=clk.sleep_ms)
    assert adc.read_uv(0) == 1500000  # 12000 counts of 125 uV
    assert dev.early_reads == 0 and dev.conversions == 1
    assert adc.read_raw(1) == 32767  # beyond the full-scale range: clipped, not wrapped
    assert adc.read_raw(2) == -800
    t0 = clk.t
    assert adc.read_raw(3, 0.256, 8) == 25600  # +-0.256 V: 7.8 uV per count
    assert clk.t - t0 >= 125  # 8 SPS: one conversion takes 125 ms
    # the single-shot word left in the config register: power-down mode, comparator off
    assert dev.config & 0x0103 == 0x0103


def test_ads1115_stuck_conversion_is_an_oserror():
    clk = _Clock()
    dev = kc_fake_prov.FakeADS1115({0: lambda: 1.0}, clk)
    adc = ads1115.ADS1115(dev, sleep_ms=lambda ms: None)  # time never advances: OS stays 0
    _raises(OSError, adc.read_raw, 0)
    _raises(OSError, ads1115.ADS1115(dev, addr=0x49, sleep_ms=clk.sleep_ms).read_raw, 0)  # no device


class _AdsWaterBoard(kc_fakes.FakeBoard):
    """Water probes wired to an ADS1115 (AIN0 pH, AIN1 TDS, AIN2 turbidity) whose inputs are
    the voltages the fake probes put out (through the same dividers as on the ESP32 ADC)."""

    def __init__(self):
        self.clk = _Clock()
        kc_fakes.FakeBoard.__init__(self, "water", lambda: 0.0)
        esp = self.adcs
        ins = {}
        for i, name in enumerate(("ph", "tds", "turbidity")):
            ins[i] = (lambda a=esp[name]: a.volts() / a.divider)
        ins[3] = lambda: 0.0
        self.ads = kc_fake_prov.FakeADS1115(ins, self.clk)
        drv = ads1115.ADS1115(self.ads, sleep_ms=self.clk.sleep_ms)
        self.chans = {"ph": drv.channel(0), "tds": drv.channel(1), "turbidity": drv.channel(2)}

    def adc(self, name):
        return self.chans.get(name) or self.adcs[name]

    def sleep_ms(self, ms):
        self.clk.sleep_ms(ms)


def test_water_suite_reads_through_ads1115():
    import kc_sensors
    board = _AdsWaterBoard()
    w = board.world
    w.override.update({"turbidity": 4.0, "tds": 180.0, "ph": 7.2, "temperature": 27.0})
    suite = kc_sensors.make("water", board, dict(kc_sensors.CAL_DEFAULTS["water"]))
    r = suite.read()
    assert suite.errors == {}, suite.errors
    # 125 uV per count: ~0.7 NTU per count on the SEN0189 curve behind the 1.5:1 divider
    assert abs(r["turbidity"] - 4.0) <= 1.0, r
    assert abs(r["tds"] - 180.0) <= 0.5 and abs(r["ph"] - 7.2) <= 0.01, r
    assert board.ads.early_reads == 0 and board.ads.conversions == 3 * 16  # 16-sample bursts


def test_turbidity_resolution_esp32_vs_ads1115():
    """What one step of each front end is worth near clear water (the figures in the docs)."""
    def ntu_per_step(step_v, divider=1.5):
        v = 4.1  # the SEN0189 output for a few NTU
        return analog.ntu_from_volts(v - step_v * divider) - analog.ntu_from_volts(v)
    esp = ntu_per_step(0.001)  # the ESP32 ADC's read_uv is calibrated in mV steps, ~2 mV noise
    ads = ntu_per_step(0.000125)  # one ADS1115 count at +-4.096 V
    assert 4.5 < esp < 6.5 and 0.5 < ads < 0.9, (esp, ads)


def test_ads1115_config_validation():
    base = {"kind": "water", "device": "W-1"}
    ok = dict(base, ads1115={"channels": {"ph": 0, "turbidity": 2}, "fsr": 4.096, "sps": 250})
    assert kc_config.validate_device(ok)["ads1115"]["sps"] == 250
    for bad in ({"channels": {"ph": 4}}, {"channels": {"ph": 0}, "fsr": 3.3}, {"channels": {"pm25": 0}},
                {"channels": {"ph": 0}, "addr": 0x50}, {"channels": [0]}):
        _raises(kc_config.ConfigError, kc_config.validate_device, dict(base, ads1115=bad))
    _raises(kc_config.ConfigError, kc_config.validate_device,
            {"kind": "air", "device": "A-1", "ads1115": {"channels": {"ph": 0}}})


# -- Improv serial ---------------------------------------------------------------

def _client_rpc(cmd, data=b""):
    """An RPC frame built the way the spec's client does, checksum summed here independently."""
    body = b"IMPROV" + bytes([1, 3, len(data) + 2, cmd, len(data)]) + data
    total = 0
    for x in body:
        total += x
    return body + bytes([total % 256])


def _improv(nets=None):
    import kc_improv
    sent = kc_fake_prov.FakeSerial()
    tried = []

    def connect(ssid, pw):
        tried.append((ssid, pw))
        return "http://192.168.1.50/" if (nets or {}).get(ssid) == pw else None
    svc = kc_improv.ImprovService(sent.write, connect, ("kotacerdas", "1.0.0", "esp32", "WTR-7"),
                                  scan=lambda: [("site-ap", -52, True), ("warung", -80, False)])
    return svc, sent, tried


def _frames(raw):
    import kc_improv
    return kc_improv.Parser().feed(raw)


def test_improv_frames_and_checksum():
    import kc_improv
    f = kc_improv.frame(kc_improv.T_STATE, b"\x02")
    assert f[:9] == b"IMPROV\x01\x01\x01" and f[9] == 2 and f[10] == sum(f[:10]) % 256
    # the spec's example: SSID MyWirelessAP, password mysecurepassword -> 01 1E 0C .. 10 ..
    rpc = _client_rpc(1, b"\x0cMyWirelessAP\x10mysecurepassword")
    assert rpc[9:12] == b"\x01\x1e\x0c" and rpc[8] == 0x20
    assert kc_improv.parse_wifi(rpc[11:-1]) == ("MyWirelessAP", "mysecurepassword")
    for bad in (b"\x05ab", b"\x02ab\x05xy", b"\x01"):
        _raises(ValueError, kc_improv.parse_wifi, bad)
    r = kc_improv.result(kc_improv.C_INFO, ["a", "bc"])
    assert r[7] == 4 and r[8] == 7 and r[9:16] == b"\x03\x05\x01a\x02bc"


def test_improv_parser_resyncs_over_noise_and_split_reads():
    import kc_improv
    p = kc_improv.Parser()
    good = _client_rpc(2)
    bad = bytearray(_client_rpc(3))
    bad[-1] ^= 0xFF
    stream = b">>> print('hi')\r\nIMPRO" + good + bytes(bad) + b"\nIMPROV\x02\x03\x02\x02\x00\x00" + good
    got = []
    for i in range(len(stream)):  # one byte at a time, as a UART delivers them
        got += p.feed(stream[i:i + 1])
    assert got == [(3, b"\x02\x00"), (None, "checksum"), (None, "version"), (3, b"\x02\x00")], got
    assert len(p.buf) < 16


def test_improv_full_exchange():
    import kc_improv
    svc, sent, tried = _improv({"site-ap": "s3cret-pass"})
    svc.feed(_client_rpc(3))  # device info
    svc.feed(_client_rpc(4))  # scan
    out = _frames(bytes(sent.tx))
    assert out[0] == (kc_improv.T_ERROR, b"\x00")
    assert out[1] == (kc_improv.T_RESULT, b"\x03\x1d\x0akotacerdas\x051.0.0\x05esp32\x05WTR-7")
    assert out[3][1] == b"\x04\x10\x07site-ap\x03-52\x03YES" and out[-1][1] == b"\x04\x00"
    sent.tx = bytearray()
    # wrong password: provisioning, then error "unable to connect" and back to ready
    svc.feed(_client_rpc(1, b"\x07site-ap\x05wrong"))
    assert _frames(bytes(sent.tx)) == [(2, b"\x00"), (1, b"\x03"), (2, b"\x03"), (1, b"\x02")]
    assert svc.provisioned is None and tried == [("site-ap", "wrong")]
    sent.tx = bytearray()
    svc.feed(_client_rpc(1, b"\x07site-ap\x0bs3cret-pass"))
    url = b"http://192.168.1.50/"
    assert _frames(bytes(sent.tx)) == [(2, b"\x00"), (1, b"\x03"), (1, b"\x04"),
                                    (4, bytes([1, len(url) + 1, len(url)]) + url)]
    assert svc.provisioned == ("site-ap", "s3cret-pass") and svc.state == kc_improv.S_PROVISIONED
    sent.tx = bytearray()
    svc.feed(_client_rpc(2))  # current state again: provisioned plus the same result
    assert [f[0] for f in _frames(bytes(sent.tx))] == [2, 1, 4]


def test_improv_bad_packets_are_counted_errors():
    svc, sent, tried = _improv()
    svc.feed(_client_rpc(9))
    assert _frames(bytes(sent.tx))[-1] == (2, b"\x02")  # unknown RPC command
    sent.tx = bytearray()
    bad = bytearray(_client_rpc(1, b"\x07site-ap\x02pw"))
    bad[-1] ^= 1
    svc.feed(bytes(bad))
    svc.feed(_client_rpc(1, b"\x09site-ap\x02pw"))  # ssid length beyond the data
    svc.feed(b"IMPROV\x01\x03\x03\x01\x05\x00" + b"\x00")  # inner length disagrees
    errs = [f for f in _frames(bytes(sent.tx)) if f[0] == 2 and f[1] == b"\x01"]
    assert len(errs) == 3 and svc.bad == 3 and tried == [] and svc.state == 2


# -- several networks, status LED ---------------------------------------------------

def test_wifi_plan_order():
    import kc_wifi
    nets = [{"ssid": "phone"}, {"ssid": "site-ap"}, {"ssid": "backup"}]
    assert kc_wifi.plan(nets) == [0, 1, 2]  # no scan: configured order
    seen = {"site-ap": -70, "backup": -50}
    assert kc_wifi.plan(nets, seen=seen) == [2, 1, 0]  # strongest first, unseen (hidden?) last
    assert kc_wifi.plan(nets, last_good=1, seen=seen) == [1, 2, 0]  # the one that worked first
    assert kc_wifi.plan(nets, last_good=0, seen=seen) == [2, 1, 0]  # ... if it is on the air
    assert kc_wifi.plan(nets, last_good=2) == [2, 0, 1]
    scan = [(b"site-ap", b"", 1, -80, 3, False), (b"site-ap", b"", 6, -60, 3, False), (b"\xff", b"", 1, -1, 0, 0)]
    assert kc_wifi.scan_map(scan) == {"site-ap": -60}


class _RadioBoard(kc_fakes.SimBoard):
    """The simulated board with its Wi-Fi and LED from kc_fake_prov (network.WLAN, machine.Pin)."""

    def __init__(self, storage, wlan, kind="water", battery_v=None):
        kc_fakes.SimBoard.__init__(self, kind, storage, battery_v)
        self.wlan = wlan
        self.pin = kc_fake_prov.RecordingPin(lambda: self.t)
        self.on_wait = None
        self.windows = []  # (t, why, ms) of each set-up window the node asked for

    def setup_window(self, why, window_ms):
        # kc_board writes main.py's request and resets; the test's "reset" is a new Node
        self.windows.append((self.t, why, window_ms))
        raise kc_fakes.Reset()

    def wifi_connect(self, ssid, pw):
        self.wlan.connect(ssid, pw)
        for _ in range(30):  # a failed association takes seconds; kc_board waits in 100 ms slices
            if self.wlan.isconnected():
                break
            self.t += 100
            if self.on_wait is not None:
                self.on_wait()

    def wifi_connected(self):
        return self.wlan.isconnected()

    def wifi_scan(self):
        return self.wlan.scan()

    def led_pin(self):
        return self.pin


NETS = [{"ssid": "phone", "password": "p1"}, {"ssid": "site-ap", "password": "good-pass"},
        {"ssid": "backup", "password": "stale-pass"}]


def _radio_node(board):
    from kc_node import Node
    cfg = kc_config.validate_device({"kind": "water", "device": "W-9", "interval_s": 5, "wifi_networks": NETS,
                                     "ring": {"capacity": 32, "slot": 384}})
    return Node(board, cfg)


def test_several_networks_strongest_first_last_good_remembered():
    wlan = kc_fake_prov.FakeWLAN({"site-ap": ("good-pass", -70), "backup": ("new-pass", -50)})
    board = _RadioBoard(_dir("wifi"), wlan)
    node = _radio_node(board)
    node.run(max_readings=1)
    assert wlan.attempts == ["backup", "site-ap"], wlan.attempts  # backup is stronger but refuses
    assert node.wifi.last_good == 1 and wlan.scans == 1
    node.shutdown()
    # the next boot (RTC memory kept, e.g. a reboot command): the good one first, no wrong try
    wlan.disconnect()
    del wlan.attempts[:]
    node = _radio_node(board)
    node.run(max_readings=1)
    assert wlan.attempts == ["site-ap"] and node.stats["delivered"] >= 1
    node.shutdown()


def test_failed_rounds_counted_in_rtc_memory_and_no_scan_radio():
    wlan = kc_fake_prov.FakeWLAN({}, can_scan=False)  # nothing on the air, radio cannot scan
    board = _RadioBoard(_dir("wifi_none"), wlan)
    node = _radio_node(board)
    node.run(duration_ms=60000)
    rounds = node.wifi.rounds_failed
    assert rounds >= 2 and wlan.attempts[:6] == ["phone", "site-ap", "backup"] * 2, (rounds, wlan.attempts)
    node._save_rtc()
    node = _radio_node(board)  # after a reset the counter is still there
    assert node.wifi.rounds_failed == rounds
    wlan.nets["phone"] = ("p1", -40)
    node.run(max_readings=3)
    assert node.wifi.rounds_failed == 0 and node.wifi.last_good == 0 and node.stats["delivered"] >= 1
    node.shutdown()


def test_fallback_window_schedule():
    import kc_wifi
    due = [r for r in range(1, 400) if kc_wifi.fallback_due(r, 10)]
    assert due == [10, 20, 40, 80, 160, 320], due  # doubling, then every 16 n
    assert [r for r in range(1, 2000) if kc_wifi.fallback_due(r, 10)][6:9] == [480, 640, 800]
    assert not any(kc_wifi.fallback_due(r, 0) for r in range(0, 100))  # 0: never
    assert [r for r in range(1, 6) if kc_wifi.fallback_due(r, 1)] == [1, 2, 4]


def _fallback_node(board, extra=None, kind="water"):
    from kc_node import Node
    doc = {"kind": kind, "device": "N-7", "interval_s": 30, "wifi_networks": NETS[:2],
           "ring": {"capacity": 64, "slot": 384}, "ap_fallback_rounds": 3, "ap_fallback_s": 120}
    doc.update(extra or {})
    return Node(board, kc_config.validate_device(doc))


def _run_to_window(board, node, ms=3600000):
    try:
        node.run(duration_ms=ms)
    except kc_fakes.Reset:
        return True
    return False


def test_changed_password_opens_the_setup_window_then_back_to_the_node():
    """The site's password changed: every network refuses. After ap_fallback_rounds failed rounds
    the node asks for the set-up window (ap_fallback_s) once, with RTC memory saved; the next boot
    is the node again, counting on, with the next window at 2n rounds (not n+1); when the Wi-Fi
    works again (new password or outage over) the count starts afresh and readings flow."""
    wlan = kc_fake_prov.FakeWLAN({"phone": ("other", -40), "site-ap": ("new-pass-9", -60)})
    board = _RadioBoard(_dir("fallback"), wlan)
    node = _fallback_node(board)
    assert _run_to_window(board, node), "no set-up window"
    assert board.windows == [(board.t, "no Wi-Fi for 3 rounds", 120000)], board.windows
    assert len(wlan.attempts) == 6 and node.stats["wifi_fails"] == 6  # 3 rounds of 2 networks
    readings = node.stats["readings"]
    assert readings >= 1
    node = _fallback_node(board)  # after the window: main.py resets into the node (RTC kept)
    assert node.wifi.rounds_failed == 3 and node.ring.seq == readings
    assert _run_to_window(board, node)
    assert [w[1] for w in board.windows] == ["no Wi-Fi for 3 rounds", "no Wi-Fi for 6 rounds"]
    assert len(wlan.attempts) == 12, wlan.attempts  # 2n rounds, no window in between
    node = _fallback_node(board)
    wlan.nets["site-ap"] = ("good-pass", -60)  # the old password works again, the broker is down
    board.down = True
    assert not _run_to_window(board, node, 900000)  # no set-up AP for a broker outage
    assert node.wifi.rounds_failed == 0 and node.stats["mqtt_fails"] >= 5 and len(board.windows) == 2
    board.down = False
    node.run(max_readings=node.stats["readings"] + 2)
    assert node.wifi.rounds_failed == 0 and node.stats["delivered"] >= 2 and len(board.windows) == 2
    node.shutdown()


def test_no_window_on_a_low_battery_or_when_switched_off():
    wlan = kc_fake_prov.FakeWLAN({})
    # a mains-less bin kept awake (deep_sleep off) whose cell is nearly empty: the AP would brown it out
    board = _RadioBoard(_dir("fallback_lowbat"), wlan, kind="waste_bin", battery_v=3.3)
    node = _fallback_node(board, {"deep_sleep": False}, kind="waste_bin")
    assert not _run_to_window(board, node, 900000)
    assert board.windows == [] and node.wifi.rounds_failed >= 6 and node.stats["ap_low_battery"] >= 2, node.stats
    board = _RadioBoard(_dir("fallback_off"), kc_fake_prov.FakeWLAN({}))
    node = _fallback_node(board, {"ap_fallback_rounds": 0})
    assert not _run_to_window(board, node, 900000) and board.windows == [] and node.wifi.rounds_failed >= 6
    # the config topic can switch it on later (same rules as kotacerdas.device_config)
    node._apply_remote(kc_config.validate_remote({"v": 1, "ap_fallback_rounds": 1, "ap_fallback_s": 60}, "water",
                                                 node.cal), persist=False)
    node.wifi.rounds_failed = 0
    assert _run_to_window(board, node) and board.windows[0][1:] == ("no Wi-Fi for 1 rounds", 60000)


def test_sleeping_node_tries_every_network_each_wake_and_counts_rounds():
    """A deep-sleep bin with two networks: each wake tries both (one round), sleeps the full
    interval after the round failed, and the window comes after ap_fallback_rounds such wakes
    that tried the radio (wakes skipped by the failure back-off do not count)."""
    wlan = kc_fake_prov.FakeWLAN({"site-ap": ("new-pass-9", -60)})
    board = _RadioBoard(_dir("fallback_sleep"), wlan, kind="waste_bin")
    tried_wakes = 0
    for wake in range(200):
        node = _fallback_node(board, {"interval_s": 600}, kind="waste_bin")
        before = len(wlan.attempts)
        try:
            node.run(duration_ms=600000)
            raise AssertionError("stayed awake")
        except kc_fakes.DeepSleep as e:
            board.t += e.ms
        except kc_fakes.Reset:
            break
        n = len(wlan.attempts) - before
        assert n in (0, 2), (wake, n)  # the whole round or, backing off, no radio at all
        tried_wakes += n // 2
        assert node.wifi.rounds_failed == tried_wakes
    assert board.windows and board.windows[0][1] == "no Wi-Fi for 3 rounds", board.windows
    assert tried_wakes == 2 and wake > 3  # the third round's wake asked for the window
    # unset: fewer rounds for a sleeping node (its rounds are hours apart) than for an awake one
    from kc_node import Node
    for kind, want in (("waste_bin", kc_config.AP_FALLBACK_ROUNDS_SLEEP), ("water", kc_config.AP_FALLBACK_ROUNDS)):
        cfg = kc_config.validate_device({"kind": kind, "device": "D-1", "ring": {"capacity": 32, "slot": 384}})
        assert Node(_RadioBoard(_dir("dflt"), kc_fake_prov.FakeWLAN({}), kind=kind), cfg).ap_rounds == want
    assert (kc_config.AP_FALLBACK_ROUNDS, kc_config.AP_FALLBACK_ROUNDS_SLEEP) == (20, 4)
    _raises(kc_config.ConfigError, kc_config.validate_device, {"kind": "air", "device": "A", "ap_fallback_rounds": None})


def _on_runs(edges, t_from, t_to):
    """Lengths (ms) of the lit periods that start and end inside [t_from, t_to]."""
    out = []
    for i in range(len(edges) - 1):
        t, v = edges[i]
        if v == 1 and t_from <= t and edges[i + 1][0] <= t_to:
            out.append(edges[i + 1][0] - t)
    return out


def test_status_led_patterns():
    import kc_led
    wlan = kc_fake_prov.FakeWLAN({})
    board = _RadioBoard(_dir("led"), wlan)
    node = _radio_node(board)
    node.run(duration_ms=8000)  # no network at all: slow blink
    runs = _on_runs(board.pin.edges, 0, board.t)
    # a sensor reading (DS18B20: 750 ms conversion) blocks and stretches the phase it falls in
    assert node.led.mode == "connecting" and runs.count(500) >= len(runs) - 2 >= 4, board.pin.edges
    # Wi-Fi comes, the broker does not: double flash
    wlan.nets["site-ap"] = ("good-pass", -60)
    board.down = True
    t1 = board.t
    node.run(duration_ms=15000)
    assert node.led.mode == "error" and node.stats["mqtt_fails"] >= 1 and node.wifi_fails == 0
    runs = _on_runs(board.pin.edges, t1 + 4000, board.t)
    # 150 ms flashes seen by a loop that steps 100 ms while offline (50 ms wait + watchdog feed)
    # (a sensor reading stretches the flash it falls in, as in the slow blink above)
    assert len(runs) >= 6 and len([r for r in runs if r <= 200]) >= len(runs) - 2, runs
    offs = [b[0] - a[0] for a, b in zip(board.pin.edges, board.pin.edges[1:]) if a[0] > t1 + 4000 and a[1] == 0]
    assert min(offs) <= 200 and max(offs) >= 1000, offs  # two flashes, then the long pause
    board.down = False
    node.run(max_readings=node.stats["readings"] + 1)
    assert node.led.mode == "connected" and board.pin.v == 1 and node.client.connected()
    assert kc_led.PATTERNS["provision"] == (100, 100)
    node.shutdown()


# -- access-point page: form handling (the server itself: test_provisioning_unix.py) ----------

def test_portal_form_rules():
    import kc_portal
    import kc_provision
    assert kc_portal.url_decode("a+b%20c%C3%A9%26") == "a b c\u00e9&"
    assert kc_portal.parse_form("ssid1=caf%C3%A9+net&pass1=&x") == {"ssid1": "caf\u00e9 net", "pass1": "", "x": ""}
    assert kc_portal.esc('<a href="x">&\'') == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    current = {"kind": "water", "device": "W-1", "wifi_networks": [{"ssid": "site", "password": "old-secret"}],
               "mqtt": {"host": "a", "port": 1883, "user": "W-1", "password": "mqtt-pw"}}
    doc = kc_portal.apply_form(current, {"ssid1": "site", "pass1": "", "ssid3": "open-net", "mqtt_host": "b"})
    assert doc["wifi_networks"] == [{"ssid": "site", "password": "old-secret"}, {"ssid": "open-net", "password": ""}]
    assert doc["mqtt"] == {"host": "b", "port": 1883, "user": "W-1", "password": "mqtt-pw"}  # account kept
    assert kc_portal.apply_form({}, {"ssid1": "s", "pass1": "f" * 64, "kind": "air", "device": "A-1"})
    for form, why in (({"ssid1": "s" * 33, "kind": "air", "device": "A"}, "SSID"),
                      ({"ssid1": "s", "pass1": "x" * 7, "kind": "air", "device": "A"}, "8..63"),
                      ({"ssid1": "s", "pass1": "caf\u00e9-password", "kind": "air", "device": "A"}, "ASCII"),
                      ({"kind": "air", "device": "A"}, "at least one"),
                      ({"ssid1": "s", "kind": "air", "device": "A", "mqtt_port": "99999"}, "mqtt.port"),
                      ({"ssid1": "s", "kind": "boat", "device": "A"}, "kind"),
                      ({"ssid1": "s", "kind": "air", "device": "A", "mqtt_host": "a b"}, "MQTT host")):
        e = _raises(kc_config.ConfigError, kc_portal.apply_form, {}, form)
        assert why in str(e), (why, e)
    page = kc_portal.page(current, "<script>")
    assert "old-secret" not in page and "mqtt-pw" not in page and "&lt;script&gt;" in page
    assert kc_provision.reason(current) is None and kc_provision.reason(current, True) == "button"
    assert kc_provision.reason({}).startswith("config:")
    assert kc_provision.reason({"kind": "air", "device": "A"}) == "no Wi-Fi network configured"


def _form_of(page):
    """What a browser submits for `page` untouched: every input's value, the selected option."""
    import kc_portal
    form = {}
    i = 0
    while True:
        i = page.find("<input ", i)
        if i < 0:
            break
        tag = page[i:page.find(">", i)]
        name = tag.split('name="')[1].split('"')[0]
        form[name] = tag.split('value="')[1].split('"')[0] if 'value="' in tag else ""
        i += 1
    sel = page.split('<select name="')[1]
    opt = sel.split("<option selected>")[1].split("<")[0] if "<option selected>" in sel else ""
    form[sel.split('"')[0]] = opt
    for k in form:  # the page's escaping undone, as a browser does
        form[k] = kc_portal.url_decode(form[k].replace("&quot;", '"').replace("&lt;", "<").replace(
            "&gt;", ">").replace("&#39;", "'").replace("&amp;", "&").replace("%", "%25"))
    return form


def test_page_keeps_existing_values_so_only_the_wifi_changes():
    """An installer who only replaces the site's Wi-Fi: every other field comes pre-filled from
    config.json (passwords excepted), so submitting the page keeps the node's identity and broker."""
    import kc_portal
    current = {"kind": "waste_bin", "device": "BIN-0042", "city": "bogor", "root": "kc",
               "wifi_networks": [{"ssid": "old-ap", "password": "old-secret"}, {"ssid": "phone & co", "password": ""}],
               "mqtt": {"host": "mqtt.kota.example", "port": 8883, "user": "BIN-0042", "password": "mqtt-pw",
                        "tls": True}, "ap_password": "label-pass-1"}
    page = kc_portal.page(current)
    form = _form_of(page)
    assert form["ssid1"] == "old-ap" and form["ssid2"] == "phone & co" and form["ssid3"] == "", form
    assert form["pass1"] == form["pass2"] == "" and "old-secret" not in page and "mqtt-pw" not in page
    assert "label-pass-1" not in page
    assert (form["device"], form["city"], form["kind"]) == ("BIN-0042", "bogor", "waste_bin"), form
    assert (form["mqtt_host"], form["mqtt_port"]) == ("mqtt.kota.example", "8883"), form
    # untouched page: the same config back (stored passwords kept for the same SSIDs; `wifi` is the first)
    assert kc_portal.apply_form(current, form) == dict(current, wifi=current["wifi_networks"][0])
    # only the first network replaced: everything else stays as it was
    form.update({"ssid1": "new-ap", "pass1": "new-secret-9"})
    doc = kc_portal.apply_form(current, form)
    assert doc["wifi_networks"] == [{"ssid": "new-ap", "password": "new-secret-9"},
                                    {"ssid": "phone & co", "password": ""}]
    assert doc["wifi"] == doc["wifi_networks"][0]
    for k in ("kind", "device", "city", "root", "mqtt", "ap_password"):
        assert doc[k] == current[k], k


def test_ap_password_made_once_and_kept():
    import kc_provision
    seq = [bytes(range(12)), bytes(range(200, 212))]
    pw = kc_provision.new_ap_password(lambda n: seq[0][:n])
    assert pw == "abcd-efgh-ijkm" and len(kc_provision.AP_PASS_ALPHABET) == 32
    path = _dir("appw") + "/config.json"
    doc = {"kind": "air", "device": "A-1"}
    kc_config.save_json(path, doc)
    got = kc_provision.ap_password(doc, path, lambda n: seq[1][:n])
    assert kc_config.load_json(path) == {"kind": "air", "device": "A-1", "ap_password": got}
    kc_config.check_passphrase(got)
    assert kc_provision.ap_password(kc_config.load_json(path), path, lambda n: seq[0][:n]) == got  # kept
    assert kc_config.validate_device(kc_config.load_json(path))["ap_password"] == got
    for bad in ("short", "x" * 64, "caf\u00e9-password", 12345678):
        _raises(kc_config.ConfigError, kc_config.validate_device, dict(doc, ap_password=bad))
    # a factory-fresh node (no config.json): a file with only the passphrase, still provisioning mode
    fresh = _dir("appw") + "/config.json"
    pw2 = kc_provision.ap_password({}, fresh, lambda n: seq[0][:n])
    assert kc_config.load_json(fresh) == {"ap_password": pw2} and kc_provision.reason({"ap_password": pw2})


def test_fallback_window_request_taken_once():
    import kc_provision
    path = _dir("window") + "/setup_window.json"
    assert kc_provision.take_window(path) is None
    kc_provision.request_window(path, "no Wi-Fi for 10 rounds", 300000)
    assert kc_provision.take_window(path) == ("no Wi-Fi for 10 rounds", 300000)
    assert kc_provision.take_window(path) is None  # consumed: the next boot runs the node
    kc_config.save_json(path, {"why": "x", "ms": 10 ** 9})
    assert kc_provision.take_window(path) == ("x", kc_provision.AP_TIMEOUT_MS)  # never unbounded
    kc_config.save_json(path, {"why": "x", "ms": "soon"})
    assert kc_provision.take_window(path) is None


def test_captive_dns_answer_format():
    import kc_portal
    # RFC 1035 4.1: id 0xBEEF, RD, one question "a.io" A IN
    q = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x02io\x00\x00\x01\x00\x01"
    r = kc_portal.dns_answer(q, "192.168.4.1")
    assert r[:12] == b"\xbe\xef\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00" and r[12:22] == q[12:]
    assert r[22:] == b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\xa8\x04\x01"
    aaaa = q[:-3] + b"\x1c\x00\x01"
    assert kc_portal.dns_answer(aaaa, "192.168.4.1")[6:8] == b"\x00\x00"  # no answer records
    for bad in (q[:15], b"\xbe\xef\x81" + q[3:], q[:4] + b"\x00\x02" + q[6:], q[:12] + b"\xc0\x0c\x00\x01\x00\x01",
                q[:12] + b"\x09abc"):
        _raises(ValueError, kc_portal.dns_answer, bad, "192.168.4.1")


def run_all(names=None):
    import mp_units  # the shared MicroPython-side case runner
    mp_units.run_cases(globals(), names)
    print("DONE")
