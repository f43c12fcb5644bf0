"""Upload the datasource, folder and dashboards through Grafana's HTTP API, idempotently.

API used (grafana.com/docs/grafana/latest/developers/http_api/): ``GET/PUT /api/datasources/uid/{uid}``,
``POST /api/datasources``, ``GET /api/folders/{uid}``, ``POST /api/folders``,
``GET /api/dashboards/uid/{uid}``, ``POST /api/dashboards/db`` (with ``overwrite``).
A dashboard whose stored model already equals ours is not re-posted, so a second push
changes nothing (Grafana would otherwise bump the version and add a history entry).
Authentication: a service-account token, ``Authorization: Bearer``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import httpx

from dashboards.model import Dashboard
from dashboards.provisioning import FOLDER
from kotacerdas.backoff import Backoff
from kotacerdas.errors import Disposition, TransportError, http_disposition

FOLDER_UID = "kotacerdas"
_VOLATILE = ("id", "version")


class GrafanaError(TransportError):
    """Grafana did not answer (``status`` 0) or refused a request; ``disposition`` says whether
    another try can help (kotacerdas.errors.http_disposition)."""


class Grafana:
    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0, retries: int = 3, client: httpx.Client | None = None):
        self.http = client or httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                           headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self.retries = retries

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, json: Any = None, ok404: bool = False) -> httpx.Response | None:
        backoff = Backoff(0.2, 5.0)
        for attempt in range(self.retries):
            try:
                try:
                    r = self.http.request(method, path, json=json)
                except httpx.HTTPError as exc:
                    raise GrafanaError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                if r.status_code == 404 and ok404:
                    return None
                if r.status_code < 400:
                    return r
                hint = (" - check the API token and its role (needs Admin for datasources, Editor for dashboards)"
                        if http_disposition(r.status_code) is Disposition.FATAL else f" {r.text[:300]}")
                raise GrafanaError(f"{method} {path}: {r.status_code}{hint}", status=r.status_code)
            except GrafanaError as exc:
                if exc.disposition is not Disposition.RETRY:
                    raise
                if attempt == self.retries - 1:
                    raise GrafanaError(f"{exc} (after {self.retries} attempts)", status=exc.status) from exc
            time.sleep(backoff.delay())
        raise AssertionError("unreachable")


def _same(stored: dict[str, Any], ours: dict[str, Any]) -> bool:
    a = {k: v for k, v in stored.items() if k not in _VOLATILE}
    b = {k: v for k, v in ours.items() if k not in _VOLATILE}
    return a == b


def push(url: str, token: str, dashboards: Sequence[Dashboard], datasource: dict[str, Any],
         folder: str = FOLDER, *, client: httpx.Client | None = None) -> list[str]:
    g = Grafana(url, token, client=client)
    report: list[str] = []
    try:
        uid = datasource["uid"]
        r = g.call("GET", f"/api/datasources/uid/{uid}", ok404=True)
        if r is None:
            g.call("POST", "/api/datasources", json=datasource)
            report.append(f"datasource {uid}: created")
        else:
            current = r.json()
            if all(current.get(k) == v for k, v in datasource.items() if k != "secureJsonData"):
                report.append(f"datasource {uid}: unchanged")
            else:
                g.call("PUT", f"/api/datasources/uid/{uid}", json={**datasource, "id": current.get("id")})
                report.append(f"datasource {uid}: updated")
        if g.call("GET", f"/api/folders/{FOLDER_UID}", ok404=True) is None:
            g.call("POST", "/api/folders", json={"uid": FOLDER_UID, "title": folder})
            report.append(f"folder {FOLDER_UID}: created")
        for d in dashboards:
            ours = d.to_json()
            r = g.call("GET", f"/api/dashboards/uid/{d.uid}", ok404=True)
            if r is not None and _same(r.json().get("dashboard", {}), ours) and \
                    r.json().get("meta", {}).get("folderUid") == FOLDER_UID:
                report.append(f"dashboard {d.uid}: unchanged")
                continue
            g.call("POST", "/api/dashboards/db", json={"dashboard": {**ours, "id": None}, "folderUid": FOLDER_UID,
                                                       "overwrite": True, "message": "kotacerdas dashboards push"})
            report.append(f"dashboard {d.uid}: {'updated' if r is not None else 'created'}")
    finally:
        g.close()
    return report
