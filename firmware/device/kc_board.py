# The ESP32 board: machine/network/ntptime behind the small interface kc_node and
# kc_sensors use. Pin numbers and ADC channels come from config.json ("pins"), with
# defaults for an ESP32-DevKitC (ADC1 pins only: ADC2 is unusable while Wi-Fi is on).
import time

import machine
import network

DEFAULT_PINS = {
    "battery": 35,
    "ph": 36, "tds": 39, "turbidity": 34, "do": 32, "chlorine": 33, "onewire": 4,
    "trig": 26, "echo": 27, "tilt": 25, "ntc": 34,
    "led": 2,  # the on-board LED of most ESP32 DevKit boards; installers see the link state
    "no2_we": 36, "no2_ae": 39, "o3_we": 34, "o3_ae": 35, "co_we": 32, "co_ae": 33,
}
# (bus id, TX/SCL pin, RX/SDA pin)
DEFAULT_BUSES = {"pms_uart": (1, 17, 16), "co2_uart": (2, 13, 14), "i2c": (0, 22, 21)}
# MicroPython on the ESP32 counts time from 2000-01-01; the wire contract uses the Unix epoch
EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
VALID_AFTER_S = 1704067200  # 2024-01-01: an unsynced RTC starts in 2000


class Board:
    def __init__(self, cfg):
        self.cfg = cfg
        self.pins = dict(DEFAULT_PINS)
        self.buses = dict(DEFAULT_BUSES)
        for k, v in (cfg.get("pins") or {}).items():
            if k in DEFAULT_BUSES:
                self.buses[k] = (int(v[0]), int(v[1]), int(v[2]))
            else:
                self.pins[k] = int(v)
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)
        self.wdt = machine.WDT(timeout=cfg.get("wdt_ms", 60000))
        self.rtc = machine.RTC()
        self._ads = None
        self.on_wait = None  # kc_node hooks the status LED in here

    # time
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, d):
        return time.ticks_add(a, d)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def sleep_us(self, us):
        time.sleep_us(us)

    def now_ms(self):
        ms = time.time_ns() // 1000000 + EPOCH_OFFSET_S * 1000
        if ms < VALID_AFTER_S * 1000:
            return None
        return ms

    def log(self, msg):
        print(msg)

    # network
    def wifi_connect(self, ssid, password):
        if not self.sta.isconnected():
            try:
                self.sta.connect(ssid, password)
            except OSError as e:  # "Wifi Internal Error" while a previous attempt is pending
                print("wifi connect:", e)
                return
            for _ in range(100):  # up to 10 s, watchdog fed meanwhile
                if self.sta.isconnected():
                    break
                self.wdt.feed()
                if self.on_wait is not None:
                    self.on_wait()
                time.sleep_ms(100)

    def wifi_scan(self):
        return self.sta.scan()  # blocks ~2 s per scan on the ESP32; once per round of networks

    def led_pin(self):
        try:
            return machine.Pin(self.pins["led"], machine.Pin.OUT)
        except (ValueError, OSError):  # no LED on this pin: nothing to show
            return None

    def status_led(self, on):
        try:
            machine.Pin(self.pins["led"], machine.Pin.OUT).value(1 if on else 0)
        except (ValueError, OSError):  # no LED on this pin: nothing to show
            pass

    def wifi_reset(self):
        # power-cycle the radio: clears a wedged driver state that reconnects alone do not
        try:
            self.sta.disconnect()
        except OSError:
            pass
        self.sta.active(False)
        self.wdt.feed()
        time.sleep_ms(200)
        self.sta.active(True)

    def wifi_connected(self):
        return self.sta.isconnected()

    def rssi(self):
        try:
            return self.sta.status("rssi")
        except (OSError, ValueError):
            return None

    def ntp_sync(self, host):
        try:
            import ntptime
            ntptime.host = host
            ntptime.settime()
            return True
        except (OSError, OverflowError, IndexError):
            return False

    def socket_factory(self):
        return None  # kc_mqtt opens a normal socket (and wraps TLS itself)

    # power and persistence
    def wdt_feed(self):
        self.wdt.feed()

    def rtc_load(self):
        return self.rtc.memory()

    def rtc_save(self, data):
        self.rtc.memory(data)

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()

    def setup_window(self, why, window_ms):
        """The set-up AP for `window_ms` (kc_node: the networks keep failing). It runs after a
        reset, in place of the node, so the page and Improv never share the heap with it."""
        import kc_provision
        kc_provision.request_window(kc_provision.WINDOW_FILE, why, window_ms)
        machine.reset()

    def reset_cause(self):
        c = machine.reset_cause()
        for name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
            if getattr(machine, name, None) == c:
                return name[:-6].lower()  # "pwron", "wdt", "deepsleep", ...
        return str(c)

    def storage_dir(self):
        return "/data"

    # sensor buses
    def adc(self, name):
        ads = self.cfg.get("ads1115")
        if ads and name in ads["channels"]:
            # an ADS1115 front end (16 bit) instead of the ESP32 ADC for this probe
            from kc_drivers import ads1115
            if self._ads is None:
                self._ads = ads1115.ADS1115(self.i2c(), ads.get("addr", ads1115.ADDR), time.sleep_ms)
            return self._ads.channel(ads["channels"][name], ads.get("fsr", 4.096), ads.get("sps", 128))
        a = machine.ADC(machine.Pin(self.pins[name]))
        a.atten(machine.ADC.ATTN_11DB)  # full 0..~3.1 V input range
        return a

    def battery_adc(self):
        # only battery kinds have the divider on GPIO35 by default: on an air station all six
        # exposed ADC1 pins carry gas electrodes (ADC2 is unusable while Wi-Fi is on)
        import kc_schema
        wired = "battery" in (self.cfg.get("pins") or {}) or kc_schema.KINDS[self.cfg["kind"]][1]
        return self.adc("battery") if wired else None

    def uart(self, name):
        n, tx, rx = self.buses[name + "_uart"]
        return machine.UART(n, baudrate=9600, tx=tx, rx=rx, timeout=200)

    def i2c(self):
        n, scl, sda = self.buses["i2c"]
        return machine.I2C(n, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=100000)

    def onewire(self):
        import onewire
        return onewire.OneWire(machine.Pin(self.pins["onewire"]))

    def ultrasonic_pins(self):
        return machine.Pin(self.pins["trig"], machine.Pin.OUT), machine.Pin(self.pins["echo"], machine.Pin.IN)

    def tilt_pin(self):
        return machine.Pin(self.pins["tilt"], machine.Pin.IN, machine.Pin.PULL_UP)

    def time_pulse_us(self, pin, level, timeout_us):
        return machine.time_pulse_us(pin, level, timeout_us)

    def board_temperature(self):
        # 10k NTC (B = 3950) to GND with a 10k pull-up to 3.3 V; beta equation
        # 1/T = 1/T0 + ln(R/R0)/B (Steinhart-Hart simplified, T0 = 298.15 K)
        import math
        v = self.adc("ntc").read_uv() / 1e6
        if v <= 0.01 or v >= 3.29:
            raise OSError("NTC open or shorted")
        r = 10000 * v / (3.3 - v)
        return 1 / (1 / 298.15 + math.log(r / 10000) / 3950) - 273.15


# -- provisioning mode (kc_provision): the ESP32's own access point and the BOOT button ------
BUTTON_WINDOW_MS = 1000
SETUP_PORT = 80  # the setup page; tests on a shared machine move both
SETUP_DNS_PORT = 53


def button_held(doc):
    """Whether the installer holds the button (`pins.button`, default GPIO0 = BOOT on a DevKitC)
    within 1 s of a power-on or reset (the LED is lit meanwhile as the cue). Holding BOOT
    *during* reset selects the ROM bootloader, hence the window after boot. Deep-sleep wakes
    skip it: a battery node must not stay awake 1 s longer every interval."""
    if machine.reset_cause() == getattr(machine, "DEEPSLEEP_RESET", -1):
        return False
    pins = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(pins, dict):
        pins = {}
    try:
        btn = machine.Pin(int(pins.get("button", 0)), machine.Pin.IN, machine.Pin.PULL_UP)
        led = machine.Pin(int(pins.get("led", DEFAULT_PINS["led"])), machine.Pin.OUT)
    except (ValueError, TypeError, OSError):
        return False
    led.value(1)
    t0 = time.ticks_ms()
    held = False
    while time.ticks_diff(time.ticks_ms(), t0) < BUTTON_WINDOW_MS:
        if btn.value() == 0:
            held = True
            break
        time.sleep_ms(20)
    led.value(0)
    return held


class ProvisionIO:
    """What kc_provision needs from the board: the station for trying credentials, the
    watchdog, ticks."""

    def __init__(self, wdt):
        self.wdt = wdt
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)
        self.on_wait = None

    def feed(self):
        self.wdt.feed()

    ticks_ms = staticmethod(time.ticks_ms)
    ticks_diff = staticmethod(time.ticks_diff)

    def wifi_connect(self, ssid, password):
        try:
            self.sta.disconnect()
            self.sta.connect(ssid, password)
        except OSError:
            return False
        refused = (getattr(network, "STAT_WRONG_PASSWORD", -1), getattr(network, "STAT_NO_AP_FOUND", -1))
        for _ in range(150):  # up to 15 s for association and DHCP
            if self.sta.isconnected():
                return True
            if self.sta.status() in refused:  # the driver knows already: answer Improv now
                break
            self.wdt.feed()
            if self.on_wait is not None:
                self.on_wait()
            time.sleep_ms(100)
        self.sta.disconnect()
        return False

    def wifi_scan(self):
        return self.sta.scan()

    def sta_ip(self):
        return self.sta.ifconfig()[0]


def provision(doc, why, cfg_path="/config.json", window_ms=None):
    """Provisioning mode on the board: soft AP "kc-setup-<device>", always WPA2 (`ap_password`
    from config.json, else one made, saved there and printed: kc_provision.ap_password), the
    setup page on port 80, Improv on the USB serial port, the "provision" LED pattern; resets
    when a config is saved, or when the window ends: `window_ms` (the node's own fallback after
    its networks kept failing), 15 min when entered by the button with a working config."""
    import os

    import kc_led
    import kc_provision
    print("provisioning mode:", why)
    wdt = machine.WDT(timeout=60000)
    pw = kc_provision.ap_password(doc, cfg_path, os.urandom)
    name = kc_provision.ap_name(doc)
    print("setup AP %s password %s" % (name, pw))
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    ap.config(essid=name, password=pw, authmode=network.AUTH_WPA_WPA2_PSK)
    pins = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(pins, dict):
        pins = {}
    try:
        led = kc_led.Led(machine.Pin(int(pins.get("led", DEFAULT_PINS["led"])), machine.Pin.OUT),
                         time.ticks_ms, time.ticks_diff)
    except (ValueError, TypeError, OSError):
        led = None
    io = ProvisionIO(wdt)
    if led is not None:
        io.on_wait = led.update
    p = kc_provision.Provisioner(io, cfg_path, serial=kc_provision.StdinSerial(), led=led, port=SETUP_PORT,
                                 info=("kotacerdas", str((doc or {}).get("fw", "")), "esp32", name),
                                 dns_port=SETUP_DNS_PORT)
    if window_ms is None and why == "button":
        window_ms = kc_provision.AP_TIMEOUT_MS
    outcome = p.run(window_ms)
    print("provisioning:", outcome)
    ap.active(False)
    time.sleep_ms(500)  # let the last HTTP response and Improv frames leave
    machine.reset()
