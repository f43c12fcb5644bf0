"""Throttled firmware rollout: the pure core (no I/O; ``gateway/rollout_service.py`` is the shell).

A rollout sends one signed ``update`` command (``kotacerdas.contract.encode_cmd``) per device,
a wave at a time; the next wave starts only when every device of the current one has finished.
A device is ``done`` when its birth message reports the new ``fw`` or it acks ``confirmed`` (or
already runs the version); it has ``failed`` when it acks ``ok: false`` (bad signature, wrong
hash, download error, or a rollback reported after the reboot, which also undoes an earlier
``done``) or stays silent past ``timeout_s``. When failures exceed ``max_failures`` the rollout
halts: no further commands; devices already commanded are still watched.

State is a plain JSON document so a restarted rollout resumes where it stopped.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from kotacerdas.contract import Ack, DeviceStatus

STATES = ("pending", "sent", "staged", "done", "failed")
IN_FLIGHT = frozenset({"sent", "staged"})


@dataclass
class Policy:
    wave: int = 1  # devices commanded at a time
    max_failures: int = 0  # halt when more devices than this have failed
    timeout_s: float = 600.0  # from the command to the new version in a birth message

    @classmethod
    def make(cls, n_devices: int, *, wave: int | None = None, wave_percent: float | None = None,
             max_failures: int | None = None, max_failure_percent: float | None = None,
             timeout_s: float = 600.0) -> "Policy":
        """Wave and threshold as a count or as a share of the devices (rounded up, at least 1 / 0)."""
        if wave is not None and wave_percent is not None:
            raise ValueError("give a wave size or a wave percentage, not both")
        if max_failures is not None and max_failure_percent is not None:
            raise ValueError("give a failure count or a failure percentage, not both")
        w = wave if wave is not None else math.ceil(n_devices * (wave_percent or 0) / 100) if wave_percent else 1
        f = max_failures if max_failures is not None else (
            math.floor(n_devices * max_failure_percent / 100) if max_failure_percent is not None else 0)
        if w < 1 or f < 0 or timeout_s <= 0:
            raise ValueError("wave must be >= 1, max_failures >= 0, timeout_s > 0")
        return cls(wave=int(w), max_failures=int(f), timeout_s=float(timeout_s))


@dataclass
class DeviceRun:
    device: str
    kind: str
    city: str
    state: str = "pending"
    cmd_id: str | None = None
    sent_ms: int | None = None
    finished_ms: int | None = None
    detail: str = ""
    wave: int | None = None


@dataclass
class Rollout:
    name: str
    kind: str
    version: str
    url: str
    sha256: str
    signature: str
    policy: Policy
    devices: list[DeviceRun]
    created_ms: int
    halted: str | None = None
    waves_sent: int = 0
    events: dict[str, int] = field(default_factory=dict)
    # +1 per transition: the shell persists when it moved (cheaper than comparing whole states)
    rev: int = 0

    # ---------------------------------------------------------------- queries
    def by_device(self, device: str) -> DeviceRun | None:
        for d in self.devices:
            if d.device == device:
                return d
        return None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for d in self.devices:
            out[d.state] += 1
        return out

    def failures(self) -> int:
        return sum(d.state == "failed" for d in self.devices)

    def in_flight(self) -> list[DeviceRun]:
        return [d for d in self.devices if d.state in IN_FLIGHT]

    def finished(self) -> bool:
        """Nothing more will happen: all devices ended, or halted with none in flight."""
        if self.in_flight():
            return False
        return self.halted is not None or all(d.state in ("done", "failed") for d in self.devices)

    def update_args(self) -> dict[str, str]:
        return {"url": self.url, "version": self.version, "sha256": self.sha256, "signature": self.signature}

    # ---------------------------------------------------------------- transitions
    def _count(self, what: str) -> None:
        self.events[what] = self.events.get(what, 0) + 1
        self.rev += 1

    def next_wave(self, now_ms: int) -> list[DeviceRun]:
        """The devices to command now (marked ``sent`` with a fresh command id), or [] while a wave
        is in flight, after a halt, or when none are left."""
        if self.halted is not None or self.in_flight():
            return []
        wave = [d for d in self.devices if d.state == "pending"][: self.policy.wave]
        if wave:
            self.waves_sent += 1
        for d in wave:
            d.state, d.cmd_id, d.sent_ms, d.wave = "sent", uuid.uuid4().hex, now_ms, self.waves_sent
            self._count("commands")
        return wave

    def _finish(self, d: DeviceRun, state: str, detail: str, now_ms: int) -> None:
        d.state, d.detail, d.finished_ms = state, detail[:200], now_ms
        if state == "failed":
            self._count("failed")
            if self.halted is None and self.failures() > self.policy.max_failures:
                self.halted = (f"{self.failures()} failed > max_failures {self.policy.max_failures} "
                               f"(last: {d.device}: {detail[:120]})")
        else:
            self._count("done")

    def on_ack(self, device: str, ack: Ack, now_ms: int) -> None:
        d = self.by_device(device)
        if d is None or d.cmd_id is None or ack.id != d.cmd_id:
            self._count("acks_ignored")  # another command's ack, or the config ack
            return
        if not ack.ok:
            if d.state != "failed":
                self._finish(d, "failed", ack.detail or "refused", now_ms)
            return
        if ack.detail.startswith("confirmed") or ack.detail.startswith("already running"):
            if d.state != "done":
                self._finish(d, "done", ack.detail, now_ms)
        elif d.state == "sent":
            d.state, d.detail = "staged", ack.detail[:200]
            self._count("staged")

    def on_status(self, device: str, status: DeviceStatus, now_ms: int) -> None:
        """A birth message (retained ones too): the new version running means done; a device that
        already ran it before being commanded is done without a command."""
        d = self.by_device(device)
        if d is None or status.state != "online" or status.fw != self.version:
            return
        if d.state in ("pending", "sent", "staged"):
            self._finish(d, "done", f"running {self.version}" + (" (before the rollout)" if d.state == "pending"
                                                                   else ""), now_ms)

    def tick(self, now_ms: int) -> None:
        """Devices silent past the timeout have failed."""
        limit = int(self.policy.timeout_s * 1000)
        for d in self.in_flight():
            if d.sent_ms is not None and now_ms - d.sent_ms > limit:
                self._finish(d, "failed", f"no new version within {self.policy.timeout_s:g} s ({d.state})", now_ms)

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Rollout":
        d = dict(doc)
        d["policy"] = Policy(**d["policy"])
        d["devices"] = [DeviceRun(**x) for x in d["devices"]]
        return cls(**d)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "halted": self.halted,
                "finished": self.finished(), "waves_sent": self.waves_sent, "counts": self.counts(),
                "policy": asdict(self.policy), "events": dict(self.events)}
