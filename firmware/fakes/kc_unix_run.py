# Entry point on MicroPython's unix port: `micropython kc_unix_run.py SPEC.json`.
# SPEC: {"config": device config, "storage": dir, "flash_blocks": n (0: plain directory),
#        "readings": n, "duration_ms": cap, "fs_root": dir of /app.json and the update slots,
#        "partitions": dir of the fake esp32 OTA partitions (firmware/fakes/unix/esp32.py)}.
# Boots like main.py (a staged update slot goes ahead of the base modules on sys.path), runs the
# real kc_node loop with kc_unixboard and prints one line "UNIXJSON {...}": node and MQTT
# counters, flash erases, peak heap, where kc_node was imported from, and whether the node asked
# for a reset (the caller starts a new process: a reboot that re-imports everything).
import gc
import json
import sys


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    storage = spec["storage"]
    fs_root = spec.get("fs_root")
    slot = None
    partition = None
    if spec.get("partitions"):  # the fake esp32 module and its bootloader
        # first: fakes/esp32/ (the board stand-ins directory) would import as a namespace package
        sys.path.insert(0, [p for p in sys.path if p.endswith("/fakes")][0] + "/unix")
        import esp32
        partition = esp32.boot(spec["partitions"])
    if fs_root:
        import kc_update
        slot = kc_update.boot_select(fs_root)
        if slot:
            sys.path.insert(0, fs_root + slot)
    import kc_config
    import kc_fakes
    import kc_node
    from kc_unixboard import UnixBoard
    dev = None
    if spec.get("flash_blocks"):
        import vfs

        from kc_flash import CountingFlash
        dev = CountingFlash(spec["flash_blocks"])
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), storage)
    cfg = kc_config.validate_device(spec["config"])
    board = UnixBoard(cfg["kind"], storage)
    if fs_root:
        board.fs_root = fs_root
    node = kc_node.Node(board, cfg)
    gc.collect()
    erases0 = dev.erases if dev else 0
    reset = False
    try:
        stats = node.run(duration_ms=spec.get("duration_ms", 60000), max_readings=spec.get("readings"))
    except kc_fakes.Reset:
        reset, stats = True, node.stats
    out = {"stats": stats, "mqtt": node.client.stats, "buffered": len(node.ring), "seq": node.seq,
           "connected": node.client.connected(), "erases": (dev.erases - erases0) if dev else None,
           "logs": board.logs[-20:], "reset": reset, "fw": node.fw, "slot": slot, "partition": partition,
           "node_file": getattr(kc_node, "__file__", None),
           "update_modules": [m for m in ("kc_ota", "kc_http", "kc_update", "kc_ecdsa") if m in sys.modules]}
    if not reset:
        node.shutdown()
    print("UNIXJSON " + json.dumps(out))


main(sys.argv[1])
