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

FOLDER_UID = "kotacerdas"
_VOLATILE = ("id", "version")


class GrafanaError(RuntimeError):
    pass


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
                r = self.http.request(method, path, json=json)
            except httpx.HTTPError as exc:
                if attempt == self.retries - 1:
                    raise GrafanaError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            else:
                if r.status_code == 404 and ok404:
                    return None
                if r.status_code in (401, 403):
                    raise GrafanaError(f"{method} {path}: {r.status_code} - check the API token and its role "
                                       f"(needs Admin for datasources, Editor for dashboards)")
                if r.status_code < 500 and r.status_code != 429:
                    if r.status_code >= 400:
                        raise GrafanaError(f"{method} {path}: {r.status_code} {r.text[:300]}")
                    return r
                if attempt == self.retries - 1:
                    raise GrafanaError(f"{method} {path}: {r.status_code} after {self.retries} attempts")
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
