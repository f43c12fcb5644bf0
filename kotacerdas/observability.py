"""Structured logging for every service (the ops HTTP routes are in kotacerdas/runtime.py).

Each service gets its own :class:`prometheus_client.CollectorRegistry` so several
services (or tests) can live in one process without metric name clashes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg and any ``extra=`` keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                doc[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_lines: bool = True) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers[:] = [handler]
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def __getattr__(name: str) -> Any:
    # HealthServer moved to kotacerdas.runtime (one service runtime); imported lazily so that
    # logging setup does not pull in uvicorn and FastAPI
    if name == "HealthServer":
        from kotacerdas.runtime import HealthServer

        return HealthServer
    raise AttributeError(name)
