"""A small client for the InfluxDB v1 HTTP API (``/ping``, ``/write``, ``/query``).

The v1 API is served by InfluxDB 1.x, by 2.x's compatibility endpoints and by 3.x,
and read by Grafana's InfluxQL datasource, so it is the one the platform speaks.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any, Iterable

import httpx

from kotacerdas.errors import Disposition, StorageError, http_disposition
from kotacerdas.settings import InfluxSettings


class InfluxError(StorageError):
    """InfluxDB's answer (``status`` 0: unreachable) and what it means (:class:`Disposition`)."""

    backend = "InfluxDB"

    @property
    def disposition(self) -> Disposition:
        # InfluxDB 1.x /write: 400 = a line is refused (parse error, field type conflict, beyond the
        # retention policy), 413 = request too large: both about the data. 404 = "database not
        # found": set it up again and retry. The rest follows HTTP (kotacerdas.errors).
        if self.status in (400, 413):
            return Disposition.DROP
        if self.status == 404:
            return Disposition.RETRY
        return http_disposition(self.status)


@dataclass
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.values]


class InfluxClient:
    def __init__(self, settings: InfluxSettings, *, client: httpx.Client | None = None):
        self.settings = settings
        auth = None
        if settings.username:
            pw = settings.password.get_secret_value() if settings.password else ""
            auth = (settings.username, pw)
        self._http = client or httpx.Client(base_url=settings.url, timeout=settings.timeout_s, auth=auth)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "InfluxClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        try:
            return self._http.get("/ping").status_code == 204
        except httpx.HTTPError:
            return False

    def write(
        self,
        lines: str | bytes | Iterable[str],
        *,
        database: str | None = None,
        precision: str = "ms",
        retention_policy: str | None = None,
        compress: bool = True,
    ) -> None:
        """POST line protocol. Raises :class:`InfluxError` (status 0 for transport errors)."""
        if not isinstance(lines, (str, bytes)):
            lines = "\n".join(lines)
        body = lines.encode() if isinstance(lines, str) else lines
        if not body:
            return
        params = {"db": database or self.settings.database, "precision": precision}
        rp = retention_policy or self.settings.retention_policy
        if rp:
            params["rp"] = rp
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if compress:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            r = self._http.post("/write", params=params, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise InfluxError(0, f"{type(exc).__name__}: {exc}") from exc
        if r.status_code != 204:
            raise InfluxError(r.status_code, _error_text(r))

    def query(self, q: str, *, database: str | None = None, epoch: str | None = "ms", method: str | None = None) -> list[dict]:
        """Run InfluxQL; returns the raw ``results`` list. Raises on HTTP or statement errors."""
        params = {"q": q}
        db = database if database is not None else self.settings.database
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        verb = method or ("GET" if q.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST")
        try:
            r = self._http.request(verb, "/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxError(0, f"{type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise InfluxError(r.status_code, _error_text(r))
        results = r.json().get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(400, res["error"])
        return results

    def series(self, q: str, **kw: Any) -> list[Series]:
        """Query and flatten every statement's series."""
        out: list[Series] = []
        for res in self.query(q, **kw):
            for s in res.get("series", []) or []:
                out.append(Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s.get("values") or []))
        return out

    def scalar(self, q: str, **kw: Any) -> Any:
        """First value of the first row of the first series (None if empty)."""
        ss = self.series(q, **kw)
        if not ss or not ss[0].values:
            return None
        return ss[0].values[0][1]

    def create_database(self, name: str | None = None) -> None:
        self.query(f'CREATE DATABASE "{name or self.settings.database}"', database="")

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"', database="")


def _error_text(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))[:500]
    except ValueError:
        return r.text[:500]
