"""Device lifecycle: online/offline from birth and last-will, last seen, battery, firmware, stale.

Pure state machine: every method takes the clock and returns the device states whose
published view changed, so the service publishes only on change (plus a periodic
refresh of last_seen) instead of once per reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from kotacerdas import contract


@dataclass
class DeviceState:
    device: str
    kind: str
    city: str
    district: str
    state: str = "offline"
    stale: bool = False
    last_seen: int | None = None
    battery: float | None = None
    fw: str | None = None

    def view(self) -> tuple:
        return (self.state, self.stale, self.fw, self.district)

    def to_dict(self) -> dict:
        return {
            "v": 1, "device": self.device, "kind": self.kind, "city": self.city, "district": self.district,
            "state": self.state, "stale": self.stale, "last_seen": self.last_seen, "battery": self.battery,
            "fw": self.fw,
        }

    def payload(self) -> bytes:
        """Exactly the devstatus payload of docs/team-interfaces.md."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def topic(self, root: str) -> str:
        return contract.devstatus_topic(root, self.city, self.kind, self.device)


class Lifecycle:
    def __init__(self, stale_after_intervals: int, interval_s: Callable[[str, str], float]):
        """``interval_s(device, kind)``: the device's reporting interval (its config, else the catalogue's)."""
        self.n = stale_after_intervals
        self.interval_s = interval_s
        self.devices: dict[str, DeviceState] = {}
        self._dirty: set[str] = set()
        self._unsaved: set[str] = set()

    def _get(self, device: str, kind: str, city: str, district: str) -> DeviceState:
        s = self.devices.get(device)
        if s is None:
            s = self.devices[device] = DeviceState(device, kind, city, district)
        s.kind, s.city, s.district = kind, city, district
        return s

    def on_reading(
        self, device: str, kind: str, city: str, district: str, ts_ms: int, rx_ms: int,
        battery: float | None, fw: str | None,
    ) -> DeviceState | None:
        s = self._get(device, kind, city, district)
        before = s.view()
        # last_seen is when the gateway heard it, not the device's clock: a replayed
        # backlog of old readings still proves the device is alive now
        s.last_seen = max(s.last_seen or 0, rx_ms)
        if battery is not None:
            s.battery = battery
        if fw is not None:
            s.fw = fw
        s.state = "online"
        s.stale = False
        self._dirty.add(device)
        self._unsaved.add(device)
        return s if s.view() != before else None

    def on_status(
        self, device: str, kind: str, city: str, district: str, state: str, rx_ms: int, fw: str | None,
        fresh: bool = True,
    ) -> DeviceState | None:
        """``fresh=False`` for a retained status replayed at (re)subscription: it says what the device
        last declared, not that it is alive now, so it must not reset last_seen (nor clear stale)."""
        s = self._get(device, kind, city, district)
        before = s.view()
        s.state = state
        if fw is not None:
            s.fw = fw
        if state == "online" and (fresh or s.last_seen is None):
            s.last_seen = max(s.last_seen or 0, rx_ms)
            s.stale = False
        self._unsaved.add(device)
        return s if s.view() != before else None

    def sweep(self, now_ms: int) -> list[DeviceState]:
        """Devices that just went stale: silent for more than N reporting intervals."""
        changed = []
        for s in self.devices.values():
            if s.stale or s.last_seen is None:
                continue
            if now_ms - s.last_seen > self.n * self.interval_s(s.device, s.kind) * 1000:
                s.stale = True
                changed.append(s)
                self._unsaved.add(s.device)
        return changed

    def take_dirty(self) -> list[DeviceState]:
        """Devices heard since the last call (for the periodic last_seen/battery refresh)."""
        out = [self.devices[d] for d in self._dirty if d in self.devices]
        self._dirty.clear()
        return out

    def take_unsaved(self) -> list[DeviceState]:
        """States changed since the last call (to persist, so a restart keeps last_seen and stale)."""
        out = [self.devices[d] for d in self._unsaved if d in self.devices]
        self._unsaved.clear()
        return out

    def restore(self, states: list[DeviceState]) -> None:
        for s in states:
            self.devices[s.device] = s
