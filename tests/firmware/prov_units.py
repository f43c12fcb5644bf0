# Field provisioning and ADS1115 cases that run unchanged on MicroPython's unix port and on
# CPython (tests/firmware/test_provisioning.py runs both). Plain asserts, no pytest.
try:
    import kc_config
except ImportError:  # CPython: make the flat device modules importable
    from firmware.virtual import device_path
    device_path()
    import kc_config

import json

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


def run_all(names=None):
    import sys
    g = globals()
    for name in sorted(g):
        if not name.startswith("test_") or (names and name not in names):
            continue
        try:
            g[name]()
            print("PASS " + name)
        except Exception as e:  # noqa: BLE001  one line per case for the pytest side
            print("FAIL %s: %r" % (name, e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
    print("DONE")
    _ = json
