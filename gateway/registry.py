"""The device registry: who may send what, from where, for which department.

SQLite at the edge: one file, durable, no server. The registry stores each device's
MQTT password only as a Mosquitto-compatible hash (``gateway.passwords``); the
clear password is returned once, at registration or rotation, and never stored.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.contract import CITY_RE, DEVICE_RE

from gateway.passwords import hash_password, new_password

ACTIVE = "active"
DECOMMISSIONED = "decommissioned"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    city TEXT NOT NULL,
    district TEXT NOT NULL DEFAULT 'unknown',
    lat REAL,
    lon REAL,
    department TEXT NOT NULL DEFAULT '',
    installed TEXT,
    calibration TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active',
    password_hash TEXT,
    credentials_rotated_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- the gateway's lifecycle view, so a restart keeps last_seen/battery/fw and can still flag stale devices
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    stale INTEGER NOT NULL,
    last_seen INTEGER,
    battery REAL,
    fw TEXT
);
"""


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown kind, bad id, missing device)."""


@dataclass
class Device:
    device: str
    kind: str
    city: str
    district: str = "unknown"
    lat: float | None = None
    lon: float | None = None
    department: str = ""
    installed: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    status: str = ACTIVE
    password_hash: str | None = None
    credentials_rotated_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def public(self) -> dict[str, Any]:
        """Everything but the credential hash."""
        d = asdict(self)
        d.pop("password_hash")
        d["has_credentials"] = self.password_hash is not None
        return d


def _now_ms() -> int:
    return int(time.time() * 1000)


def _row(r: sqlite3.Row) -> Device:
    return Device(
        device=r["device"], kind=r["kind"], city=r["city"], district=r["district"], lat=r["lat"], lon=r["lon"],
        department=r["department"], installed=r["installed"], calibration=json.loads(r["calibration"]),
        config=json.loads(r["config"]), status=r["status"], password_hash=r["password_hash"],
        credentials_rotated_ms=r["credentials_rotated_ms"],
    )


class Registry:
    """Thread-safe access to the registry file. Several processes may open it (CLI + service)."""

    def __init__(self, path: Path | str, catalogue: Catalogue | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.catalogue = catalogue or load_catalogue()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> int:
        """Changes whenever another connection commits: lets the service reload its cache cheaply."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------ reads

    def get(self, device: str) -> Device | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM devices WHERE device = ?", (device,)).fetchone()
        return _row(r) if r else None

    def all(self, *, include_decommissioned: bool = True) -> list[Device]:
        q = "SELECT * FROM devices" + ("" if include_decommissioned else " WHERE status = 'active'") + " ORDER BY device"
        with self._lock:
            return [_row(r) for r in self._db.execute(q).fetchall()]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM devices").fetchone()[0])

    # ------------------------------------------------------------ writes

    def _check(self, device: str, kind: str, city: str, lat: float | None = None, lon: float | None = None) -> None:
        for name, v, lim in (("lat", lat, 90.0), ("lon", lon, 180.0)):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not -lim <= v <= lim):
                raise RegistryError(f"{name} {v!r} is not a coordinate in -{lim:g}..{lim:g}")
        if not DEVICE_RE.match(device):
            raise RegistryError(f"invalid device id {device!r} (letters, digits, '-' and '_', max 64)")
        if kind not in self.catalogue:
            raise RegistryError(f"unknown kind {kind!r}; catalogue has {', '.join(self.catalogue.kind_names)}")
        if not CITY_RE.match(city):
            raise RegistryError(f"invalid city slug {city!r}")

    def register(
        self,
        device: str,
        kind: str,
        city: str,
        *,
        district: str = "unknown",
        lat: float | None = None,
        lon: float | None = None,
        department: str | None = None,
        installed: str | None = None,
        calibration: dict[str, Any] | None = None,
        with_credentials: bool = True,
    ) -> tuple[Device, str | None]:
        """Create or update a device (re-activating it). Returns the device and a new clear password.

        An existing device keeps its credentials unless it has none; the password is
        returned only when one was created.
        """
        self._check(device, kind, city, lat, lon)
        now = _now_ms()
        dept = department or self.catalogue[kind].department
        with self._lock:
            old = self.get(device)
            password = None
            pw_hash = old.password_hash if old else None
            if with_credentials and pw_hash is None:
                password = new_password()
                pw_hash = hash_password(password)
            self._db.execute(
                """INSERT INTO devices (device, kind, city, district, lat, lon, department, installed, calibration,
                       status, password_hash, credentials_rotated_ms, created_ms, updated_ms)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(device) DO UPDATE SET kind=excluded.kind, city=excluded.city,
                       district=excluded.district, lat=excluded.lat, lon=excluded.lon,
                       department=excluded.department, installed=COALESCE(excluded.installed, devices.installed),
                       calibration=excluded.calibration, status='active',
                       password_hash=excluded.password_hash,
                       credentials_rotated_ms=COALESCE(excluded.credentials_rotated_ms, devices.credentials_rotated_ms),
                       updated_ms=excluded.updated_ms""",
                (device, kind, city, district or "unknown", lat, lon, dept,
                 installed or time.strftime("%Y-%m-%d", time.gmtime()),
                 json.dumps(calibration if calibration is not None else (old.calibration if old else {})),
                 ACTIVE, pw_hash, now if password else None, now, now),
            )
            self._db.commit()
            return self.get(device), password  # type: ignore[return-value]

    def import_devices(self, docs: Iterable[dict[str, Any]]) -> tuple[int, dict[str, str]]:
        """Register a simulator/device list (``team-interfaces.md``); returns (count, new passwords)."""
        passwords: dict[str, str] = {}
        n = 0
        for d in docs:
            missing = [k for k in ("device", "kind", "city") if k not in d]
            if missing:
                raise RegistryError(f"device entry {str(d)[:80]} lacks {', '.join(missing)}")
            _, pw = self.register(
                str(d["device"]), str(d["kind"]), str(d["city"]), district=str(d.get("district") or "unknown"),
                lat=d.get("lat"), lon=d.get("lon"), department=d.get("department"),
                installed=d.get("installed"), calibration=d.get("calibration"),
            )
            if pw:
                passwords[str(d["device"])] = pw
            n += 1
        return n, passwords

    def decommission(self, device: str) -> Device:
        """Refuse the device's data from now on and drop its broker credentials (record is kept)."""
        with self._lock:
            if self.get(device) is None:
                raise RegistryError(f"no device {device!r}")
            self._db.execute(
                "UPDATE devices SET status = ?, password_hash = NULL, updated_ms = ? WHERE device = ?",
                (DECOMMISSIONED, _now_ms(), device),
            )
            self._db.commit()
            return self.get(device)  # type: ignore[return-value]

    def rotate_credentials(self, device: str) -> tuple[Device, str]:
        with self._lock:
            d = self.get(device)
            if d is None:
                raise RegistryError(f"no device {device!r}")
            if not d.active:
                raise RegistryError(f"device {device!r} is decommissioned")
            password = new_password()
            now = _now_ms()
            self._db.execute(
                "UPDATE devices SET password_hash = ?, credentials_rotated_ms = ?, updated_ms = ? WHERE device = ?",
                (hash_password(password), now, now, device),
            )
            self._db.commit()
            return self.get(device), password  # type: ignore[return-value]

    def set_config(self, device: str, config: dict[str, Any]) -> Device:
        with self._lock:
            if self.get(device) is None:
                raise RegistryError(f"no device {device!r}")
            self._db.execute(
                "UPDATE devices SET config = ?, updated_ms = ? WHERE device = ?", (json.dumps(config), _now_ms(), device)
            )
            self._db.commit()
            return self.get(device)  # type: ignore[return-value]

    # ------------------------------------------------------------ lifecycle state

    def save_states(self, rows: list[tuple[str, str, bool, int | None, float | None, str | None]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO device_state (device, state, stale, last_seen, battery, fw) VALUES (?,?,?,?,?,?)",
                [(d, st, int(stale), ls, b, fw) for d, st, stale, ls, b, fw in rows],
            )
            self._db.commit()

    def load_states(self) -> list[tuple[str, str, bool, int | None, float | None, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT device, state, stale, last_seen, battery, fw FROM device_state").fetchall()
        return [(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]
