"""Where stations stand: coordinates from the device list (``settings.stations_file``).

The telemetry in InfluxDB carries city and district tags but no coordinates; the gateway's
device registry has them, exported in the device-list exchange format (a JSON array of
``{"device","kind","city","district","lat","lon"}``, docs/team-interfaces.md). The open-data
API (maps, GeoJSON, NGSI-LD ``location``) and analytics (alert coordinates) read it; the file
is re-read when it changes.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("kotacerdas.stations")


@dataclass(frozen=True)
class Position:
    lat: float
    lon: float


class StationIndex:
    """device -> Position, from the device-list file (empty without one)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._mtime: float | None = None
        self._pos: dict[str, Position] = {}
        self._lock = threading.Lock()

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("stations file unreadable", extra={"path": str(self.path), "error": str(exc)[:200]})
            return
        pos: dict[str, Position] = {}
        bad = 0
        for d in doc if isinstance(doc, list) else []:
            try:
                lat, lon = float(d["lat"]), float(d["lon"])
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            if -90 <= lat <= 90 and -180 <= lon <= 180:
                pos[str(d.get("device"))] = Position(lat, lon)
            else:
                bad += 1
        if bad:
            log.warning("stations without usable coordinates", extra={"path": str(self.path), "count": bad})
        self._pos, self._mtime = pos, mtime

    def get(self, device: str) -> Position | None:
        with self._lock:
            self._reload()
            return self._pos.get(device)

    def locate(self, rows: Sequence[dict[str, Any]]) -> None:
        """Fill ``lat``/``lon`` of rows that have a ``device`` (None where unknown)."""
        with self._lock:
            self._reload()
            pos = self._pos
        for r in rows:
            p = pos.get(str(r.get("device")))
            r["lat"], r["lon"] = (p.lat, p.lon) if p else (None, None)
