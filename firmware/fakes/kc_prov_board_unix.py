# kc_board.provision() - the board's provisioning mode as main.py calls it - on MicroPython's
# unix port: `micropython kc_prov_board_unix.py SPEC.json`, with the stand-ins of
# firmware/fakes/esp32 for `network` (as network.py) and `machine` (as fake_machine.py: the unix
# port has a built-in `machine`, so it goes into sys.modules under that name before kc_board
# loads) copied onto the path; not esp32/socket.py, which would shadow the port's real socket. Real sockets for the page and DNS, Improv on stdin/stdout.
# SPEC: {"config": path, "port": n, "dns_port": n, "good": {ssid: password}, optional "why" and
# "window_ms" (the node's fallback window, as main.py passes it), "window_file" (then the window
# goes the board's way: Board.setup_window writes the request, take_window reads it back)}.
import json
import sys
import time

import fake_machine

sys.modules["machine"] = fake_machine
import kc_board  # noqa: E402
import kc_config  # noqa: E402
import network  # noqa: E402


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    network.GOOD.update(spec.get("good") or {})
    kc_board.SETUP_PORT = spec["port"]
    kc_board.SETUP_DNS_PORT = spec["dns_port"]
    doc = kc_config.load_json(spec["config"], {})
    import kc_provision
    why = spec.get("why") or kc_provision.reason(doc)
    window_ms = spec.get("window_ms")
    if spec.get("window_file"):
        # the node's side first (Board.setup_window: request + reset), then main.py's take_window
        kc_provision.WINDOW_FILE = spec["window_file"]
        try:
            kc_board.Board(kc_config.validate_device(doc)).setup_window(why, window_ms)
        except fake_machine.ResetCalled:
            pass
        why, window_ms = kc_provision.take_window(kc_provision.WINDOW_FILE)
    reset = False
    t0 = time.ticks_ms()
    try:
        kc_board.provision(doc, why, cfg_path=spec["config"], window_ms=window_ms)
    except fake_machine.ResetCalled:
        reset = True
    sys.stdout.write("\nUNIXJSON " + json.dumps({"why": why, "reset": reset, "ap": network.AP,
                                                 "ms": time.ticks_diff(time.ticks_ms(), t0),
                                                 "feeds": fake_machine.CALLS["wdt_feeds"],
                                                 "attempts": network.ATTEMPTS}) + "\n")


main(sys.argv[1])
