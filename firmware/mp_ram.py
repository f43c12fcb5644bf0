"""Peak RAM of the node main loop on real MicroPython, loading a kind's built .mpy bundle.

The WebAssembly port's heap grows on demand, so there is no fixed heap to overflow,
and it only collects garbage once the stack has unwound to JavaScript. So the loop is
driven step by step from a coroutine: after each step it records ``gc.mem_alloc()``
(peak_alloc: the step's garbage included), yields, collects and records again
(peak_live). Both are above the empty interpreter heap, so module bytecode loaded
from the .mpy bundle and all node state count.
"""

from __future__ import annotations

import json
from pathlib import Path

from firmware import mpnode

SCRIPT = """
import asyncio, gc
await asyncio.sleep(0)
gc.collect()
base = gc.mem_alloc()
import json, kc_config, kc_fakes
from kc_node import Node
try:
    import os
    os.mkdir('/data/n')
except OSError:
    pass
cfg = kc_config.validate_device({"kind": KIND, "device": "RAM-1", "interval_s": 1,
                                 "ring": {"capacity": 64, "slot": 512}, "deep_sleep": False})
board = kc_fakes.SimBoard(KIND, '/data/n')
node = Node(board, cfg)
peak_alloc = peak_live = 0
while node.stats["readings"] < READINGS or not node.idle():
    node.step()
    a = gc.mem_alloc()
    peak_alloc = max(peak_alloc, a)
    await asyncio.sleep(0)
    gc.collect()
    peak_live = max(peak_live, gc.mem_alloc())
sent = [m for t, m, d in board.published if t.endswith('/telemetry')]
print('RAMJSON ' + json.dumps({"kind": KIND, "base": base, "peak_live": peak_live - base,
      "peak_alloc": peak_alloc - base, "telemetry": len(sent),
      "payload_bytes": max(len(m) for m in sent)}))
"""


def measure(kind: str, bundle: Path, readings: int = 10) -> dict:
    files = mpnode.bundle_files(bundle)
    files["/lib/kc_fakes.py"] = str(mpnode.FAKES_DIR / "kc_fakes.py")
    script = f"KIND = {kind!r}\nREADINGS = {readings}\n" + SCRIPT
    r = mpnode.run(script, files)
    if r.returncode != 0:
        raise RuntimeError(f"MicroPython run failed: {r.stderr[-2000:]}")
    for line in r.stdout.splitlines():
        if line.startswith("RAMJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"no RAM report in output: {r.stdout[-500:]}")
