# Which Wi-Fi network to try next. Several networks can be configured (the site's AP, a
# backup AP, the installer's phone hotspot): each round tries the one that last worked first
# (its password and route to the broker are known good), then the others strongest first
# when the radio can scan, then any not seen in the scan (hidden SSIDs do not show up) in
# configured order. The last good index and failed rounds live in RTC memory (kc_node).
NO_GOOD = 255


def plan(networks, last_good=NO_GOOD, seen=None):
    """Indices of `networks` in the order to try. seen: {ssid: rssi} from a scan, or None."""
    idx = list(range(len(networks)))
    if seen is not None:
        heard = [i for i in idx if networks[i]["ssid"] in seen]
        heard.sort(key=lambda i: -seen[networks[i]["ssid"]])
        order = heard + [i for i in idx if i not in heard]
    else:
        order = idx
    if last_good in order and (seen is None or networks[last_good]["ssid"] in seen):
        order.remove(last_good)
        order.insert(0, last_good)
    return order


def scan_map(entries):
    """{ssid: strongest rssi} from network.WLAN.scan() tuples (ssid bytes, bssid, ch, rssi, ...)."""
    out = {}  # type: dict
    for e in entries:
        try:
            ssid = e[0].decode() if isinstance(e[0], (bytes, bytearray)) else str(e[0])
        except UnicodeError:
            continue
        if ssid and (ssid not in out or e[3] > out[ssid]):
            out[ssid] = e[3]
    return out


class Rotation:
    """Hands out one network per link attempt; a new plan (and scan) at the start of each round."""

    def __init__(self, networks, last_good=NO_GOOD, scan=None):
        self.networks = networks
        self.last_good = last_good if last_good < len(networks) else NO_GOOD
        self.scan = scan  # callable -> scan tuples, or None when the radio cannot scan
        self.order = []
        self.current = None
        self.rounds_failed = 0
        self.scans = 0

    def next(self):
        if not self.order:
            seen = None
            if self.scan is not None:
                try:
                    seen = scan_map(self.scan())
                    self.scans += 1
                except (OSError, RuntimeError):
                    seen = None  # scanning failed: fall back to configured order
            self.order = plan(self.networks, self.last_good, seen)
        self.current = self.order.pop(0)
        return self.networks[self.current]

    def failed(self):
        if not self.order:
            self.rounds_failed += 1  # every network of this round failed

    def succeeded(self):
        if self.current is not None:
            self.last_good = self.current
        self.rounds_failed = 0
        self.order = []


def fallback_due(rounds, n):
    """Whether the set-up AP opens after `rounds` consecutive failed rounds of all networks:
    at n, 2n, 4n, 8n and 16n, then every 16n (n = 0: never). The spacing doubles so that a long
    outage of the site's Wi-Fi costs a few windows a day, not one every n rounds."""
    if n <= 0 or rounds < n or rounds % n:
        return False
    k = rounds // n
    return k & (k - 1) == 0 or k % 16 == 0
