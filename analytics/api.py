"""HTTP API of the analytics service: alerts list/acknowledge, /healthz, /readyz, /metrics."""

from __future__ import annotations

import hmac
import socket
import threading
from typing import Callable

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from analytics.alerts import AlertStore


def make_app(store: AlertStore, registry: CollectorRegistry, admin_token: str,
             ready: Callable[[], dict[str, bool]] = lambda: {}) -> FastAPI:
    app = FastAPI(title="Kota Cerdas analytics", version="1")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict:
        checks = ready()
        ok = all(checks.values())
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not_ready", "checks": checks}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

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


class ApiServer:
    """uvicorn in a daemon thread on a socket bound here (port 0 = a free port, known before start)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        # the main thread owns SIGTERM (uvicorn < 0.29 installed handlers unless told not to; newer
        # versions skip it outside the main thread)
        self.server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="analytics-http")

    def start(self) -> "ApiServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
