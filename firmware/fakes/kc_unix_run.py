# Entry point on MicroPython's unix port: `micropython kc_unix_run.py SPEC.json`.
# SPEC: {"config": device config, "storage": dir, "flash_blocks": n (0: plain directory),
#        "readings": n, "duration_ms": cap}. Runs the real kc_node loop with kc_unixboard and
# prints one line "UNIXJSON {...}": node and MQTT counters, flash erases, peak heap.
import gc
import json
import sys

import kc_config
from kc_node import Node
from kc_unixboard import UnixBoard


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    storage = spec["storage"]
    dev = None
    if spec.get("flash_blocks"):
        import vfs

        from kc_flash import CountingFlash
        dev = CountingFlash(spec["flash_blocks"])
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), storage)
    cfg = kc_config.validate_device(spec["config"])
    board = UnixBoard(cfg["kind"], storage)
    node = Node(board, cfg)
    gc.collect()
    erases0 = dev.erases if dev else 0
    stats = node.run(duration_ms=spec.get("duration_ms", 60000), max_readings=spec.get("readings"))
    out = {"stats": stats, "mqtt": node.client.stats, "buffered": len(node.ring), "seq": node.seq,
           "connected": node.client.connected(), "erases": (dev.erases - erases0) if dev else None,
           "logs": board.logs[-20:]}
    node.shutdown()
    print("UNIXJSON " + json.dumps(out))


main(sys.argv[1])
