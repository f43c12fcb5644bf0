"""``kotacerdas dashboards api``: serve the open-data API with uvicorn; stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading

from kotacerdas.observability import setup_logging
from kotacerdas.settings import Settings

log = logging.getLogger("dashboards.api")


def serve(settings: Settings, ready: threading.Event | None = None) -> int:
    import uvicorn

    from dashboards.api import make_app

    setup_logging(settings.log_level, settings.log_json)
    app = make_app(settings)
    config = uvicorn.Config(app, host=settings.api.host, port=settings.api.port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]  # ours, below

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping", extra={"signal": signum})
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=server.run, name="api-http", daemon=True)
    t.start()
    while not server.started and t.is_alive():
        t.join(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        # the port line is what a supervisor (or a test with port 0) reads
        log.info("open-data api listening", extra={"host": settings.api.host, "port": port})
        print(f"listening on http://{settings.api.host}:{port}", flush=True)
        if ready:
            ready.set()
    t.join()
    app.state.client.close()
    return 0 if server.started else 1
