# Board entry point: MicroPython runs boot.py then main.py after every reset and
# deep-sleep wake-up. Any crash resets the board (after logging), and the watchdog
# covers hangs, so the node always comes back.
import os

import kc_config
from kc_node import Node


def start():
    cfg = kc_config.validate_device(kc_config.load_json("/config.json", {}))
    try:
        os.mkdir("/data")
    except OSError:
        pass
    from kc_board import Board
    node = Node(Board(cfg), cfg)
    node.run()


try:
    start()
except kc_config.ConfigError as e:
    # nothing to do without an identity: print once, then stay in the REPL for the installer
    print("config.json invalid:", e)
except Exception as e:  # noqa: BLE001
    import sys
    import time

    import machine
    sys.print_exception(e)
    time.sleep(10)
    machine.reset()
