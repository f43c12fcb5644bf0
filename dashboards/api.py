"""The open-data HTTP API (read-only, no authentication: only public data is served).

``make_app(settings)`` builds the FastAPI app; ``kotacerdas dashboards api`` serves it.
Every dataset: ``GET /v1/datasets/{id}?city=&district=&limit=&offset=&format=``, the format
chosen by ``format`` or else the ``Accept`` header: JSON (default), CSV (``text/csv``, unit
in every header), GeoJSON (``application/geo+json``, datasets with station coordinates) and
NGSI-LD FIWARE Smart Data Model entities (``application/ld+json``, latest readings).
Convenience routes name the common ones (``/v1/air/latest``, ``/v1/air/ispu``,
``/v1/water/compliance``, ``/v1/waste/bins``); ``/v1/history/{kind}`` serves a time range
at the resolutions the retention policies keep; ``/v1/catalog`` is the DCAT catalogue;
``/ngsi-ld/v1/entities?type=`` lists entities as an NGSI-LD broker would. Rate limit per
client address: ``settings.api.rate_limit_per_minute``, answered with 429 + ``Retry-After``.
"""

# no `from __future__ import annotations`: FastAPI must resolve the handlers' locally built types
import enum
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel

from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue
from kotacerdas.routing import influx_for_city
from kotacerdas.runtime import ops_router
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas.settings import Settings
from kotacerdas.standards import ISPU_REGULATION

from dashboards import dcat, history, ngsi, public
from dashboards.opendata import (LICENSE, NAME_RE, Column, Dataset, all_datasets, page, tag_conditions, to_csv,
                                 _iso)
from dashboards.ratelimit import RateLimiter
from dashboards.stations import StationIndex, to_geojson

log = logging.getLogger("dashboards.api")
MAX_LIMIT = 1000
INFLUX_MAX_MS = 9_214_646_400_000  # 2262-01-01: inside InfluxDB's int64-nanosecond time range


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
    license_url: str
    publisher: str
    update_frequency: str
    formats: list[str]
    columns: list[ColumnOut]
    url: str


class Meta(BaseModel):
    dataset: str
    title: str
    license: str
    license_url: str = dcat.LICENSE_URL
    publisher: str = ""
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


class HistoryMeta(BaseModel):
    kind: str
    resolution: str
    start: str
    end: str
    license: str
    license_url: str = dcat.LICENSE_URL
    total: int
    limit: int
    offset: int
    next: str | None
    columns: list[ColumnOut]


class HistoryPage(BaseModel):
    meta: HistoryMeta
    data: list[dict[str, Any]]


MEDIA = {"json": "application/json", "csv": "text/csv", "geojson": "application/geo+json",
         "ngsi-ld": ngsi.MEDIA_TYPE}
Format = Literal["json", "csv", "geojson", "ngsi-ld"]


def negotiate(fmt: str | None, accept: str | None, allowed: tuple[str, ...]) -> str:
    """The format to answer in: ``format`` if given, else the best ``Accept`` match, else JSON; 406 if none fits."""
    if fmt:
        if fmt not in allowed:  # that representation of the resource does not exist
            raise HTTPException(404, f"format {fmt} is not offered here; offered: {', '.join(allowed)}")
        return fmt
    if not accept:
        return "json"
    prefs = []
    for i, part in enumerate(accept.split(",")):
        bits = [b.strip() for b in part.split(";")]
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        prefs.append((-q, i, bits[0].lower()))
    for negq, _, mt in sorted(prefs):
        if negq == 0:
            continue
        if mt in ("*/*", "application/*", "application/json"):
            return "json"
        for f in allowed:
            if MEDIA[f] == mt or (mt == "text/*" and f == "csv"):
                return f
    raise HTTPException(406, "none of the accepted media types is offered; offered: "
                             + ", ".join(MEDIA[f] for f in allowed))


def make_app(settings: Settings) -> FastAPI:
    cat = load_catalogue()
    where = StationIndex(settings.stations_file)
    datasets = all_datasets(cat, where, settings.api.stale_after_intervals)
    client = InfluxClient(influx_for_city(settings))  # the city this API serves (kotacerdas/routing.py)
    api = settings.api
    retention = history.retention_ms(settings)
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
                    f"drinking-water compliance and waste-bin fill levels. Licence {LICENSE} ({dcat.LICENSE_URL}). "
                    "JSON, CSV, GeoJSON or NGSI-LD (`format=` or the `Accept` header), paged with `limit`/`offset`; "
                    "history at raw / 1-minute / 1-hour resolution; DCAT catalogue at `/v1/catalog`.",
        docs_url=None, redoc_url=None,  # served below from local assets: the API works offline
    )
    public.mount(app)

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

    def formats_of(ds: Dataset) -> tuple[str, ...]:
        cols = {c.name for c in ds.columns}
        return ("json", "csv", *(("geojson",) if {"lat", "lon"} <= cols else ()),
                *(("ngsi-ld",) if ds.kind else ()))

    def rows_of(ds: Dataset, filters: dict[str, str]) -> list[dict[str, Any]]:
        try:
            return fetch_cached(ds, filters)
        except InfluxError as exc:
            db_errors.inc()
            log.warning("influx query failed", extra={"dataset": ds.id, "error": str(exc)[:300]})
            raise HTTPException(503, "data store unavailable, try again later") from None

    def ispu_by_device(filters: dict[str, str]) -> dict[str, dict[str, Any]]:
        rows = rows_of(datasets["air-ispu"], filters)
        return {str(r["device"]): {"value": r["value"], "description": f"airQualityIndex: ISPU ({r.get('category')}), "
                                   f"{ISPU_REGULATION}"}
                for r in rows if r.get("pollutant") == M.POLLUTANT_MAX and r.get("value") is not None}

    def serve(ds: Dataset, request: Request, city: str | None, district: str | None, limit: int, offset: int,
              fmt: str | None) -> Response:
        out = negotiate(fmt, request.headers.get("accept"), formats_of(ds))
        filters = {k: v for k, v in (("city", city), ("district", district)) if v}
        rows = rows_of(ds, filters)
        total = len(rows)
        chunk = page(rows, ds.sort_key, limit, offset)
        nxt = None
        if offset + limit < total:
            nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
        headers = {"X-Total-Count": str(total), "Cache-Control": "public, max-age=30", "Vary": "Accept",
                   "Link": f'<{dcat.LICENSE_URL}>; rel="license"'}
        if nxt:
            headers["Link"] += f', <{nxt}>; rel="next"'
        if out == "csv":
            return PlainTextResponse(to_csv(ds.columns, chunk), media_type="text/csv; charset=utf-8",
                                     headers={**headers, "Content-Disposition": f'inline; filename="{ds.id}.csv"'})
        if out == "geojson":
            return JSONResponse(to_geojson(chunk, meta={"dataset": ds.id, "license": dcat.LICENSE_URL,
                                                        "total": total, "next": nxt}),
                                media_type="application/geo+json", headers=headers)
        if out == "ngsi-ld":
            kind = cat[ds.kind]  # type: ignore[index]
            idx = ispu_by_device(filters) if kind.index else None
            ents = ngsi.entities(kind, chunk, indices=idx, provider=api.publisher,
                                 key_values=request.query_params.get("options") == "keyValues")
            return JSONResponse(ents, media_type=ngsi.MEDIA_TYPE, headers=headers)
        cols = [ColumnOut(**c.__dict__) for c in ds.columns]
        body = Page(meta=Meta(dataset=ds.id, title=ds.title, license=LICENSE, publisher=api.publisher, total=total,
                              limit=limit, offset=offset, next=nxt,
                              generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              columns=cols), data=chunk)
        return JSONResponse(body.model_dump(), headers=headers)

    responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/csv": {"schema": {"type": "string"}},
                          "application/geo+json": {"schema": {"type": "object"}},
                          ngsi.MEDIA_TYPE: {"schema": {"type": "array", "items": {"type": "object"}}}},
              "description": "JSON page, CSV, GeoJSON FeatureCollection or NGSI-LD entities"},
        404: {"model": Problem, "description": "the format= asked for is not offered by this dataset"},
        406: {"model": Problem, "description": "no media type in Accept is offered by this dataset"},
        429: {"model": Problem, "description": "rate limited; see Retry-After",
              "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        503: {"model": Problem, "description": "the data store is unavailable"},
    }

    City = Query(None, pattern=NAME_RE, description="city tag, e.g. depok")
    District = Query(None, pattern=NAME_RE, description="district (kecamatan) tag, e.g. Pancoran Mas")
    Limit = Query(100, ge=1, le=MAX_LIMIT)
    Offset = Query(0, ge=0, le=1_000_000)
    Fmt = Query(None, alias="format", description="json, csv, geojson (datasets with coordinates) or ngsi-ld "
                                                  "(latest readings); without it the Accept header decides")

    def base_url(request: Request) -> str:
        return (api.public_url or str(request.base_url)).rstrip("/")

    def info(d: Dataset, request: Request) -> DatasetInfo:
        return DatasetInfo(id=d.id, title=d.title, description=d.description, license=LICENSE,
                           license_url=dcat.LICENSE_URL, publisher=api.publisher,
                           update_frequency=dcat.frequency_uri(d.update_s), formats=list(formats_of(d)),
                           columns=[ColumnOut(**c.__dict__) for c in d.columns],
                           url=f"{base_url(request)}/v1/datasets/{d.id}")

    @app.get("/v1/datasets", response_model=list[DatasetInfo], tags=["catalogue"])
    def list_datasets(request: Request) -> list[DatasetInfo]:
        return [info(d, request) for d in datasets.values()]

    @app.get("/v1/catalog", tags=["catalogue"], summary="DCAT catalogue (JSON-LD)",
             responses={200: {"content": {"application/ld+json": {"schema": {"type": "object"}}}}})
    def catalog(request: Request) -> Response:
        base = base_url(request)
        items = [dcat.dataset(identifier=d.id, title=d.title, description=d.description,
                              url=f"{base}/v1/datasets/{d.id}", update_s=d.update_s, publisher=api.publisher,
                              publisher_url=api.publisher_url, spatial=settings.city,
                              keywords=[d.id.split("-")[0], "open data", "Kota Cerdas"],
                              formats=[(MEDIA[f], f"{base}/v1/datasets/{d.id}?format={f}") for f in formats_of(d)])
                 for d in datasets.values()]
        body = dcat.catalog(title="Kota Cerdas open data", url=f"{base}/v1/catalog", publisher=api.publisher,
                            datasets=items)
        return JSONResponse(body, media_type="application/ld+json")

    @app.get("/v1/datasets/{dataset_id}", response_model=Page, responses=responses, tags=["data"], name="dataset")
    def dataset(request: Request, dataset_id: DatasetId = Path(...),  # type: ignore[valid-type]
                city: str | None = City, district: str | None = District, limit: int = Limit,
                offset: int = Offset, fmt: Format | None = Fmt) -> Response:
        return serve(datasets[dataset_id.value], request, city, district, limit, offset, fmt)

    def named(path: str, ds_id: str, summary: str) -> None:
        ds = datasets[ds_id]

        def handler(request: Request, city: str | None = City, district: str | None = District, limit: int = Limit,
                    offset: int = Offset, fmt: Format | None = Fmt) -> Response:
            return serve(ds, request, city, district, limit, offset, fmt)

        app.get(path, response_model=Page, responses=responses, tags=["data"], summary=summary,
                operation_id=ds_id.replace("-", "_"))(handler)

    named("/v1/stations", "stations", "Monitoring stations and whether they are reporting")
    named("/v1/air/latest", "air-latest", "Latest readings per air-quality station")
    named("/v1/air/ispu", "air-ispu", "ISPU per station and pollutant")
    named("/v1/water/latest", "water-latest", "Latest readings per water sampling point")
    named("/v1/water/compliance", "water-compliance", "Water compliance per sampling point")
    named("/v1/waste/bins", "waste-bins", "Waste bin fill levels and forecast")
    named("/v1/waste/latest", "waste_bin-latest", "Latest readings per waste bin")

    names = "|".join(sorted({f.name for k in cat for f in k.fields}))
    fields_re = rf"^({names})(,({names}))*$"
    KindName = enum.Enum("KindName", {k.name: k.name for k in cat}, type=str)  # type: ignore[misc]

    @app.get("/v1/history/{kind}", response_model=HistoryPage, responses=responses, tags=["data"],
             summary="Readings over a time range (raw, 1-minute or 1-hour resolution)")
    def history_route(request: Request, kind: KindName = Path(...),  # type: ignore[valid-type]
                      device: str | None = Query(None, pattern=NAME_RE), city: str | None = City,
                      district: str | None = District,
                      start: datetime | None = Query(None, description="ISO 8601; default end - 24 h"),
                      end: datetime | None = Query(None, description="ISO 8601; default now"),
                      resolution: Literal["auto", "raw", "1m", "1h"] = Query(
                          "auto", description="raw readings, 1-minute or 1-hour aggregates (mean, min, max, n); "
                                              "auto = finest kept for the range"),
                      fields: str | None = Query(None, pattern=fields_re,
                                                 description="comma-separated catalogue fields; default all"),
                      limit: int = Limit, offset: int = Offset, fmt: Literal["json", "csv"] | None = Fmt) -> Response:
        k = cat[kind.value]
        out = negotiate(fmt, request.headers.get("accept"), ("json", "csv"))
        now = datetime.now(timezone.utc)
        end_dt = _aware(end) if end else now
        start_dt = _aware(start) if start else end_dt - timedelta(hours=24)
        wanted = tuple(fields.split(",")) if fields else k.field_names
        unknown = [f for f in wanted if not k.has_field(f)]
        if unknown:  # 404: a field the kind does not have is a sub-resource that does not exist
            raise HTTPException(404, f"unknown field(s) for {k.name}: {', '.join(unknown)}")
        # InfluxDB stores int64 ns: 1677-09-21 .. 2262-04-11
        s_ms, e_ms = (min(max(int(t.timestamp() * 1000), -INFLUX_MAX_MS), INFLUX_MAX_MS) for t in (start_dt, end_dt))
        try:
            res = history.choose(resolution, s_ms, e_ms, int(now.timestamp() * 1000), retention)
        except history.HistoryError as exc:  # not kept at that resolution for that range
            raise HTTPException(404, str(exc)) from None
        filters = {k_: v for k_, v in (("device", device), ("city", city), ("district", district)) if v}
        hq = history.build(k, res, wanted, tag_conditions(filters), s_ms, e_ms, limit, offset,
                           raw_aggregate=history.from_raw(res, s_ms, int(now.timestamp() * 1000), retention))
        try:
            series = client.series(hq.select)
            counted = client.series(hq.count)
        except InfluxError as exc:
            if "retention policy not found" in str(exc):  # ingest has not created the aggregates (yet): no data
                series, counted = [], []
            else:
                db_errors.inc()
                log.warning("influx history query failed", extra={"error": str(exc)[:300]})
                raise HTTPException(503, "data store unavailable, try again later") from None
        rows = []
        for s_ in series:
            for v in s_.values:
                rec = dict(zip(s_.columns, v))
                rows.append({"device": rec.get("device"), "city": rec.get("city"), "district": rec.get("district"),
                             "time": _iso(rec.get("time")), **{c: rec.get(c) for c in hq.value_columns}})
        total = int(counted[0].values[0][1]) if counted and counted[0].values else 0
        unit = {f.name: f.unit for f in k.fields}
        cols = [Column("device", "string"), Column("city", "string"), Column("district", "string"),
                Column("time", "datetime", description="UTC; for aggregates the start of the interval"),
                *(Column(c, "integer" if c == "n" else "number",
                         None if c == "n" else unit[c.removesuffix("_min").removesuffix("_max")],
                         "readings in the interval" if c == "n" else "") for c in hq.value_columns)]
        nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit,
                                                   start=start_dt.isoformat(), end=end_dt.isoformat(),
                                                   resolution=res)) if offset + limit < total else None
        headers = {"X-Total-Count": str(total), "X-Resolution": res, "Vary": "Accept",
                   "Link": f'<{dcat.LICENSE_URL}>; rel="license"' + (f', <{nxt}>; rel="next"' if nxt else "")}
        if out == "csv":
            return PlainTextResponse(to_csv(cols, rows), media_type="text/csv; charset=utf-8", headers={
                **headers, "Content-Disposition": f'inline; filename="{k.name}-history-{res}.csv"'})
        meta = HistoryMeta(kind=k.name, resolution=res, start=start_dt.isoformat(), end=end_dt.isoformat(),
                           license=LICENSE, total=total, limit=limit, offset=offset, next=nxt,
                           columns=[ColumnOut(**c.__dict__) for c in cols])
        return JSONResponse(HistoryPage(meta=meta, data=rows).model_dump(), headers=headers)

    FiwareType = enum.Enum("FiwareType", {k.fiware_type: k.fiware_type for k in cat}, type=str)  # type: ignore[misc]
    by_type = {k.fiware_type: k for k in cat}

    @app.get("/ngsi-ld/v1/entities", tags=["data"], summary="FIWARE Smart Data Model entities (NGSI-LD)",
             responses={200: {"content": {ngsi.MEDIA_TYPE: {"schema": {"type": "array", "items": {"type": "object"}}}}},
                        503: {"model": Problem}})
    def ngsi_entities(request: Request, type: FiwareType = Query(...),  # type: ignore[valid-type]  # noqa: A002
                      options: Literal["normalized", "keyValues"] = Query("normalized"),
                      city: str | None = City, district: str | None = District, limit: int = Limit,
                      offset: int = Offset) -> Response:
        k = by_type[type.value]
        ds = datasets[f"{k.name}-latest"]
        filters = {k_: v for k_, v in (("city", city), ("district", district)) if v}
        rows = rows_of(ds, filters)
        chunk = page(rows, ds.sort_key, limit, offset)
        idx = ispu_by_device(filters) if k.index else None
        body = ngsi.entities(k, chunk, indices=idx, provider=api.publisher, key_values=options == "keyValues")
        return JSONResponse(body, media_type=ngsi.MEDIA_TYPE, headers={"NGSILD-Results-Count": str(len(rows))})

    # the same ops routes as every service; ready when the city's InfluxDB answers
    app.include_router(ops_router(registry, lambda: {"influx": client.ping()}))

    app.state.client = client
    app.state.limiter = limiter
    return app


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
