# Stand-in for MicroPython's `network`: a station that connects at once (or only with the
# password in GOOD), an access point whose settings are recorded in AP.
STA_IF = 0
AP_IF = 1
AUTH_WPA_WPA2_PSK = 4
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD, STAT_GOT_IP = 201, 202, 1010
AP = {}
GOOD = {}  # ssid -> password; empty: every network accepts anything
ATTEMPTS = []


class WLAN:
    def __init__(self, iface):
        self.iface = iface
        self.up = False
        self.connected = False

    def config(self, **kw):
        AP.update(kw)

    def ifconfig(self):
        return ("192.168.4.1" if self.iface == AP_IF else "10.0.0.23", "255.255.255.0", "10.0.0.1", "10.0.0.1")

    def disconnect(self):
        self.connected = False

    def active(self, v=None):
        if v is not None:
            self.up = v
            if self.iface == AP_IF:
                AP["active"] = bool(v)
        return self.up

    def connect(self, ssid, password):
        ATTEMPTS.append(ssid)
        self.connected = not GOOD or GOOD.get(ssid) == password
        self.refused = STAT_WRONG_PASSWORD if ssid in GOOD and not self.connected else STAT_NO_AP_FOUND

    def scan(self):
        return [(b"kota-iot", b"\x00" * 6, 6, -58, 3, False)]

    def isconnected(self):
        return self.connected

    def status(self, what=None):
        if what == "rssi":
            return -58
        return STAT_GOT_IP if self.connected else getattr(self, "refused", STAT_NO_AP_FOUND)
