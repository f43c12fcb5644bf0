# Stand-in for MicroPython's ESP32 `machine` module, for running kc_board.py (the real
# board layer) on the MicroPython test runner. Buses are wired to the protocol fakes
# of kc_fakes: UART 1 = PMS5003, UART 2 = MH-Z19B, I2C = BME280; ADCs read a fixed voltage.
import kc_fakes

WORLD = {}
CALLS = {"wdt_feeds": 0, "deepsleep": None, "reset": 0}


def world(kind):
    if kind not in WORLD:
        WORLD[kind] = kc_fakes.World(kind, lambda: 0.0)
    return WORLD[kind]


class DeepSleepCalled(Exception):
    pass


class ResetCalled(Exception):
    pass


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PRESSED = set()  # buttons held down (read 0)

    def __init__(self, pin_id, mode=None, pull=None):
        self.id = pin_id
        self.v = 1 if pin_id == 0 else 0  # GPIO0: the BOOT button, pulled up, not pressed

    def value(self, v=None):
        if v is None:
            return 0 if self.id in Pin.PRESSED else self.v
        self.v = v


class ADC:
    ATTN_11DB = 3
    VOLTS = {}

    def __init__(self, pin):
        self.pin = pin

    def atten(self, a):
        self.a = a

    def read_uv(self):
        return int(ADC.VOLTS.get(self.pin.id, 1.5) * 1e6)


class UART:
    def __init__(self, n, baudrate=9600, tx=None, rx=None, timeout=0):
        kind = "air"
        self.peer = kc_fakes.FakePMS5003(world(kind)) if n == 1 else kc_fakes.FakeMHZ19B(world(kind))

    def write(self, data):
        return self.peer.write(data)

    def any(self):
        return self.peer.any()

    def read(self, n=None):
        return self.peer.read(n)


class I2C:
    def __init__(self, n, scl=None, sda=None, freq=100000):
        self.dev = kc_fakes.FakeBME280(world("air"))

    def readfrom_mem(self, addr, reg, n):
        return self.dev.readfrom_mem(addr, reg, n)

    def writeto_mem(self, addr, reg, data):
        self.dev.writeto_mem(addr, reg, data)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        CALLS["wdt_feeds"] += 1


class RTC:
    MEM = b""

    def memory(self, data=None):
        if data is None:
            return RTC.MEM
        RTC.MEM = bytes(data)


def time_pulse_us(pin, level, timeout_us):
    return 4700  # ~80 cm at 25 degC


PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
RESET_CAUSE = [PWRON_RESET]


def reset_cause():
    return RESET_CAUSE[0]


def deepsleep(ms=0):
    CALLS["deepsleep"] = ms
    raise DeepSleepCalled()


def reset():
    CALLS["reset"] += 1
    raise ResetCalled()
