# Fake hardware that speaks each part's real wire protocol, so the real drivers run
# unchanged against it: a PMS5003 that answers passive-mode reads with checksummed
# 32-byte frames, an MH-Z19B that answers 0x86, a BME280 register file whose raw ADC
# words are found by inverting the datasheet compensation, a DS18B20 scratchpad with
# its CRC, ADC channels whose voltages invert each analog driver's curve, an
# ultrasonic echo timed from the speed of sound. Valid MicroPython and CPython.
import math
import struct

import kc_schema

# Drivers are imported where used: a kind's bundle (firmware/build/<kind>) ships only
# its own drivers, and this module must load next to any of them.


class World:
    """The true environment: catalogue typical values with a slow daily-like swing."""

    def __init__(self, kind, clock, seed=1, amplitude=0.1, period_s=3600.0):
        self.kind = kind
        self.clock = clock  # clock() -> seconds
        self.seed = seed
        self.amplitude = amplitude
        self.period_s = period_s
        self.override = {}
        self.typical = {}
        for f in kc_schema.KINDS[kind][2]:
            self.typical[f[0]] = f[5]

    def value(self, name):
        if name in self.override:
            return self.override[name]
        base = self.typical[name]
        phase = (self.seed * 0.7 + len(name)) % 6.28
        return base * (1 + self.amplitude * math.sin(2 * math.pi * self.clock() / self.period_s + phase))


def invert(fn, target, lo, hi, iters=40):
    """x in [lo, hi] with fn(x) ~ target for a monotonic fn (bisection)."""
    inc = fn(hi) > fn(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (fn(mid) < target) == inc:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class FakeADC:
    def __init__(self, volts, divider=1.0, clock=None):
        self.volts = volts  # callable -> volts at the sensor output
        self.divider = divider
        self.clock = clock
        self._at = None
        self._uv = 0

    def read_uv(self):
        # a burst of samples at one instant inverts the sensor curve once, not per sample
        now = self.clock() if self.clock is not None else None
        if now is None or now != self._at:
            self._uv = int(self.volts() / self.divider * 1e6)
            self._at = now
        return self._uv


class FakePin:
    def __init__(self, v=0):
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        return None


class FakePMS5003:
    """UART peer: answers CMD_READ with a frame; honours sleep (no answer while asleep)."""

    def __init__(self, world, corrupt_every=0):
        self.world = world
        self.out = b""
        self.asleep = False
        self.corrupt_every = corrupt_every
        self.reads = 0

    def frame(self, pm1, pm25, pm10):
        words = [pm1, pm25, pm10, pm1, pm25, pm10, 1000, 300, 50, 10, 2, 1, 0]
        body = b"\x42\x4d" + struct.pack(">H", 28) + struct.pack(">13H", *words)
        return body + struct.pack(">H", sum(body) & 0xFFFF)

    def write(self, data):
        from kc_drivers import pms5003
        if len(data) != 7 or data[0] != 0x42 or data[1] != 0x4D:
            return len(data)
        if data[2] == pms5003.CMD_SLEEP:
            self.asleep = data[4] == 0
        elif data[2] == pms5003.CMD_READ and not self.asleep:
            self.reads += 1
            # no inlet dryer: above 80 % RH the sensor sees grown, wet particles
            wet = 1.0
            rh = self.world.value("humidity")
            if rh > pms5003.RH_REF:
                wet = pms5003.growth(rh, 0.2) / pms5003.growth(pms5003.RH_REF, 0.2)
            pm25 = int(round(self.world.value("pm25") * wet))
            pm10 = int(round(max(self.world.value("pm10") * wet, pm25)))
            f = self.frame(int(pm25 * 0.7), pm25, pm10)
            if self.corrupt_every and self.reads % self.corrupt_every == 0:
                f = f[:-1] + bytes([(f[-1] + 1) & 0xFF])
            self.out += b"\x00\x42" + f  # leading noise: the driver must resynchronise
        return len(data)

    def any(self):
        return len(self.out)

    def read(self, n=None):
        if not self.out:
            return None
        n = len(self.out) if n is None else n
        d, self.out = self.out[:n], self.out[n:]
        return d


class FakeMHZ19B(FakePMS5003):
    def write(self, data):
        from kc_drivers import mhz19b
        if len(data) == 9 and data[0] == 0xFF and data[8] == mhz19b.checksum(data) and data[2] == mhz19b.CMD_READ:
            ppm = int(round(self.world.value("co2")))
            r = bytearray([0xFF, 0x86, ppm >> 8, ppm & 0xFF, 0x40, 0, 0, 0, 0])
            r[8] = mhz19b.checksum(r)
            self.out += bytes(r)
        return len(data)


# Calibration words of a real BME280 (read from a sensor on a breakout board).
BME_CAL1 = struct.pack("<HhhHhhhhhhhhB", 28244, 26571, 50, 36697, -10456, 3024, 10032, -25, -7, 9900,
                       -10230, 4285, 0) + bytes([75])
BME_CAL2 = bytes([0x6A, 0x01, 0x00, 0x13, 0x2C, 0x03, 0x1E])


class FakeBME280:
    def __init__(self, world):
        from kc_drivers import bme280
        self.bme280 = bme280
        self.world = world
        self.cal = bme280.parse_calibration(BME_CAL1, BME_CAL2)
        self.regs = {}

    def _raw(self):
        t = self.world.value("temperature")
        h = self.world.value("humidity")
        cal = self.cal
        bme280 = self.bme280
        adc_t = int(invert(lambda x: bme280.compensate_t(int(x), cal)[0], t * 100, 0, 1048575))
        t_fine = bme280.compensate_t(adc_t, cal)[1]
        adc_h = int(invert(lambda x: bme280.compensate_h(int(x), t_fine, cal), h * 1024, 0, 65535))
        return adc_t, adc_h

    def readfrom_mem(self, addr, reg, n):
        bme280 = self.bme280
        if reg == bme280.REG_ID:
            return bytes([bme280.CHIP_ID])
        if reg == 0x88:
            return BME_CAL1[:n]
        if reg == 0xE1:
            return BME_CAL2[:n]
        if reg == bme280.REG_STATUS:
            return b"\x00"
        if reg == bme280.REG_DATA:
            adc_t, adc_h = self._raw()
            return bytes([0x80, 0, 0, (adc_t >> 12) & 0xFF, (adc_t >> 4) & 0xFF, (adc_t & 0xF) << 4,
                          adc_h >> 8, adc_h & 0xFF])[:n]
        return bytes(n)

    def writeto_mem(self, addr, reg, data):
        self.regs[reg] = bytes(data)


class FakeOneWire:
    """A single DS18B20 on the bus: SKIP ROM, CONVERT T, READ SCRATCHPAD."""

    def __init__(self, world, field="temperature"):
        from kc_drivers import ds18b20
        self.ds = ds18b20
        self.world = world
        self.field = field
        self.last = None
        self.temp_raw = ds18b20.POWER_ON_RAW
        self.out = b""
        self.present = True

    def reset(self, required=False):
        self.out = b""
        return self.present

    def writebyte(self, b):
        ds18b20 = self.ds
        if b == ds18b20.CONVERT_T:
            t = self.world.value(self.field)
            self.temp_raw = int(round(t * 16)) & 0xFFFF
        elif b == ds18b20.READ_SCRATCHPAD:
            sp = bytes([self.temp_raw & 0xFF, self.temp_raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
            self.out = sp + bytes([ds18b20.crc8(sp)])

    def write(self, buf):
        pass

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.out[i] if i < len(self.out) else 0xFF


def water_adcs(world, cal):
    from kc_drivers import analog
    ph = analog.PH(None, cal["ph_v7"], cal["ph_v4"], cal["ph_cal_temp"])
    temp = lambda: world.value("temperature")  # noqa: E731
    return {
        "ph": FakeADC(lambda: invert(lambda v: ph.from_volts(v, temp()), world.value("ph"), 0.0, 3.3)),
        "tds": FakeADC(lambda: invert(lambda v: analog.tds_from_volts(v, temp(), cal["tds_k"]),
                                      world.value("tds"), 0.0, 3.0)),
        "turbidity": FakeADC(lambda: invert(analog.ntu_from_volts, world.value("turbidity"), 2.5, 4.2)
                             - cal["turb_offset_v"], divider=1.5),
        "do": FakeADC(lambda: world.value("dissolved_oxygen") * 1000 * (
            cal["do_cal_v"] + 0.035 * (temp() - cal["do_cal_t"])) / analog.DO_SAT[min(40, max(0, int(temp() + 0.5)))]),
        "chlorine": FakeADC(lambda: cal["cl_v0"] + world.value("chlorine") / cal["cl_per_volt"]),
    }


def air_adcs(world, cal):
    from kc_drivers import analog
    out = {}
    for g in ("no2", "o3", "co"):
        def we(g=g):
            ppb = world.value(g) / analog.UGM3_PER_PPB[g]
            mv = cal[g + "_we0"] + ppb * cal[g + "_sens"]
            if g == "o3":  # the OX-B431 also answers NO2
                mv += world.value("no2") / analog.UGM3_PER_PPB["no2"] * cal["o3_no2_sens"]
            return mv / 1000

        def ae(g=g):
            return cal[g + "_ae0"] / 1000
        out[g + "_we"] = FakeADC(we)
        out[g + "_ae"] = FakeADC(ae)
    return out


class FakeBoard:
    """Everything but time, network and storage location (which a subclass supplies)."""

    def __init__(self, kind, clock, seed=1, battery_v=None):
        from kc_sensors import CAL_DEFAULTS
        self.kind = kind
        self.world = World(kind, clock, seed)
        self.cal = dict(CAL_DEFAULTS[kind])
        self.battery_v = battery_v if battery_v is not None else (3.9 if kc_schema.KINDS[kind][1] else 5.0)
        self.adcs = {}
        if kind == "water":
            self.adcs = water_adcs(self.world, self.cal)
        elif kind == "air":
            self.adcs = air_adcs(self.world, self.cal)
        for a in self.adcs.values():
            a.clock = clock
        self.pms = self.co2 = self.bme = self.ow = None
        if kind == "air":
            self.pms = FakePMS5003(self.world)
            self.co2 = FakeMHZ19B(self.world)
            self.bme = FakeBME280(self.world)
        elif kind == "water":
            self.ow = FakeOneWire(self.world)
        self.tilt = FakePin(0)
        self.trig = FakePin(0)
        self.echo = FakePin(0)
        self.rtc = b""
        self.logs = []
        self.wdt_feeds = 0
        self.warmup_scale = 0.0  # the fake sensors are stable at once; warm-up tests set 1.0

    def log(self, msg):
        self.logs.append(msg)
        if len(self.logs) > 50:
            self.logs.pop(0)

    # sensor buses
    def adc(self, name):
        return self.adcs[name]

    def battery_adc(self):
        if not kc_schema.KINDS[self.kind][1]:
            return None  # mains-powered kinds have no cell (kc_board does the same)
        return FakeADC(lambda: self.battery_v, divider=2.0)

    def uart(self, name):
        return self.pms if name == "pms" else self.co2

    def i2c(self):
        return self.bme

    def onewire(self):
        return self.ow

    def ultrasonic_pins(self):
        return self.trig, self.echo

    def tilt_pin(self):
        return self.tilt

    def time_pulse_us(self, pin, level, timeout_us):
        from kc_drivers import ultrasonic
        # echo round trip for the true distance at the true air temperature
        d = self.world.value("distance")
        fill_d = self.cal["depth_cm"] - self.world.value("fill") / 100 * (self.cal["depth_cm"] - self.cal["full_cm"])
        d = fill_d if "fill" in self.world.typical else d
        us = int(d / 100 * 2 / ultrasonic.speed_of_sound(self.world.value("temperature")) * 1e6)
        return us if us < timeout_us else -1

    def board_temperature(self):
        return self.world.value("temperature")

    def wdt_feed(self):
        self.wdt_feeds += 1

    def rtc_load(self):
        return self.rtc

    def rtc_save(self, data):
        self.rtc = bytes(data)

    def sleep_us(self, us):
        pass


class DeepSleep(Exception):
    def __init__(self, ms):
        super().__init__(ms)
        self.ms = ms


class Reset(Exception):
    pass


class FakeBrokerSocket:
    """Loopback stand-in for a broker, for the MicroPython runner only (it has no sockets):
    answers CONNECT, SUBSCRIBE, PUBLISH QoS 1 and PINGREQ like MQTT 3.1.1 requires."""

    def __init__(self, drop_acks=False):
        self.inbox = bytearray()
        self.out = bytearray()
        self.published = []
        self.drop_acks = drop_acks
        self.closed = False

    def settimeout(self, t):
        pass

    def setblocking(self, flag):
        pass

    def write(self, data):
        self.sendall(bytes(data))
        return len(data)

    def readinto(self, buf):
        d = self.recv(len(buf))
        buf[:len(d)] = d
        return len(d)

    def sendall(self, data):
        import kc_mqtt
        if self.closed:
            raise OSError(104)
        self.inbox.extend(data)
        while True:
            p = kc_mqtt.parse_packet(self.inbox)
            if p is None:
                return
            first, body, used = p
            self.inbox = self.inbox[used:]
            t = first & 0xF0
            if t == kc_mqtt.CONNECT:
                self.out.extend(b"\x20\x02\x00\x00")
            elif first == kc_mqtt.SUBSCRIBE:
                self.out.extend(b"\x90\x03" + body[:2] + b"\x01")
            elif t == kc_mqtt.PINGREQ:
                self.out.extend(b"\xd0\x00")
            elif t == kc_mqtt.PUBLISH:
                topic, msg, qos, pid, retain, dup = kc_mqtt.parse_publish(first, body)
                self.published.append((topic, bytes(msg), dup))
                if qos == 1 and not self.drop_acks:
                    self.out.extend(kc_mqtt.encode_puback(pid))

    def recv(self, n):
        if self.closed:
            return b""
        if not self.out:
            raise OSError(11)
        d = bytes(self.out[:n])
        self.out = self.out[n:]
        return d

    def close(self):
        self.closed = True


class SimBoard(FakeBoard):
    """Simulated clock and fake broker sockets: the whole node loop without a network
    (the MicroPython runner has no sockets). Each loop step advances the clock 50 ms."""

    EPOCH_MS = 1795441731000  # true wall-clock time at t = 0

    def __init__(self, kind, storage, battery_v=None):
        self.t = 0
        FakeBoard.__init__(self, kind, lambda: self.t / 1000, battery_v=battery_v)
        self.storage = storage
        self.down = False
        self.wifi = True
        self.wifi_attempts = []
        self.clock_ok = True   # False: the RTC has no time until an NTP reply arrives
        self.ntp_fail = 0      # this many NTP requests go unanswered (each costs a 1 s timeout)
        self.ntp_calls = []
        self.wifi_resets = 0
        self.led = []
        self.ssids = []
        self.good_ssid = None  # set: only this network answers
        self.scan_ms = 0  # 10000: kc_board waits up to 10 s for an association that never comes
        self.published = []
        self.sock = None

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d

    def sleep_ms(self, ms):
        self.t += ms

    def now_ms(self):
        return self.EPOCH_MS + self.t if self.clock_ok else None

    def wdt_feed(self):
        self.t += 50
        self.wdt_feeds += 1

    def status_led(self, on):
        self.led.append((self.t, on))

    def wifi_connect(self, ssid, pw):
        self.wifi_attempts.append(self.t)
        self.ssids.append(ssid)
        if self.good_ssid is not None:
            self.wifi = ssid == self.good_ssid
        if not self.wifi:
            self.t += self.scan_ms

    def wifi_reset(self):
        self.wifi_resets += 1

    def wifi_connected(self):
        return self.wifi

    def rssi(self):
        return -61

    def ntp_sync(self, host):
        self.ntp_calls.append((self.t, host))
        if self.ntp_fail > 0:
            self.ntp_fail -= 1
            self.t += 1000
            return False
        self.clock_ok = True
        return True

    def socket_factory(self):
        def open_(host, port, timeout):
            if self.down:
                raise OSError(113)
            self.sock = FakeBrokerSocket()
            self.sock.published = self.published
            return self.sock
        return open_

    def storage_dir(self):
        return self.storage

    def deepsleep(self, ms):
        raise DeepSleep(ms)

    def reset(self):
        raise Reset()
