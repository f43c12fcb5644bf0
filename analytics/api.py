"""HTTP API of the analytics service: alerts list/acknowledge, /healthz, /readyz, /metrics."""

from __future__ import annotations

import hmac
from typing import Callable

from fastapi import FastAPI, Header, HTTPException, Query
from prometheus_client import CollectorRegistry

from kotacerdas.runtime import HttpServer, ops_router

from analytics.alerts import AlertStore


def make_app(store: AlertStore, registry: CollectorRegistry, admin_token: str,
             ready: Callable[[], dict[str, bool]] = lambda: {}) -> FastAPI:
    app = FastAPI(title="Kota Cerdas analytics", version="1")
    app.include_router(ops_router(registry, ready))

    @app.get("/alerts")
    def list_alerts(state: str | None = Query(None, pattern="^(active|open|update|resolved)$"),
                    department: str | None = None, limit: int = Query(200, ge=1, le=5000)) -> list[dict]:
        return [a.to_json() for a in store.list(state, department, limit)]

    @app.get("/alerts/{alert_id}")
    def get_alert(alert_id: str) -> dict:
        a = store.get(alert_id)
        if a is None:
            raise HTTPException(404, "no such alert")
        return a.to_json()

    @app.post("/alerts/{alert_id}/ack")
    def ack(alert_id: str, authorization: str | None = Header(None), by: str = "admin") -> dict:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
        a = store.acknowledge(alert_id, by[:64])
        if a is None:
            raise HTTPException(404, "no such alert")
        return a.to_json()

    return app


class ApiServer(HttpServer):
    """The analytics API in a daemon thread (kotacerdas.runtime.HttpServer)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        super().__init__(app, host, port, name="analytics-http")
