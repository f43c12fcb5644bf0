"""Loader of the conformance corpus (real Tasmota/ESPHome payloads, see the YAML files here)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{T(-\d+)?(@[+-]\d\d:\d\d)?(\.)?\}")
WIB = 7 * 3600


@dataclass
class Entry:
    vendor: str
    id: str
    source: str
    topic: str
    payload: bytes
    expect: dict
    retain: bool = False
    decommission: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def stored(self) -> bool:
        return "stored" in self.expect

    @property
    def reason(self) -> str | None:
        return self.expect.get("rejected")


def _fill(text: str, now_s: int) -> str:
    def sub(m: re.Match) -> str:
        t = now_s + int(m.group(1) or 0)
        off = m.group(2)
        if off:
            sign = 1 if off[1] == "+" else -1
            secs = sign * (int(off[2:4]) * 3600 + int(off[5:7]) * 60)
            return dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(seconds=secs))).isoformat()
        local = dt.datetime.fromtimestamp(t, dt.timezone.utc) + dt.timedelta(seconds=WIB)
        fmt = "%Y.%m.%d %H:%M:%S" if m.group(3) else "%Y-%m-%dT%H:%M:%S"
        return local.strftime(fmt)

    return _PLACEHOLDER.sub(sub, text)


def load(now_s: int) -> tuple[list[dict], list[Entry]]:
    """(devices, entries) of every corpus file, times filled in relative to ``now_s``."""
    devices: list[dict] = []
    entries: list[Entry] = []
    for path in sorted(HERE.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        devices += doc["devices"]
        for m in doc["messages"]:
            entries.append(Entry(vendor=path.stem, id=m["id"], source=m["source"], topic=m["topic"],
                                 payload=_fill(m["payload"], now_s).encode(), expect=m["expect"],
                                 retain=bool(m.get("retain")), decommission=m.get("decommission")))
    return devices, entries
