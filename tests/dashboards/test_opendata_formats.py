"""Open data as a user fetches it: history, GeoJSON, NGSI-LD, CSV units, DCAT, Accept, districts with
spaces, stale stations. Against the real InfluxDB (own database per test)."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from fastapi.testclient import TestClient

from kotacerdas.catalogue import load_catalogue
from kotacerdas.lineprotocol import format_line

from tests.dashboards import synthetic_day as synthetic
from dashboards.api import make_app
from dashboards.history import HistoryError, choose, duration_ms


@pytest.fixture
def loaded(settings, influx, tmp_path):
    end = int(time.time() * 1000) // 1000 * 1000
    devs = synthetic.write(influx, end, hours=3)
    stations = tmp_path / "devices.json"
    stations.write_text(json.dumps(synthetic.device_list_json(devs)))
    settings.stations_file = stations
    settings.api.rate_limit_per_minute = 100000
    settings.api.cache_ttl_s = 0
    return settings, devs, end


@pytest.fixture
def client(loaded):
    with TestClient(make_app(loaded[0])) as c:
        yield c


def test_stations_geojson_by_format_and_by_accept(client, loaded):
    _, devs, _ = loaded
    by_format = client.get("/v1/stations", params={"format": "geojson", "limit": 1000})
    by_accept = client.get("/v1/stations", params={"limit": 1000}, headers={"Accept": "application/geo+json"})
    for r in (by_format, by_accept):
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
        fc = r.json()
        assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(devs)
    pos = {d.device: (d.lon, d.lat) for d in devs}
    for f in by_format.json()["features"]:
        assert tuple(f["geometry"]["coordinates"]) == pos[f["id"]]  # RFC 7946: [lon, lat]
    # JSON rows carry the coordinates too
    rows = client.get("/v1/air/latest").json()["data"]
    assert all(r["lat"] is not None and r["lon"] is not None for r in rows)


def test_accept_header_picks_csv_and_refuses_what_is_not_offered(client):
    r = client.get("/v1/waste/bins", headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert client.get("/v1/waste/bins", headers={"Accept": "application/xml"}).status_code == 406
    # q-values: the client prefers CSV over JSON
    r = client.get("/v1/air/latest", headers={"Accept": "application/json;q=0.5, text/csv"})
    assert r.headers["content-type"].startswith("text/csv")
    # ISPU rows have no coordinates column: no GeoJSON there
    assert client.get("/v1/air/ispu", params={"format": "geojson"}).status_code == 404
    assert client.get("/v1/air/ispu", headers={"Accept": "application/geo+json"}).status_code == 406
    assert client.get("/v1/air/ispu", headers={"Accept": "*/*"}).headers["content-type"] == "application/json"


def test_csv_headers_carry_units(client):
    r = client.get("/v1/air/latest", params={"format": "csv"})
    header = next(csv.reader(io.StringIO(r.text)))
    assert "pm25 [ug/m3]" in header and "humidity [%]" in header and "device" in header


def test_ngsi_ld_entities_use_the_models_names_and_units(client, loaded):
    _, devs, _ = loaded
    cat = load_catalogue()
    air = client.get("/ngsi-ld/v1/entities", params={"type": "AirQualityObserved"})
    assert air.status_code == 200 and air.headers["content-type"].startswith("application/ld+json")
    ents = air.json()
    assert len(ents) == sum(d.kind == "air" for d in devs)
    latest = {r["device"]: r for r in client.get("/v1/air/latest").json()["data"]}
    ispu = {r["device"]: r["value"] for r in client.get("/v1/air/ispu", params={"limit": 1000}).json()["data"]
            if r["pollutant"] == "max"}
    for e in ents:
        dev = e["id"].rsplit(":", 1)[-1]
        assert e["type"] == "AirQualityObserved" and e["id"].startswith("urn:ngsi-ld:AirQualityObserved:")
        assert "aqi" not in e and "humidity" not in e
        assert e["relativeHumidity"]["value"] == pytest.approx(latest[dev]["humidity"] / 100)
        assert 0 <= e["relativeHumidity"]["value"] <= 1
        assert e["pm25"]["unitCode"] == "GQ" and e["pm25"]["value"] == pytest.approx(latest[dev]["pm25"])
        assert e["airQualityIndex"]["value"] == int(ispu[dev])
        assert e["location"]["type"] == "GeoProperty"
        assert e["dateObserved"]["value"]["@value"] == latest[dev]["time"]
        assert e["@context"][-1].endswith("ngsi-ld-core-context.jsonld")
    allowed_air = {f.fiware for f in cat["air"].fields} | {
        "id", "type", "dateObserved", "location", "address", "areaServed", "refDevice", "dataProvider",
        "airQualityIndex", "description", "@context"}
    assert set().union(*(e.keys() for e in ents)) <= allowed_air

    bins = client.get("/ngsi-ld/v1/entities", params={"type": "WasteContainer", "options": "keyValues"}).json()
    fills = {r["device"]: r["fill"] for r in client.get("/v1/waste/latest").json()["data"]}
    for e in bins:
        assert 0 <= e["fillingLevel"] <= 1
        assert e["fillingLevel"] == pytest.approx(fills[e["id"].rsplit(":", 1)[-1]] / 100)
        assert "distance" not in e and e["status"] in ("ok", "dropped")
        assert isinstance(e["refDevice"], list)

    water = client.get("/v1/water/latest", headers={"Accept": "application/ld+json"}).json()
    for e in water:
        assert "freeChlorine" not in e and "chlorine" not in e
        (m,) = [x for x in e["measurand"]["value"] if x.startswith("Cl2,")]
        assert m.split(", ")[2] == "M1"
        assert e["O2"]["unitCode"] == "M1" and "dissolved_oxygen" not in e
        assert e["conductivity"]["unitCode"] == "D10" and e["conductivity"]["value"] < 1  # S/m, not uS/cm


def test_dcat_catalogue_and_dataset_metadata(client):
    cat = client.get("/v1/catalog")
    assert cat.status_code == 200 and cat.headers["content-type"].startswith("application/ld+json")
    body = cat.json()
    assert body["@type"] == "dcat:Catalog" and body["dct:license"]["@id"].startswith("https://creativecommons.org/")
    ds = {d["dct:identifier"]: d for d in body["dcat:dataset"]}
    air = ds["air-latest"]
    assert air["dct:publisher"]["foaf:name"]
    assert air["dct:accrualPeriodicity"]["@id"].endswith("UPDATE_CONT")
    assert ds["waste_bin-latest"]["dct:accrualPeriodicity"]["@id"].endswith("HOURLY")  # bins report every 15 min
    assert {d["dcat:mediaType"] for d in air["dcat:distribution"]} == {
        "application/json", "text/csv", "application/geo+json", "application/ld+json"}
    info = {d["id"]: d for d in client.get("/v1/datasets").json()}
    assert info["stations"]["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert "geojson" in info["stations"]["formats"]


def test_district_names_with_spaces(client, influx):
    now = int(time.time() * 1000)
    influx.write([format_line("air", {"device": "air-pm1", "city": "depok", "district": "Pancoran Mas", "kind": "air"},
                              {"pm25": 42.0, "seq": 1}, now)])
    r = client.get("/v1/air/latest", params={"district": "Pancoran Mas"})
    assert r.status_code == 200
    assert [row["device"] for row in r.json()["data"]] == ["air-pm1"]
    assert client.get("/v1/air/latest", params={"district": "Pancoran' OR '1'='1"}).status_code == 422


def test_stale_station_is_not_shown_online(client, influx):
    now = int(time.time() * 1000)
    # the gateway's last word was "online", but the station has not sent anything for 20 minutes
    influx.write([format_line("device_status", {"device": "air-quiet", "city": "depok", "district": "beji",
                                                "kind": "air"},
                              {"state": "online", "online": 1, "stale": 0, "last_seen_ms": now - 1200_000}, now),
                  format_line("device_status", {"device": "air-fresh", "city": "depok", "district": "beji",
                                                "kind": "air"},
                              {"state": "online", "online": 1, "stale": 0, "last_seen_ms": now - 20_000}, now)])
    rows = {r["device"]: r for r in client.get("/v1/stations", params={"limit": 1000}).json()["data"]}
    assert rows["air-quiet"]["online"] == 0
    assert rows["air-fresh"]["online"] == 1


def test_history_raw_paging(client, loaded):
    _, devs, end = loaded
    dev = next(d.device for d in devs if d.kind == "air")
    start = end - 3600_000
    params = {"device": dev, "start": _iso(start), "end": _iso(end + 1), "resolution": "raw", "limit": 5,
              "fields": "pm25,humidity"}
    first = client.get("/v1/history/air", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["meta"]["resolution"] == "raw" and first.headers["X-Resolution"] == "raw"
    total = body["meta"]["total"]
    assert total > 5
    seen = [r["time"] for r in body["data"]]
    url = body["meta"]["next"]
    while url:
        b = client.get(url).json()
        seen += [r["time"] for r in b["data"]]
        url = b["meta"]["next"]
    assert len(seen) == total == len(set(seen)) and seen == sorted(seen)
    assert set(body["data"][0]) == {"device", "city", "district", "time", "pm25", "humidity"}
    units = {c["name"]: c["unit"] for c in body["meta"]["columns"]}
    assert units["pm25"] == "ug/m3"
    csv_text = client.get("/v1/history/air", params={**params, "format": "csv"}).text
    assert csv_text.splitlines()[0] == "device,city,district,time,pm25 [ug/m3],humidity [%]"


def test_history_reads_the_aggregate_policies(client, settings, influx, loaded):
    db = settings.influx.database
    for rp in ("agg_1m", "agg_1h"):  # as ingest/schema.py creates them
        influx.query(f'CREATE RETENTION POLICY "{rp}" ON "{db}" DURATION INF REPLICATION 1', database=db)
    now = int(time.time() * 1000) // 3600_000 * 3600_000
    t0 = now - 400 * 86_400_000  # older than the raw policy keeps (30 d), within the 1-minute one (730 d)
    lines = [format_line("air", {"device": "air-old", "city": "depok", "district": "beji", "kind": "air"},
                         {"pm25": 30.0 + h, "pm25_min": 20.0, "pm25_max": 50.0, "n": 60}, t0 + h * 3600_000)
             for h in range(5)]
    influx.write(lines, retention_policy="agg_1h")
    r = client.get("/v1/history/air", params={"start": _iso(t0), "end": _iso(t0 + 5 * 3600_000),
                                              "resolution": "1h", "fields": "pm25"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [row["pm25"] for row in data] == [30.0, 31.0, 32.0, 33.0, 34.0]
    assert data[0]["n"] == 60 and data[0]["pm25_max"] == 50.0
    # raw readings are not kept that long: a clear refusal naming what is kept
    r = client.get("/v1/history/air", params={"start": _iso(t0), "end": _iso(t0 + 3600_000), "resolution": "raw"})
    assert r.status_code == 404 and "1m or 1h" in r.json()["detail"]
    # auto picks the finest policy reaching back that far
    r = client.get("/v1/history/air", params={"start": _iso(t0), "end": _iso(t0 + 3600_000)})
    assert r.status_code == 200 and r.headers["X-Resolution"] == "1m" and r.json()["data"] == []


def test_late_readings_reach_the_1m_and_1h_history(client, influx):
    """Readings that arrive hours after their time (store-and-forward after an outage) are never
    aggregated by a continuous query; while their raw copy is kept, 1m and 1h rows are computed from
    it at request time: mean/min/max/n of exactly those readings, whole intervals, paged in time order
    across devices."""
    hour = 3600_000
    t0 = (int(time.time() * 1000) // hour - 6) * hour  # six hours ago, on the hour
    vals = {"late-1": [10.0, 20.0, 30.0, 40.0], "late-2": [1.0, 2.0, 3.0, 5.0]}
    lines = [format_line("air", {"device": dev, "city": "depok", "district": "Pancoran Mas", "kind": "air"},
                         {"pm25": v, "seq": i}, t0 + h * hour + i * 15 * 60_000)
             for dev, vs in vals.items() for h in range(2) for i, v in enumerate(vs)]
    influx.write(lines)  # the default (raw) policy only: no aggregate exists for them
    params = {"start": _iso(t0 + 5 * 60_000), "end": _iso(t0 + 2 * hour), "resolution": "1h", "fields": "pm25",
              "district": "Pancoran Mas"}
    body = client.get("/v1/history/air", params=params).json()
    assert body["meta"]["resolution"] == "1h" and body["meta"]["total"] == 4, body["meta"]
    rows = body["data"]
    # the first interval is whole although start is 5 minutes into it; rows ordered by time
    assert [(r["time"], r["device"]) for r in rows] == [
        (_iso(t0).replace(".000", ""), "late-1"), (_iso(t0).replace(".000", ""), "late-2"),
        (_iso(t0 + hour).replace(".000", ""), "late-1"), (_iso(t0 + hour).replace(".000", ""), "late-2")]
    assert (rows[0]["pm25"], rows[0]["pm25_min"], rows[0]["pm25_max"], rows[0]["n"]) == (25.0, 10.0, 40.0, 4)
    assert (rows[1]["pm25"], rows[1]["n"]) == (2.75, 4) and rows[1]["district"] == "Pancoran Mas"
    page2 = client.get("/v1/history/air", params={**params, "limit": 3, "offset": 3}).json()
    assert [r["device"] for r in page2["data"]] == ["late-2"] and page2["meta"]["next"] is None
    minutes = client.get("/v1/history/air", params={**params, "resolution": "1m", "limit": 100}).json()
    # per minute, start's own minute (t0 + 5 min) is the first: the two readings at t0 fall before it
    assert minutes["meta"]["total"] == 14 and {r["n"] for r in minutes["data"]} == {1}


def test_resolution_policy():
    ret = {"raw": duration_ms("30d"), "1m": duration_ms("730d"), "1h": duration_ms("INF")}
    now = 1_000 * 86_400_000
    day = 86_400_000
    assert choose("auto", now - day, now, now, ret) == "raw"
    assert choose("auto", now - 10 * day, now, now, ret) == "1m"  # within raw's reach but a long span
    assert choose("auto", now - 50 * day, now, now, ret) == "1m"
    assert choose("auto", now - 100 * day, now, now, ret) == "1h"  # a page of minutes would cover little of it
    assert choose("auto", now - 800 * day, now, now, ret) == "1h"
    with pytest.raises(HistoryError):
        choose("raw", now - 40 * day, now, now, ret)
    assert duration_ms("1h30m") == 5_400_000
    with pytest.raises(ValueError):
        duration_ms("30 days")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
