"""High-fidelity mode: a handful of devices run the real firmware main loop beside the vectorised fleet.

Each device is a ``kotacerdas firmware virtual --kind KIND --device ID --duration S``
subprocess (the firmware part's host build of its MicroPython main loop), pointed
at the same broker, topic root and city through the child's environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

from kotacerdas.settings import Settings

from simulators.fleet import firmware_device_ids
from simulators.scenario import Scenario

log = logging.getLogger("simulators.firmware")


class FirmwareUnavailable(RuntimeError):
    """``kotacerdas firmware virtual`` is not available in this installation."""


def firmware_command(kind: str, device: str, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "kotacerdas", "firmware", "virtual", "--kind", kind, "--device", device,
            "--duration", str(int(round(duration_s)))]


def child_env(sc: Scenario, settings: Settings) -> dict[str, str]:
    env = dict(os.environ)  # the child's own settings sources: we only add the broker and city it must use
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root, "KC_CITY": sc.city,
    })
    return env


def check_available(env: dict[str, str] | None = None) -> None:
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


@dataclass
class FirmwareFleet:
    procs: list[tuple[str, str, subprocess.Popen]] = field(default_factory=list)

    @classmethod
    def start(cls, sc: Scenario, settings: Settings) -> "FirmwareFleet":
        env = child_env(sc, settings)
        check_available(env)
        fleet = cls()
        for kind, count in sc.firmware_devices.items():
            for dev in firmware_device_ids(sc, kind, count):
                cmd = firmware_command(kind, dev, sc.duration_s)
                p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
                fleet.procs.append((kind, dev, p))
                log.info("firmware device started", extra={"device": dev, "kind": kind, "pid": p.pid})
        return fleet

    def finish(self, grace_s: float = 30.0) -> dict:
        """Wait for every firmware device (they stop after their duration); report exit codes."""
        out = {"devices": len(self.procs), "failed": 0, "exit_codes": {}}
        for kind, dev, p in self.procs:
            try:
                _, err = p.communicate(timeout=grace_s)
            except subprocess.TimeoutExpired:
                p.terminate()
                _, err = p.communicate(timeout=10)
            out["exit_codes"][dev] = p.returncode
            if p.returncode != 0:
                out["failed"] += 1
                log.error("firmware device failed", extra={"device": dev, "rc": p.returncode,
                                                           "stderr": (err or "")[-500:]})
        return out

    def stop(self) -> None:
        for _, _, p in self.procs:
            if p.poll() is None:
                p.terminate()
