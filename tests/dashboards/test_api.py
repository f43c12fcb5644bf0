"""The open-data API against the real InfluxDB (synthetic data in the platform's schemas)."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from fastapi.testclient import TestClient

from kotacerdas.standards import WATER_LIMITS
from kotacerdas.catalogue import load_catalogue

from tests.dashboards import synthetic_day as synthetic
from dashboards.api import make_app
from dashboards.ratelimit import RateLimiter


@pytest.fixture
def loaded(settings, influx):
    end = int(time.time() * 1000) // 1000 * 1000
    devs = synthetic.write(influx, end, hours=3)
    return settings, devs


@pytest.fixture
def client(loaded):
    settings, _ = loaded
    settings.api.rate_limit_per_minute = 100000
    with TestClient(make_app(settings)) as c:
        yield c


def test_latest_readings_per_station(client, loaded):
    _, devs = loaded
    r = client.get("/v1/air/latest")
    assert r.status_code == 200
    body = r.json()
    air = sorted(d.device for d in devs if d.kind == "air")
    assert [row["device"] for row in body["data"]] == air
    assert body["meta"]["total"] == len(air) and body["meta"]["license"] == "CC-BY-4.0"
    fields = load_catalogue()["air"].field_names
    for row in body["data"]:
        assert all(isinstance(row[f], (int, float)) and not isinstance(row[f], bool) for f in fields)
        assert row["city"] in ("depok", "bogor") and row["time"].endswith("Z")
        assert "rssi" not in row and "fw" not in row  # internal fields stay internal
    units = {c["name"]: c["unit"] for c in body["meta"]["columns"]}
    assert units["pm25"] == "ug/m3"


def test_ispu_compliance_and_bins(client, loaded):
    _, devs = loaded
    ispu = client.get("/v1/air/ispu", params={"limit": 1000}).json()["data"]
    n_air = sum(d.kind == "air" for d in devs)
    assert len(ispu) == n_air * 6  # five pollutants + the station's max
    assert {r["category"] for r in ispu} <= {"Baik", "Sedang", "Tidak Sehat", "Sangat Tidak Sehat", "Berbahaya"}
    comp = client.get("/v1/water/compliance", params={"limit": 1000}).json()["data"]
    # the regulated parameters the water kind measures (as analytics writes them), plus "all"
    n_param = len(set(WATER_LIMITS) & set(load_catalogue()["water"].field_names)) + 1
    assert len(comp) == sum(d.kind == "water" for d in devs) * n_param
    assert {r["compliant"] for r in comp} <= {0, 1}
    bins = client.get("/v1/waste/bins").json()["data"]
    assert len(bins) == sum(d.kind == "waste_bin" for d in devs)
    assert sorted(b["priority"] for b in bins) == list(range(1, len(bins) + 1))
    assert max(b["fill"] for b in bins) == pytest.approx(92.0, abs=1.0)


def test_stations_list_without_internal_fields(client, loaded):
    _, devs = loaded
    body = client.get("/v1/stations", params={"limit": 1000}).json()
    assert sorted(r["device"] for r in body["data"]) == sorted(d.device for d in devs)
    by = {r["device"]: r for r in body["data"]}
    d3 = next(d for d in devs if d.kind == "air" and d.device.endswith("003"))
    assert by[d3.device]["online"] == 0 and by[d3.device]["kind"] == "air"  # offline in the last hour
    assert all(r["last_seen"].endswith("Z") for r in body["data"])
    assert not any("battery" in r or "fw" in r for r in body["data"])


def test_csv_and_paging(client, loaded):
    full = client.get("/v1/datasets/water-compliance", params={"limit": 1000}).json()
    total = full["meta"]["total"]
    seen = []
    url = "/v1/datasets/water-compliance?limit=5"
    pages = 0
    while url:
        r = client.get(url)
        assert r.headers["X-Total-Count"] == str(total)
        body = r.json()
        seen += [(row["device"], row["parameter"]) for row in body["data"]]
        url = body["meta"]["next"]
        pages += 1
    assert pages == -(-total // 5)
    assert seen == [(row["device"], row["parameter"]) for row in full["data"]]
    assert len(set(seen)) == total
    r = client.get("/v1/datasets/water-compliance", params={"format": "csv", "limit": 3, "offset": 2})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and list(rows[0]) == [f'{c["name"]} [{c["unit"]}]' if c["unit"] else c["name"]
                                                for c in full["meta"]["columns"]]
    assert [(x["device"], x["parameter"]) for x in rows] == seen[2:5]
    assert 'rel="next"' in r.headers["Link"]


def test_filters_and_bad_input(client, loaded):
    _, devs = loaded
    r = client.get("/v1/air/latest", params={"city": "bogor"})
    assert {row["device"] for row in r.json()["data"]} == {d.device for d in devs if d.kind == "air" and d.city == "bogor"}
    assert client.get("/v1/air/latest", params={"city": "nowhere"}).json()["meta"]["total"] == 0
    for bad in ({"city": "x' OR 1=1"}, {"limit": 0}, {"limit": 100000}, {"offset": -1}, {"format": "xml"}):
        assert client.get("/v1/air/latest", params=bad).status_code == 422, bad
    assert client.get("/v1/datasets/nosuch").status_code == 422


def test_rate_limit_answers_429_with_retry_after(loaded):
    settings, _ = loaded
    settings.api.rate_limit_per_minute = 3
    with TestClient(make_app(settings)) as c:
        codes = [c.get("/v1/waste/bins").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = c.get("/v1/waste/bins")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert c.get("/healthz").status_code == 200  # ops endpoints are not limited
        metrics = c.get("/metrics").text
        assert "kc_api_rate_limited_total 3.0" in metrics
        assert 'kc_api_requests_total{route="/v1",status="200"} 3.0' in metrics


def test_cache_reuses_answers_within_the_ttl(loaded, influx):
    settings, devs = loaded
    settings.api.cache_ttl_s = 1.0
    with TestClient(make_app(settings)) as c:
        n = c.get("/v1/air/latest").json()["meta"]["total"]
        influx.write(['air,city=depok,device=air-new,district=beji,kind=air pm25=10.0,seq=0i ' + str(int(time.time() * 1000))])
        assert c.get("/v1/air/latest").json()["meta"]["total"] == n  # cached
        deadline = time.monotonic() + 5
        while c.get("/v1/air/latest").json()["meta"]["total"] == n:
            assert time.monotonic() < deadline, "cache never expired"
            time.sleep(0.2)
        assert "kc_api_cache_hits_total" in c.get("/metrics").text


def test_csv_neutralises_formulas_but_keeps_numbers():
    from dashboards.opendata import Column, to_csv

    cols = (Column("device", "string"), Column("value", "number"))
    out = to_csv(cols, [{"device": "=HYPERLINK(\"http://x\")", "value": -3.5}, {"device": "ok", "value": None}])
    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [["device", "value"], ["'=HYPERLINK(\"http://x\")", "-3.5"], ["ok", ""]]


def test_token_bucket_refills():
    now = [0.0]
    rl = RateLimiter(60, clock=lambda: now[0])
    assert all(rl.take("a") == 0.0 for _ in range(60))
    wait = rl.take("a")
    assert wait == pytest.approx(1.0)
    assert rl.take("b") == 0.0  # per client
    now[0] += 1.0
    assert rl.take("a") == 0.0


def test_store_down_is_a_clear_503(settings):
    settings.influx.url = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.influx.timeout_s = 1.0
    with TestClient(make_app(settings)) as c:
        r = c.get("/v1/air/latest")
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
        ready = c.get("/readyz")  # the shared ops router's answer (kotacerdas/runtime.py)
        assert ready.status_code == 503 and ready.json() == {"status": "not_ready", "checks": {"influx": False}}
        assert "kc_api_influx_errors_total 1.0" in c.get("/metrics").text


def test_openapi_conformance(client):
    """schemathesis generates requests from the OpenAPI document and checks status codes, content
    types and response bodies against it (and no 5xx), for every operation, on the real data store.

    Driven through hypothesis directly: schemathesis' pytest fixture integration
    (``schemathesis.pytest.from_fixture``) fails on this pytest version ('Function' has no '_nodeid').
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 10
    checked = []
    for op in ops:
        @given(case=op.as_strategy())
        @hsettings(max_examples=25, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case):
            case.call_and_validate()
        run()
        checked.append(op.label)
    assert "GET /v1/datasets/{dataset_id}" in checked


def test_cli_serves_and_stops_on_sigterm(loaded):
    settings, devs = loaded
    env = {**os.environ, "KC_INFLUX__DATABASE": settings.influx.database, "KC_API__PORT": "0",
           "KC_INFLUX__URL": settings.influx.url}
    p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "dashboards", "api"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on "), (line, p.stderr.read() if p.poll() is not None else "")
        url = line.split()[-1]
        r = httpx.get(url + "/v1/waste/bins", params={"format": "csv"}, timeout=10)
        assert r.status_code == 200 and len(r.text.strip().splitlines()) == 1 + sum(d.kind == "waste_bin" for d in devs)
        assert httpx.get(url + "/docs", timeout=10).status_code == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
