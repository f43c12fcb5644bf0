# Provisioning mode: entered at boot when config.json cannot run a node (missing, invalid, no
# Wi-Fi network) or the installer holds the button. The node opens its own access point with
# the setup page (kc_portal) and listens for Improv Wi-Fi on the USB serial port (kc_improv),
# blinks the "provision" pattern, and resets once a valid config has been saved. With a
# working config (button case) it gives up after `timeout_ms` and resets into the node.
#
# main.py imports this module on every boot (reason()): the page and Improv modules load only
# when a Provisioner is made, so a running node does not carry them in its heap.
import kc_config

AP_TIMEOUT_MS = 15 * 60 * 1000
# The set-up AP is never open: without `ap_password` in config.json the board makes one, keeps
# it there and prints it on the serial console; `kotacerdas firmware deploy` writes one per device
# and prints it for the label. 32 symbols without look-alikes (no l/o/0/1): 5 bits each, 12 of
# them = 60 bits, far beyond an offline WPA2 guess at a street pole.
WINDOW_FILE = "/data/setup_window.json"  # request_window -> main.py after the reset
AP_PASS_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
AP_PASS_GROUPS = 3  # xxxx-xxxx-xxxx: read off a label and typed on a phone


def reason(doc, button_held=False):
    """Why the node must be provisioned first, or None if config.json can run it."""
    if button_held:
        return "button"
    try:
        cfg = kc_config.validate_device(doc)
    except kc_config.ConfigError as e:
        return "config: %s" % e
    nets = cfg.get("wifi_networks") or [cfg.get("wifi") or {}]
    if not any(isinstance(w, dict) and w.get("ssid") for w in nets):
        return "no Wi-Fi network configured"
    return None


def ap_name(doc):
    dev = doc.get("device") if isinstance(doc, dict) else None
    return "kc-setup-" + (dev if isinstance(dev, str) and dev else "node")[:20]


def new_ap_password(rand):
    """A fresh set-up AP passphrase from `rand(n)` -> n random bytes (os.urandom on the board,
    secrets.token_bytes at deploy time)."""
    raw = rand(4 * AP_PASS_GROUPS)
    groups = []
    for g in range(AP_PASS_GROUPS):
        groups.append("".join(AP_PASS_ALPHABET[b & 31] for b in raw[4 * g:4 * g + 4]))
    return "-".join(groups)


def ap_password(doc, cfg_path, rand):
    """The set-up AP's passphrase: `ap_password` from config.json, or a new one that is saved
    there (the same one on every later boot) and printed, so the AP is WPA2 from the first time."""
    doc = doc if isinstance(doc, dict) else {}
    pw = doc.get("ap_password")
    try:
        kc_config.check_passphrase(pw)
        return pw
    except kc_config.ConfigError:
        pass
    pw = new_ap_password(rand)
    stored = kc_config.load_json(cfg_path, {})
    stored = stored if isinstance(stored, dict) else {}
    stored["ap_password"] = pw
    try:
        kc_config.save_json(cfg_path, stored)
    except OSError as e:  # a broken file system: still WPA2, with a password that lasts this boot
        print("ap_password not saved:", e)
    doc["ap_password"] = pw
    return pw


def request_window(path, why, window_ms):
    """The node asks for a bounded set-up window (its networks keep failing): a small file that
    main.py takes after the reset (RTC memory belongs to kc_node; a file survives a power cut
    between the two, which only means one window after the next boot)."""
    kc_config.save_json(path, {"why": why, "ms": int(window_ms)})


def take_window(path):
    """(why, window ms) once, if the node asked for a window before its reset; else None."""
    doc = kc_config.load_json(path)
    if doc is None:
        return None
    try:
        import os
        os.remove(path)
    except OSError:
        pass
    if not isinstance(doc, dict) or not isinstance(doc.get("ms"), int) or doc["ms"] <= 0:
        return None
    return str(doc.get("why") or "fallback")[:80], min(doc["ms"], AP_TIMEOUT_MS)


def add_network(path, ssid, password):
    """Improv's credentials go first in the stored list (an existing entry is replaced)."""
    import kc_portal
    doc = kc_config.load_json(path, {}) or {}
    nets = [w for w in (doc.get("wifi_networks") or []) if isinstance(w, dict) and w.get("ssid") != ssid]
    doc["wifi_networks"] = ([{"ssid": ssid, "password": password}] + nets)[:kc_portal.MAX_NETWORKS]
    doc["wifi"] = doc["wifi_networks"][0]
    kc_config.save_json(path, doc)


class Provisioner:
    """One loop serving the page and Improv. `io` is the board side: feed(), ticks_ms(),
    ticks_diff(), wifi_connect(ssid, pw) -> bool, wifi_scan() (or None), sta_ip()."""

    def __init__(self, io, cfg_path, serial=None, led=None, port=80, bind="0.0.0.0",
                 info=("kotacerdas", "", "esp32", ""), dns_port=53):
        import kc_improv
        import kc_portal
        self.io = io
        self.cfg_path = cfg_path
        self.serial = serial
        self.led = led
        self.portal = kc_portal.Portal(cfg_path, io.feed, io.ticks_ms, io.ticks_diff, port, bind,
                                       dns_port=dns_port)
        self.improv = kc_improv.ImprovService(serial.write, self._improv_connect, info,
                                              self._scan) if serial is not None else None
        self.done = False

    def _scan(self):
        import kc_wifi
        scan = getattr(self.io, "wifi_scan", None)
        if scan is None:
            return []
        m = kc_wifi.scan_map(scan())
        return [(ssid, rssi, True) for ssid, rssi in m.items()]

    def _improv_connect(self, ssid, password):
        if not self.io.wifi_connect(ssid, password):
            return None
        add_network(self.cfg_path, ssid, password)
        doc = kc_config.load_json(self.cfg_path, {}) or {}
        if reason(doc) is None:
            self.done = True  # identity and broker were already there: Wi-Fi was all that lacked
            return ""
        return "http://%s/" % self.io.sta_ip()  # the rest (device id, broker) on the page

    def run(self, timeout_ms=None):
        """Serve until a config is saved ("saved") or the timeout passes ("timeout")."""
        self.portal.start()
        if self.led is not None:
            self.led.set("provision")
        t0 = self.io.ticks_ms()
        try:
            while True:
                if self.portal.poll(50):
                    self.done = True
                if self.serial is not None and self.improv is not None:
                    n = self.serial.any()
                    if n:
                        self.improv.feed(self.serial.read(n))
                if self.led is not None:
                    self.led.update()
                if self.done:
                    return "saved"
                if timeout_ms is not None and self.io.ticks_diff(self.io.ticks_ms(), t0) > timeout_ms:
                    return "timeout"
        finally:
            self.portal.close()


class StdinSerial:
    """Improv over the USB serial port the REPL uses (sys.stdin/stdout), read without blocking.
    Ctrl-C is switched off meanwhile: 0x03 is Improv's RPC type byte, not an interrupt."""

    def __init__(self):
        import select
        import sys
        self.inp = getattr(sys.stdin, "buffer", sys.stdin)
        self.out = getattr(sys.stdout, "buffer", sys.stdout)
        self.p = select.poll()
        self.p.register(sys.stdin, select.POLLIN)
        self.open = True
        try:
            import micropython
            micropython.kbd_intr(-1)
        except (ImportError, AttributeError):
            pass

    def any(self):
        return 1 if self.open and self.p.poll(0) else 0

    def read(self, n):
        out = bytearray()
        while len(out) < 64 and self.p.poll(0):
            b = self.inp.read(1)
            if not b:
                self.open = False  # EOF: nobody on the other end any more
                break
            out.extend(b.encode() if isinstance(b, str) else b)
        return bytes(out)

    def write(self, data):
        self.out.write(data)
        if hasattr(self.out, "flush"):
            self.out.flush()
