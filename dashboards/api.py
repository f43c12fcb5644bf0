"""The open-data HTTP API (read-only, no authentication: only public data is served).

``make_app(settings)`` builds the FastAPI app; ``kotacerdas dashboards api`` serves it.
Every dataset: ``GET /v1/datasets/{id}?city=&district=&limit=&offset=&format=json|csv``.
Convenience routes name the common ones (``/v1/air/latest``, ``/v1/air/ispu``,
``/v1/water/compliance``, ``/v1/waste/bins``). Rate limit per client address:
``settings.api.rate_limit_per_minute``, answered with 429 + ``Retry-After``.
"""

# no `from __future__ import annotations`: FastAPI must resolve the handlers' locally built types
import enum
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from kotacerdas.catalogue import load_catalogue
from kotacerdas.routing import influx_for_city
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.settings import Settings

from dashboards.opendata import LICENSE, NAME_RE, Dataset, all_datasets, page, to_csv
from dashboards.ratelimit import RateLimiter

log = logging.getLogger("dashboards.api")
MAX_LIMIT = 1000


class ColumnOut(BaseModel):
    name: str
    type: str
    unit: str | None = None
    description: str = ""


class DatasetInfo(BaseModel):
    id: str
    title: str
    description: str
    license: str
    columns: list[ColumnOut]
    url: str


class Meta(BaseModel):
    dataset: str
    title: str
    license: str
    total: int
    limit: int
    offset: int
    next: str | None
    generated_at: str
    columns: list[ColumnOut]


class Page(BaseModel):
    meta: Meta
    data: list[dict[str, Any]]


class Problem(BaseModel):
    detail: str


def make_app(settings: Settings) -> FastAPI:
    cat = load_catalogue()
    datasets = all_datasets(cat)
    client = InfluxClient(influx_for_city(settings))  # the city this API serves (kotacerdas/routing.py)
    DatasetId = enum.Enum("DatasetId", {d.replace("-", "_"): d for d in datasets}, type=str)  # type: ignore[misc]
    limiter = RateLimiter(settings.api.rate_limit_per_minute)
    registry = CollectorRegistry()
    requests = Counter("kc_api_requests_total", "HTTP requests", ["route", "status"], registry=registry)
    limited = Counter("kc_api_rate_limited_total", "requests refused with 429", registry=registry)
    db_errors = Counter("kc_api_influx_errors_total", "InfluxDB queries that failed", registry=registry)
    cache_hits = Counter("kc_api_cache_hits_total", "dataset answers served from the cache", registry=registry)
    latency = Histogram("kc_api_request_seconds", "request latency", ["route"], registry=registry)

    app = FastAPI(
        title="Kota Cerdas open data",
        version="1",
        description="Public environmental data of the city: latest sensor readings, ISPU air quality index, "
                    f"drinking-water compliance and waste-bin fill levels. Licence {LICENSE}. "
                    "JSON or CSV (`format=csv`), paged with `limit`/`offset`.",
    )

    @app.middleware("http")
    async def rate_limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        route = request.url.path
        if route.startswith("/v1/"):
            key = request.client.host if request.client else "unknown"
            wait = limiter.take(key)
            if wait > 0:
                limited.inc()
                requests.labels("/v1", "429").inc()
                return JSONResponse({"detail": "rate limit exceeded"}, status_code=429,
                                    headers={"Retry-After": str(RateLimiter.retry_after(wait))})
        with latency.labels("/v1" if route.startswith("/v1/") else route).time():
            resp = await call_next(request)
        requests.labels("/v1" if route.startswith("/v1/") else route, str(resp.status_code)).inc()
        return resp

    ttl = settings.api.cache_ttl_s
    cache: dict[tuple, tuple[float, list[dict[str, Any]]]] = {}
    cache_lock = threading.Lock()

    def fetch_cached(ds: Dataset, filters: dict[str, str]) -> list[dict[str, Any]]:
        # public data changes once per report interval; a short TTL turns a crowd of clients
        # (or a scraper walking pages) into one InfluxDB query per dataset and filter
        key = (ds.id, tuple(sorted(filters.items())))
        now = time.monotonic()
        if ttl > 0:
            with cache_lock:
                hit = cache.get(key)
            if hit and hit[0] > now:
                cache_hits.inc()
                return hit[1]
        rows = ds.fetch(client, filters)
        if ttl > 0:
            with cache_lock:
                if len(cache) > 1000:  # bounded: filters come from clients
                    cache.clear()
                cache[key] = (now + ttl, rows)
        return rows

    def serve(ds: Dataset, request: Request, city: str | None, district: str | None, limit: int, offset: int,
              fmt: str) -> Response:
        filters = {k: v for k, v in (("city", city), ("district", district)) if v}
        try:
            rows = fetch_cached(ds, filters)
        except InfluxError as exc:
            db_errors.inc()
            log.warning("influx query failed", extra={"dataset": ds.id, "error": str(exc)[:300]})
            raise HTTPException(503, "data store unavailable, try again later") from None
        total = len(rows)
        chunk = page(rows, ds.sort_key, limit, offset)
        nxt = None
        if offset + limit < total:
            nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
        headers = {"X-Total-Count": str(total), "Cache-Control": "public, max-age=30"}
        if nxt:
            headers["Link"] = f'<{nxt}>; rel="next"'
        if fmt == "csv":
            return PlainTextResponse(to_csv(ds.columns, chunk), media_type="text/csv; charset=utf-8",
                                     headers={**headers, "Content-Disposition": f'inline; filename="{ds.id}.csv"'})
        cols = [ColumnOut(**c.__dict__) for c in ds.columns]
        body = Page(meta=Meta(dataset=ds.id, title=ds.title, license=LICENSE, total=total, limit=limit, offset=offset,
                              next=nxt, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              columns=cols), data=chunk)
        return JSONResponse(body.model_dump(), headers=headers)

    responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON page or CSV"},
        429: {"model": Problem, "description": "rate limited; see Retry-After",
              "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        503: {"model": Problem, "description": "the data store is unavailable"},
    }

    City = Query(None, pattern=NAME_RE, description="city tag, e.g. depok")
    District = Query(None, pattern=NAME_RE, description="district (kecamatan) tag")
    Limit = Query(100, ge=1, le=MAX_LIMIT)
    Offset = Query(0, ge=0, le=1_000_000)
    Fmt = Query("json", alias="format")

    @app.get("/v1/datasets", response_model=list[DatasetInfo], tags=["catalogue"])
    def list_datasets(request: Request) -> list[DatasetInfo]:
        return [DatasetInfo(id=d.id, title=d.title, description=d.description, license=LICENSE,
                            columns=[ColumnOut(**c.__dict__) for c in d.columns],
                            url=str(request.url_for("dataset", dataset_id=d.id))) for d in datasets.values()]

    @app.get("/v1/datasets/{dataset_id}", response_model=Page, responses=responses, tags=["data"], name="dataset")
    def dataset(request: Request, dataset_id: DatasetId = Path(...),  # type: ignore[valid-type]
                city: str | None = City, district: str | None = District, limit: int = Limit,
                offset: int = Offset, fmt: Literal["json", "csv"] = Fmt) -> Response:
        return serve(datasets[dataset_id.value], request, city, district, limit, offset, fmt)

    def named(path: str, ds_id: str, summary: str) -> None:
        ds = datasets[ds_id]

        def handler(request: Request, city: str | None = City, district: str | None = District, limit: int = Limit,
                    offset: int = Offset, fmt: Literal["json", "csv"] = Fmt) -> Response:
            return serve(ds, request, city, district, limit, offset, fmt)

        app.get(path, response_model=Page, responses=responses, tags=["data"], summary=summary,
                operation_id=ds_id.replace("-", "_"))(handler)

    named("/v1/stations", "stations", "Monitoring stations and whether they are reporting")
    named("/v1/air/latest", "air-latest", "Latest readings per air-quality station")
    named("/v1/air/ispu", "air-ispu", "ISPU per station and pollutant")
    named("/v1/water/latest", "water-latest", "Latest readings per water sampling point")
    named("/v1/water/compliance", "water-compliance", "Water compliance per sampling point")
    named("/v1/waste/bins", "waste-bins", "Waste bin fill levels and forecast")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": Problem}})
    def readyz() -> Response:
        ok = client.ping()
        return JSONResponse({"influx": ok}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.client = client
    app.state.limiter = limiter
    return app
