# Provisioning mode on MicroPython's unix port: `micropython kc_prov_unix.py SPEC.json`.
# SPEC: {"config": path, "port": n, "timeout_ms": n, "nets": {ssid: [password, rssi]}}.
# The real kc_provision loop with the real kc_portal server on a real socket (127.0.0.1) and
# Improv on stdin/stdout; Wi-Fi is kc_fake_prov.FakeWLAN, the LED a recording pin. Prints
# "UNIXJSON {...}" (outcome, portal counters, watchdog feeds, LED edges) at the end.
import json
import sys
import time

import kc_fake_prov
import kc_led
import kc_provision


class UnixIO:
    def __init__(self, nets):
        self.wlan = kc_fake_prov.FakeWLAN(nets)
        self.feeds = 0

    def feed(self):
        self.feeds += 1

    ticks_ms = staticmethod(time.ticks_ms)
    ticks_diff = staticmethod(time.ticks_diff)

    def wifi_connect(self, ssid, password):
        self.wlan.connect(ssid, password)
        return self.wlan.isconnected()

    def wifi_scan(self):
        return self.wlan.scan()

    def sta_ip(self):
        return "127.0.0.1"


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    nets = {}
    for k, v in spec.get("nets", {}).items():
        nets[k] = (v[0], v[1])
    io = UnixIO(nets)
    pin = kc_fake_prov.RecordingPin(time.ticks_ms)
    led = kc_led.Led(pin, time.ticks_ms, time.ticks_diff)
    p = kc_provision.Provisioner(io, spec["config"], serial=kc_provision.StdinSerial(), led=led,
                                 port=spec["port"], bind="127.0.0.1", dns_port=spec.get("dns_port"),
                                 info=("kotacerdas", "1.0.0", "unix", "setup"))
    outcome = p.run(spec.get("timeout_ms"))
    t0 = pin.edges[0][0] if pin.edges else 0
    edges = [[time.ticks_diff(t, t0), v] for t, v in pin.edges[:40]]
    sys.stdout.write("\nUNIXJSON " + json.dumps({"outcome": outcome, "stats": p.portal.stats, "feeds": io.feeds,
                                                 "led": edges, "improv_bad": p.improv.bad,
                                                 "wifi_attempts": io.wlan.attempts}) + "\n")


main(sys.argv[1])
