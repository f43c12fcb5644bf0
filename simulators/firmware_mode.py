"""High-fidelity mode: a handful of devices run the real firmware main loop beside the vectorised fleet.

Each device is a ``kotacerdas firmware virtual --kind KIND --device ID --duration S``
subprocess (the firmware part's host build of its MicroPython main loop), pointed
at the same broker, topic root and city through the child's environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

from kotacerdas.catalogue import load_catalogue
from kotacerdas.settings import Settings

from simulators.fleet import firmware_device_ids
from simulators.scenario import Scenario

log = logging.getLogger("simulators.firmware")


class FirmwareUnavailable(RuntimeError):
    """``kotacerdas firmware virtual`` is not available in this installation."""


def firmware_command(kind: str, device: str, duration_s: float, interval_s: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "kotacerdas", "firmware", "virtual", "--kind", kind, "--device", device,
           "--duration", str(max(1, int(round(duration_s))))]
    if interval_s is not None:
        cmd += ["--interval", f"{interval_s:g}"]
    return cmd


def child_env(sc: Scenario, settings: Settings) -> dict[str, str]:
    env = dict(os.environ)  # the child's own settings sources: we only add the broker and city it must use
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root, "KC_CITY": sc.city,
        "KC_STATE_DIR": str(settings.state_dir),  # the virtual device's flash/RTC files go under it
    })
    return env


def check_available(env: dict[str, str] | None = None) -> str:
    """Raise :class:`FirmwareUnavailable` unless the command answers; return its help text."""
    try:
        r = subprocess.run([sys.executable, "-m", "kotacerdas", "firmware", "virtual", "--help"],
                           capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FirmwareUnavailable("`kotacerdas firmware virtual --help` did not answer within 60 s") from exc
    if r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FirmwareUnavailable(
            "high-fidelity mode needs `kotacerdas firmware virtual --kind KIND --device ID --duration S` "
            f"(the firmware part); it failed with exit code {r.returncode}: {detail[0]}"
        )
    return r.stdout


@dataclass
class FirmwareFleet:
    procs: list[tuple[str, str, subprocess.Popen]] = field(default_factory=list)

    @classmethod
    def start(cls, sc: Scenario, settings: Settings) -> "FirmwareFleet":
        env = child_env(sc, settings)
        help_text = check_available(env)
        fleet = cls()
        intervals = {k.kind: k.interval_s for k in sc.kinds}
        for kind, count in sc.firmware_devices.items():
            interval = None
            if "--interval" in help_text:
                # the firmware runs in wall time: compress its report interval like the fleet's simulated time
                base = intervals.get(kind) or load_catalogue()[kind].report_interval_s
                interval = max(1.0, base / sc.acceleration)
            for dev in firmware_device_ids(sc, kind, count):
                cmd = firmware_command(kind, dev, sc.duration_s, interval)
                p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                fleet.procs.append((kind, dev, p))
                log.info("firmware device started", extra={"device": dev, "kind": kind, "pid": p.pid})
        return fleet

    def finish(self, grace_s: float = 30.0) -> dict:
        """Wait for every firmware device (they stop after their duration); report exit codes."""
        out: dict = {"devices": len(self.procs), "failed": 0, "exit_codes": {}, "results": {}}
        for _kind, dev, p in self.procs:
            try:
                stdout, err = p.communicate(timeout=grace_s)
            except subprocess.TimeoutExpired:
                p.terminate()
                stdout, err = p.communicate(timeout=10)
            out["exit_codes"][dev] = p.returncode
            # the virtual device prints one JSON line with what it did (published, buffered, ...)
            for line in reversed((stdout or "").strip().splitlines()):
                try:
                    out["results"][dev] = json.loads(line)
                    break
                except ValueError:
                    continue
            if p.returncode != 0:
                out["failed"] += 1
                log.error("firmware device failed", extra={"device": dev, "rc": p.returncode,
                                                           "stderr": (err or "")[-500:]})
        return out

    def stop(self) -> None:
        for _, _, p in self.procs:
            if p.poll() is None:
                p.terminate()
