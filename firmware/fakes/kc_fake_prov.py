# Fakes for field provisioning and the ADS1115 front end, valid MicroPython and CPython:
# an ADS1115 at register level (config/conversion registers, conversion time, PGA clipping),
# a Wi-Fi radio with a scan list and an access point, and an LED pin that records its edges.


class FakeADS1115:
    """The I2C side of a TI ADS1115 (SBAS444 9.6): writes to the config register start a
    single-shot conversion when OS=1; OS reads 0 until 1/DR has passed on `clock()` (ms);
    reading the conversion register early returns the previous result, as the part does."""

    RATES = (8, 16, 32, 64, 128, 250, 475, 860)
    FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)

    def __init__(self, inputs, clock, addr=0x48):
        self.inputs = inputs  # {0..3: callable -> volts at AINx}
        self.clock = clock
        self.addr = addr
        self.config = 0x8583  # power-on default (SBAS444 9.6.3)
        self.conversion = 0
        self.done_at = None
        self.pending = None
        self.conversions = 0
        self.early_reads = 0

    def _finish(self):
        if self.pending is not None and self.clock() >= self.done_at:
            self.conversion = self.pending
            self.pending = None
            self.config |= 0x8000

    def writeto_mem(self, addr, reg, data):
        if addr != self.addr:
            raise OSError(19)  # ENODEV: nobody acknowledges that address
        if reg != 1:
            return
        word = (data[0] << 8) | data[1]
        self.config = word & 0x7FFF
        if word & 0x8000 and word & 0x0100:
            mux = (word >> 12) & 7
            if mux < 4:
                raise ValueError("fake ADS1115: differential inputs not modelled")
            fsr = self.FSR[(word >> 9) & 7]
            v = self.inputs[mux - 4]()
            raw = int(v / fsr * 32768)
            self.pending = max(-32768, min(32767, raw))
            self.done_at = self.clock() + 1000.0 / self.RATES[(word >> 5) & 7]
            self.conversions += 1

    def readfrom_mem(self, addr, reg, n):
        if addr != self.addr:
            raise OSError(19)
        self._finish()
        if reg == 1:
            return bytes([self.config >> 8, self.config & 0xFF])[:n]
        if reg == 0:
            if self.pending is not None:
                self.early_reads += 1
            c = self.conversion & 0xFFFF
            return bytes([c >> 8, c & 0xFF])[:n]
        return bytes(n)


class FakeWLAN:
    """network.WLAN for STA and AP: `nets` maps SSID -> (password, rssi) of what is on the air;
    connect() succeeds only for a network in range with the right password."""

    def __init__(self, nets=None, can_scan=True):
        self.nets = nets if nets is not None else {}
        self.can_scan = can_scan
        self.up = False
        self.connected = None
        self.attempts = []
        self.ap_config = {}
        self.scans = 0

    def active(self, v=None):
        if v is not None:
            self.up = bool(v)
            if not v:
                self.connected = None
        return self.up

    def scan(self):
        if not self.can_scan:
            raise OSError("scan not supported")
        self.scans += 1
        out = []
        for ssid, (pw, rssi) in self.nets.items():
            # (ssid, bssid, channel, RSSI, security, hidden), as on the ESP32
            out.append((ssid.encode(), b"\x00" * 6, 6, rssi, 3 if pw else 0, False))
        return out

    def connect(self, ssid, password=None):
        self.attempts.append(ssid)
        net = self.nets.get(ssid)
        self.connected = ssid if net is not None and (net[0] or "") == (password or "") else None

    def disconnect(self):
        self.connected = None

    def isconnected(self):
        return self.connected is not None

    def status(self, what=None):
        if what == "rssi":
            return self.nets[self.connected][1] if self.connected else None
        return 1010 if self.connected else 201

    def config(self, **kw):
        self.ap_config.update(kw)

    def ifconfig(self):
        return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")


class RecordingPin:
    """machine.Pin for the status LED: records (time, value) on every change."""

    def __init__(self, clock):
        self.clock = clock
        self.v = 0
        self.edges = []

    def value(self, v=None):
        if v is None:
            return self.v
        v = 1 if v else 0
        if v != self.v or not self.edges:
            self.edges.append((self.clock(), v))
        self.v = v
        return None


class FakeSerial:
    """Both ends of a UART: the host writes into `rx`, the device's output collects in `tx`."""

    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self):
        return len(self.rx)

    def read(self, n=None):
        if not self.rx:
            return None
        n = len(self.rx) if n is None else n
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d

    def write(self, data):
        self.tx.extend(data)
        return len(data)
