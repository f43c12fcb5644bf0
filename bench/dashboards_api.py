"""Open-data API cost against a Depok-sized city: raw InfluxDB query vs the API (uncached, cached).

    .venv/bin/python bench/dashboards_api.py [--n 20]

Writes one hour of telemetry for 300 air stations, 120 water points and 3,000 bins (catalogue
intervals) plus ISPU / forecasts into a scratch database on the local stack, serves the API on a
loopback port (uvicorn, real HTTP), and times, per dataset:
  baseline  the dataset's InfluxQL through InfluxClient (what any API must at least pay),
  api       GET through HTTP with the cache off (query + shaping + JSON/CSV),
  cached    the same GET with the answer cache on (settings.api.cache_ttl_s).
Prints ms/request and the ratios. Drops the scratch database afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import httpx
import uvicorn

from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.standards import ISPU_BANDS, ISPU_POLLUTANTS, band_of
from kotacerdas.settings import load_settings
from devtools.stack import free_port

from dashboards.api import make_app
from dashboards.opendata import all_datasets
from simulators.scenario import load_scenario

# fleet sizes of the benchmarked city per kind: the Depok-sized scenario's device counts
SIZES = {spec.kind: spec.count for spec in load_scenario("depok").kinds}


def populate(c: InfluxClient, now_ms: int) -> int:
    cat = load_catalogue()
    lines: list[str] = []
    n = 0
    moderate = band_of(ISPU_BANDS, 80.0)
    for k in cat:
        raw = M.raw(k)
        for i in range(SIZES.get(k.name, 100)):
            tags = {"device": f"{k.name}-{i:05d}", "city": "depok", "district": f"d{i % 11}", "kind": k.name}
            for t in range(now_ms - 3600_000, now_ms, k.report_interval_s * 1000):
                fields: dict[str, object] = {f.name: f.typical for f in k.fields}
                fields.update(seq=n, battery=3.9, fw="1.2.0", rssi=-70, gw_lag_ms=120)
                lines.append(raw.line(tags, fields, t) or "")
                n += 1
            base = {"device": tags["device"], "city": "depok", "district": tags["district"]}
            if k.index:
                for pol in [*(p for p in ISPU_POLLUTANTS if k.has_field(p)), M.POLLUTANT_MAX]:
                    lines.append(M.ISPU.line({**base, "pollutant": pol}, {
                        "value": 80.0, "category": moderate.label, "category_level": moderate.level,
                        "concentration": 30.0}, now_ms - 60_000) or "")
            if k.limits:
                for p in [*k.field_names, M.PARAMETER_ALL]:
                    lines.append(M.WATER_COMPLIANCE.line({**base, "parameter": p}, {
                        "value": 1.0, "limit_lo": 0.0, "limit_hi": 2.0, "compliant": 1}, now_ms - 60_000) or "")
            if k.fill_level:
                lines.append(M.BIN_FORECAST.line(base, {"fill": 40.0, "fill_rate": 2.0, "hours_to_full": 30.0,
                                                        "full_by_tomorrow": 0, "priority": i + 1}, now_ms - 60_000) or "")
    for i in range(0, len(lines), 10000):
        c.write(lines[i:i + 10000])
    return len(lines)


def timed(fn, n: int) -> float:
    fn()  # warm up
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000


def serve(settings):
    port = free_port()
    settings.api.port = port
    server = uvicorn.Server(uvicorn.Config(make_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    settings = load_settings()
    settings.influx.database = f"bench_dash_{uuid.uuid4().hex[:6]}"
    settings.api.rate_limit_per_minute = 10**9
    c = InfluxClient(settings.influx)
    c.create_database()
    try:
        t0 = time.perf_counter()
        points = populate(c, int(time.time() * 1000))
        print(f"wrote {points} points in {time.perf_counter() - t0:.1f} s")
        datasets = all_datasets(load_catalogue())
        uncached = settings.model_copy(deep=True)
        uncached.api.cache_ttl_s = 0
        cached = settings.model_copy(deep=True)
        cached.api.cache_ttl_s = 60
        s1, u1 = serve(uncached)
        s2, u2 = serve(cached)
        http = httpx.Client(timeout=60)
        print(f"{'dataset':<18}{'rows':>6}{'baseline ms':>13}{'api ms':>9}{'api/base':>10}{'csv ms':>9}"
              f"{'cached ms':>11}{'api/cached':>12}")
        for ds_id in ("air-latest", "air-ispu", "water-compliance", "waste-bins"):
            ds = datasets[ds_id]
            rows = len(ds.fetch(c, {}))
            base = timed(lambda: ds.fetch(c, {}), args.n)
            api = timed(lambda: http.get(f"{u1}/v1/datasets/{ds_id}", params={"limit": 1000}).raise_for_status(), args.n)
            csv_ = timed(lambda: http.get(f"{u1}/v1/datasets/{ds_id}", params={"limit": 1000, "format": "csv"}).raise_for_status(), args.n)
            hot = timed(lambda: http.get(f"{u2}/v1/datasets/{ds_id}", params={"limit": 1000}).raise_for_status(), args.n * 5)
            print(f"{ds_id:<18}{rows:>6}{base:>13.1f}{api:>9.1f}{api / base:>10.2f}{csv_:>9.1f}{hot:>11.1f}{api / hot:>12.1f}")
        s1.should_exit = s2.should_exit = True
    finally:
        c.drop_database(settings.influx.database)
        c.close()


if __name__ == "__main__":
    main()
