# Stand-in for MicroPython's `network`: a station that connects at once.
STA_IF = 0
AP_IF = 1
AUTH_WPA_WPA2_PSK = 4


class WLAN:
    def __init__(self, iface):
        self.up = False
        self.connected = False

    def active(self, v=None):
        if v is not None:
            self.up = v
        return self.up

    def connect(self, ssid, password):
        self.connected = True

    def scan(self):
        return [(b"kota-iot", b"\x00" * 6, 6, -58, 3, False)]

    def isconnected(self):
        return self.connected

    def status(self, what=None):
        return -58 if what == "rssi" else 1010
