# Board entry point: MicroPython runs boot.py then main.py after every reset and deep-sleep
# wake-up. Everything, imports included, runs inside one try: a broken module (a bad OTA
# copy, a half-written .mpy) cannot stop the board at the REPL. A crash is recorded in
# /data/crash.json (count, reset cause, traceback; kc_node publishes it in the birth
# message and clears the count once it has run stably), then the board sleeps with an
# exponential back-off before it resets, and after SAFE_AFTER crashes in a row it stays in
# safe mode: no node, no watchdog, REPL and USB free for an installer. Without a usable
# config.json (or with the BOOT button held just after reset) the board goes into
# provisioning mode instead (kc_provision: its own access point with a setup page, Improv
# Wi-Fi on the USB serial port); after a node whose networks kept failing asked for it
# (Board.setup_window), for a bounded window only.
import sys

CRASH_FILE = "/data/crash.json"
SAFE_AFTER = 5
BACKOFF_S = (10, 30, 120, 600)


def _load_crash():
    try:
        import json
        with open(CRASH_FILE) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except Exception:  # noqa: BLE001  no file, bad JSON, no json module: start fresh
        return {}


def _record_crash(e):
    doc = _load_crash()
    doc["count"] = int(doc.get("count", 0)) + 1
    try:
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        doc["tb"] = buf.getvalue()[-600:]
    except Exception:  # noqa: BLE001
        doc["tb"] = repr(e)[-600:]
    try:
        import machine
        doc["cause"] = machine.reset_cause()
    except Exception:  # noqa: BLE001
        pass
    try:
        import json
        import os
        try:
            os.mkdir("/data")
        except OSError:
            pass
        with open(CRASH_FILE + ".tmp", "w") as f:
            f.write(json.dumps(doc))
        os.rename(CRASH_FILE + ".tmp", CRASH_FILE)
    except Exception:  # noqa: BLE001  a full or broken file system must not stop the reset
        pass
    return doc["count"]


def start():
    import os

    try:  # a signed update's slot (/app_a or /app_b) goes ahead of the base install
        import kc_update
        slot = kc_update.boot_select()
        if slot:
            sys.path.insert(0, slot)
    except Exception as e:  # noqa: BLE001  no update machinery: run the base install
        print("update slot:", repr(e))
    import kc_config
    import kc_provision
    doc = kc_config.load_json("/config.json", {})
    why = kc_provision.reason(doc)
    window_ms = None
    asked = kc_provision.take_window(kc_provision.WINDOW_FILE)
    if why is None and asked is not None:
        why, window_ms = asked  # the node's networks kept failing: a bounded set-up window
    import kc_board
    if why is None and kc_board.button_held(doc):
        why = "button"
    if why is not None:
        # no usable config (or the installer asked): own access point + setup page + Improv
        kc_board.provision(doc, why, window_ms=window_ms)
        return
    from kc_board import Board
    from kc_node import Node
    cfg = kc_config.validate_device(doc)
    try:
        os.mkdir("/data")
    except OSError:
        pass
    node = Node(Board(cfg), cfg)
    node.run()


def main():
    if int(_load_crash().get("count", 0)) >= SAFE_AFTER:
        print("safe mode: %d crashes in a row, see %s; remove it to start again" % (SAFE_AFTER, CRASH_FILE))
        return
    try:
        start()
    except KeyboardInterrupt:
        raise  # Ctrl-C from an installer: give them the REPL
    except Exception as e:  # noqa: BLE001
        if type(e).__name__ == "ConfigError":
            # nothing to do without an identity: say so once and wait for the installer
            print("config.json invalid:", e)
            return
        sys.print_exception(e)
        n = _record_crash(e)
        import machine
        wait_s = BACKOFF_S[min(n, len(BACKOFF_S)) - 1]
        print("crash %d: resetting in %d s" % (n, wait_s))
        # deep sleep ends in a reset and draws microamps meanwhile; it also stops the watchdog
        machine.deepsleep(wait_s * 1000)


main()
