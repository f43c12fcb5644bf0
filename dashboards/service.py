"""``kotacerdas dashboards api``: serve the open-data API with uvicorn; stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import threading

from kotacerdas.observability import setup_logging
from kotacerdas.runtime import HttpServer, stop_on_signals
from kotacerdas.settings import Settings

log = logging.getLogger("dashboards.api")


def serve(settings: Settings, ready: threading.Event | None = None) -> int:
    from dashboards.api import make_app

    setup_logging(settings.log_level, settings.log_json)
    app = make_app(settings)
    stop = stop_on_signals()
    try:
        server = HttpServer(app, settings.api.host, settings.api.port, name="api-http").start()
    except (OSError, RuntimeError) as exc:
        log.error("open-data api could not start", extra={"error": str(exc)[:300]})
        app.state.client.close()
        return 1
    # the port line is what a supervisor (or a test with port 0) reads
    log.info("open-data api listening", extra={"host": settings.api.host, "port": server.port})
    print(f"listening on http://{settings.api.host}:{server.port}", flush=True)
    if ready:
        ready.set()
    stop.wait()
    server.stop()
    app.state.client.close()
    return 0
