"""Which simulator run produced a reading: the run id, carried in the simulated firmware string.

The simulator writes ground-truth labels for the faults it injects; scoring what the live
service stored against labels of *another* run (an earlier run of the same scenario, another
seed) would give plausible-looking nonsense. Every simulated device therefore reports
``fw = "sim-1.0+<run id>"`` (build metadata after ``+``, as in semantic versioning), which
ingest stores with each telemetry point, and every label carries ``run``. The run id is a
digest of the scenario, seed, topic root and simulated window start: the same run replayed
gives the same id, any other run another one.
"""

from __future__ import annotations

import hashlib

SIM_FW = "sim-1.0"  # the simulated devices' firmware version
RUN_ID_LEN = 10  # hex digits; with SIM_FW well inside the contract's FW_MAX (32)


def run_id(scenario: str, seed: int, root: str, start_ms: int) -> str:
    return hashlib.sha1(f"{scenario}|{seed}|{root}|{int(start_ms)}".encode()).hexdigest()[:RUN_ID_LEN]


def fw_for(run: str) -> str:
    """The firmware string simulated devices of run ``run`` report."""
    return f"{SIM_FW}+{run}"


def run_of(fw: object) -> str | None:
    """The run id inside a simulated firmware string, or None (a real device, or no fw)."""
    if not isinstance(fw, str) or not fw.startswith(SIM_FW + "+"):
        return None
    return fw[len(SIM_FW) + 1 :] or None
