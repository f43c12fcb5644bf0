"""What every service shares at run time: ops routes, an HTTP server in a thread, signal
handling and one retry backoff.

- :func:`ops_router`: ``/healthz`` (alive), ``/readyz`` (dependencies reachable; 503 with the
  failing checks otherwise) and ``/metrics`` (Prometheus), mounted into any FastAPI app;
- :class:`HttpServer`: uvicorn in a daemon thread on a socket bound before start (port 0 = a free
  port, known at once); :meth:`HttpServer.start` returns once it accepts connections;
- :class:`HealthServer`: an app holding only the ops routes, for services without an API;
- :func:`stop_on_signals`: SIGTERM/SIGINT set an event the main thread waits on (uvicorn's own
  handlers stay off: the service decides the order of shutdown);
- :class:`Backoff`: the one retry backoff (capped exponential, full jitter), defined in
  :mod:`kotacerdas.backoff` (no web imports there, so the MQTT wire client can use it) and re-exported.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Callable, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from kotacerdas.backoff import Backoff

__all__ = ["Backoff", "HealthServer", "HttpServer", "Ready", "ReadyChecks", "ops_router", "stop_on_signals"]

log = logging.getLogger("kotacerdas.runtime")

ReadyChecks = Callable[[], dict[str, bool]]


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]


def ops_router(registry: CollectorRegistry, ready: ReadyChecks | None = None) -> APIRouter:
    """The ops routes every service serves the same way (documented in its OpenAPI, 503 included)."""
    r = APIRouter(tags=["ops"])
    checks = ready or (lambda: {})

    @r.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @r.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "a dependency is down"}})
    def readyz(response: Response) -> Ready:
        c = checks()
        ok = all(c.values())
        response.status_code = 200 if ok else 503
        return Ready(status="ready" if ok else "not_ready", checks=c)

    @r.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return r


class HttpServer:
    """uvicorn serving ``app`` from a daemon thread."""

    def __init__(self, app: FastAPI, host: str, port: int, *, name: str = "http"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        # the service's main thread owns SIGTERM/SIGINT (see stop_on_signals)
        self.server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign,unused-ignore]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=name)

    def start(self, timeout_s: float = 15.0) -> HttpServer:
        """Start and wait until uvicorn accepts connections (raises RuntimeError if it did not)."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.02)
        if not self.server.started:
            raise RuntimeError(f"HTTP server on {self.host}:{self.port} did not start")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()


class HealthServer(HttpServer):
    """Only the ops routes, for services whose work is not HTTP (ingest, stream workers)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: ReadyChecks | None = None):
        app = FastAPI(title="Kota Cerdas service", docs_url=None, redoc_url=None, openapi_url=None)
        app.include_router(ops_router(registry, ready))
        super().__init__(app, host, port, name="health-http")


def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> threading.Event:
    """An event set by SIGTERM/SIGINT (call from the main thread)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping", extra={"signal": signum})
        stop.set()

    for s in signals:
        signal.signal(s, on_signal)
    return stop
