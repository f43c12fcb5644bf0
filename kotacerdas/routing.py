"""Which InfluxDB holds a city's data: the one table is ``Settings.routing.cities``.

InfluxDB OSS does not cluster, so the platform scales storage by giving each city (or a
group of cities) its own InfluxDB and routing by city: ingest writes each point to its
city's database, and every reader (analytics, dashboards, open data) asks the same router
where to query. A city missing from the table goes to ``Settings.influx`` (one-city setups
never configure routing at all).

The path to a clustered store speaking the same v1 write/query API is to point a table
entry (or the default) at it: see docs/scale.md ("Storage").
"""

from __future__ import annotations

import threading
from typing import Iterable

from kotacerdas.influx import InfluxClient
from kotacerdas.settings import InfluxSettings, Settings

__all__ = ["CityRouter", "influx_for_city"]


def influx_for_city(settings: Settings, city: str | None = None) -> InfluxSettings:
    """Where a service serving one city (``Settings.city`` unless given) reads and writes."""
    return settings.routing.cities.get(city or settings.city, settings.influx)


def _key(s: InfluxSettings) -> tuple[str, str, str | None, str | None]:
    return (s.url.rstrip("/"), s.database, s.retention_policy, s.username)


class CityRouter:
    """City -> :class:`InfluxSettings` / a shared :class:`InfluxClient` per distinct target."""

    def __init__(self, settings: Settings):
        self.default = settings.influx
        self.table = dict(settings.routing.cities)
        self._clients: dict[tuple, InfluxClient] = {}
        self._lock = threading.Lock()

    def settings_for(self, city: str) -> InfluxSettings:
        return self.table.get(city, self.default)  # the same rule as influx_for_city

    def client_for(self, city: str) -> InfluxClient:
        """One client (one HTTP connection pool) per distinct URL + database, shared by cities."""
        s = self.settings_for(city)
        k = _key(s)
        with self._lock:
            c = self._clients.get(k)
            if c is None:
                c = self._clients[k] = InfluxClient(s)
            return c

    def targets(self) -> list[InfluxSettings]:
        """Every distinct InfluxDB in use (the default first): what setup and health checks visit."""
        seen: dict[tuple, InfluxSettings] = {_key(self.default): self.default}
        for s in self.table.values():
            seen.setdefault(_key(s), s)
        return list(seen.values())

    def group(self, cities: Iterable[str]) -> dict[tuple, list[str]]:
        """Cities grouped by target (key of :meth:`targets`), for one query or write per target."""
        out: dict[tuple, list[str]] = {}
        for c in cities:
            out.setdefault(_key(self.settings_for(c)), []).append(c)
        return out

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()
