"""The shared service runtime: ops routes, full-jitter backoff, the error tree's dispositions."""

from __future__ import annotations

import random

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from kotacerdas.errors import ContractError, Disposition, TransportError, http_disposition
from kotacerdas.influx import InfluxError
from kotacerdas.runtime import Backoff, ops_router


def test_ops_routes_report_health_readiness_and_metrics() -> None:
    reg = CollectorRegistry()
    Counter("kc_test_things_total", "things", registry=reg).inc(3)
    checks = {"db": True, "mqtt": False}
    app = FastAPI()
    app.include_router(ops_router(reg, lambda: dict(checks)))
    c = TestClient(app)
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "not_ready", "checks": checks}
    checks["mqtt"] = True
    assert c.get("/readyz").status_code == 200
    assert "kc_test_things_total 3.0" in c.get("/metrics").text


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    b = Backoff(0.5, 5.0, rng=random.Random(1))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(b.ceiling_s)
        delays.append(b.delay())
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    b.reset()
    assert b.ceiling_s == 0.5
    # seeded: the same sequence again
    b2 = Backoff(0.5, 5.0, rng=random.Random(1))
    assert [b2.delay() for _ in range(8)] == delays


def test_one_place_decides_what_a_failure_means() -> None:
    assert http_disposition(0) is Disposition.RETRY
    assert http_disposition(503) is Disposition.RETRY and http_disposition(429) is Disposition.RETRY
    assert http_disposition(401) is Disposition.FATAL and http_disposition(403) is Disposition.FATAL
    assert http_disposition(422) is Disposition.DROP
    # InfluxDB: refused lines are dropped (dead-lettered), a missing database is set up again
    assert InfluxError(400, "partial write").disposition is Disposition.DROP
    assert InfluxError(413, "too large").disposition is Disposition.DROP
    assert InfluxError(404, "database not found").disposition is Disposition.RETRY
    assert InfluxError(401, "auth").disposition is Disposition.FATAL
    assert ContractError("bad").disposition is Disposition.DROP
    assert TransportError("down").disposition is Disposition.RETRY
    assert isinstance(InfluxError(0, "x"), RuntimeError)  # callers catching RuntimeError still do


def test_no_service_defines_its_own_ops_routes() -> None:
    # /healthz, /readyz and /metrics mean the same on every service (deploy probes, Prometheus):
    # they come from runtime.ops_router only
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    own = []
    for pkg in ("kotacerdas", "gateway", "ingest", "analytics", "dashboards", "simulators"):
        for p in sorted((repo / pkg).rglob("*.py")):
            if p == repo / "kotacerdas" / "runtime.py":
                continue
            for n in ast.walk(ast.parse(p.read_text(), str(p))):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("get", "api_route")
                        and n.args and isinstance(n.args[0], ast.Constant)
                        and n.args[0].value in ("/healthz", "/readyz", "/metrics")):
                    own.append(f"{p.relative_to(repo)}:{n.lineno} {n.args[0].value}")
    assert not own, own
