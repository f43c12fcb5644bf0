"""The public page and Swagger UI as a browser shows them: headless Chromium against the real API
(real InfluxDB), with no network but loopback. Screenshots go to $KC_SCREENSHOT_DIR when set
(docs/img/public-*.png were made that way)."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import time
from pathlib import Path

import pytest

from kotacerdas.runtime import HttpServer

from tests.dashboards import synthetic_day as synthetic
from dashboards.api import make_app
from tests.dashboards import chromium

pytestmark = pytest.mark.skipif(chromium.binary() is None, reason="chromium not installed (scripts/bootstrap.sh)")


@pytest.fixture
def site(settings, influx, tmp_path):
    end = int(time.time() * 1000) // 1000 * 1000
    devs = synthetic.write(influx, end, hours=3)
    (tmp_path / "devices.json").write_text(json.dumps(synthetic.device_list_json(devs)))
    settings.stations_file = tmp_path / "devices.json"
    settings.api.rate_limit_per_minute = 100000
    srv = HttpServer(make_app(settings), "127.0.0.1", 0, name="api-test").start()
    try:
        yield f"http://127.0.0.1:{srv.port}", devs
    finally:
        srv.stop()


def _png_size(p: Path) -> tuple[int, int]:
    head = p.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _check_map(html: str, air: list) -> None:
    """The offline map: stations at their coordinates on an equal-scale grid, one label per district,
    and a scale bar whose length agrees with the stations' distances on the page."""
    svg = html[html.index('<svg id="map"'):html.index("</svg>")]
    pos = {m["dev"]: (float(m["x"]), float(m["y"])) for m in re.finditer(
        r'<circle cx="(?P<x>[-\d.]+)" cy="(?P<y>[-\d.]+)" r="[\d.]+" data-device="(?P<dev>[^"]+)"', svg)}
    assert set(pos) == {d.device for d in air}, (sorted(pos), svg[:500])
    labels = re.findall(r'<text [^>]*class="district"[^>]*>([^<]+)</text>', svg)
    assert sorted(labels) == sorted({d.district for d in air}), labels
    # district labels (their rendered width, data-w) do not overlap each other
    boxes = [(float(m["x"]), float(m["y"]), float(m["w"])) for m in re.finditer(
        r'<text x="(?P<x>[-\d.]+)" y="(?P<y>[-\d.]+)" class="district" text-anchor="middle" data-w="(?P<w>[\d.]+)"', svg)]
    assert len(boxes) == len(labels), svg[:800]
    for i, (x1, y1, w1) in enumerate(boxes):
        for x2, y2, w2 in boxes[i + 1:]:
            assert abs(x1 - x2) * 2 >= w1 + w2 or abs(y1 - y2) >= 11, ((x1, y1, w1), (x2, y2, w2))
    bar = re.search(r'id="scalebar" data-km="(?P<km>[\d.]+)" data-px="(?P<px>[\d.]+)"', svg)
    assert bar, svg[-800:]
    assert re.search(rf'>{bar["km"]} km</text>', svg)
    px_per_km = float(bar["px"]) / float(bar["km"])
    a, b = air[0], air[-1]
    coslat = math.cos(math.radians((a.lat + b.lat) / 2))
    km = math.hypot((a.lon - b.lon) * coslat, a.lat - b.lat) * math.pi * 6371 / 180
    px = math.dist(pos[a.device], pos[b.device])
    assert px == pytest.approx(km * px_per_km, rel=0.02), (px, km, px_per_km)
    # north up, east right
    assert (pos[a.device][0] < pos[b.device][0]) == (a.lon < b.lon)
    assert (pos[a.device][1] > pos[b.device][1]) == (a.lat < b.lat)
    # the base map: Depok's outline (outlines.geojson) under the stations, with its attribution;
    # its Depok stations fall inside the outline's box on the page, the Bogor ones outside it
    m = re.search(r'<path d="(?P<d>M[^"]+Z)" class="outline" data-city="depok"', svg)
    assert m, svg[:1500]
    xy = [tuple(map(float, p.split(","))) for p in re.findall(r"[-\d.]+,[-\d.]+", m["d"])]
    assert len(xy) >= 10
    x0, x1 = min(x for x, _ in xy), max(x for x, _ in xy)
    y0, y1 = min(y for _, y in xy), max(y for _, y in xy)
    for d in air:
        x, y = pos[d.device]
        assert (x0 <= x <= x1 and y0 <= y <= y1) == (d.city == "depok"), (d.device, d.city, x, y, x0, x1, y0, y1)
    # the outline is at the map's own scale: Depok is ~20.7 km east-west (test_outlines)
    assert (x1 - x0) / px_per_km == pytest.approx(20.7, rel=0.03)
    assert svg.index('class="outline"') < svg.index("<circle")  # drawn under the stations
    assert "OpenStreetMap contributors (ODbL)" in svg


def _shots() -> Path | None:
    d = os.environ.get("KC_SCREENSHOT_DIR")
    return Path(d) if d else None


def test_public_page_renders_districts_in_both_languages(site, tmp_path):
    url, devs = site
    html = chromium.dom(url + "/?lang=id")
    assert 'data-ready="1"' in html, html[-2000:]
    assert "Udara (ISPU) per kecamatan" in html and "Air minum" in html
    for d in {d.district for d in devs if d.kind == "air"}:
        assert d in html
    assert any(c in html for c in ("Baik", "Sedang", "Tidak Sehat"))
    assert "Tingkat mutu udara" in html and "Rekomendasi:" in html  # the official category text
    _check_map(html, [d for d in devs if d.kind == "air"])
    en = chromium.dom(url + "/?lang=en")
    assert "Air (ISPU) by district" in en and "Drinking water" in en and "Waste bins due for collection" in en
    assert "http://" not in en.split("<body")[0].replace(url, "")  # no external resources in the head
    assert "not an official text" in en and "What to do:" in en  # English advice labelled as ours
    # counts agree in number: "1 station", never "1 stations" (Indonesian has one form)
    assert not re.search(r"\b1 stations\b", en), re.findall(r"\d+ stations?", en)
    # times in the city's zone, named; a district whose stations stopped shows its last value and when
    assert re.search(r'<time id="updated">[^<]+ WIB</time>', html) and "GMT+7</time>" in en
    assert "no data yet" not in en and re.search(r"last value: ISPU \d+ \(\w[\w ]*\), [^<]+GMT\+7", en)
    assert re.search(r"\b1 station\b", en) and re.search(r"\b1 stasiun\b", html), re.findall(r"\d+ station", en)
    out = _shots() or tmp_path
    for name, w, h, lang in (("public-phone", 412, 1400, "id"), ("public-desktop", 1280, 1100, "en")):
        p = chromium.screenshot(f"{url}/?lang={lang}", out / f"{name}.png", w, h)
        assert _png_size(p) == (w, h) and p.stat().st_size > 20_000


def test_swagger_ui_works_offline(site, tmp_path):
    url, _ = site
    html = chromium.dom(url + "/docs")
    assert "/static/swagger/swagger-ui-bundle.js" in html and "cdn.jsdelivr" not in html
    assert "opblock" in html, html[-1500:]  # Swagger UI's JS ran and rendered the operations
    assert "/v1/history/{kind}" in html
    out = _shots() or tmp_path
    p = chromium.screenshot(url + "/docs", out / "swagger-offline.png", 1280, 900)
    assert _png_size(p) == (1280, 900)
