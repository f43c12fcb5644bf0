"""PNG previews: the renderer's pure helpers, and a render from a fixture day in InfluxDB.

The render from a real pipeline run (simulators -> gateway -> ingest -> analytics) is in
tests/dashboards/test_real_pipeline.py, on the same run that checks every panel query.
"""

from __future__ import annotations

import time

import matplotlib.image as mpimg
import numpy as np
import pytest

from dashboards.cli import main as cli_main
from dashboards.previews import _fit, render_all, scaled, title_text, unit_label
from tests.dashboards import synthetic_day as synthetic


def test_units_are_printed_not_grafana_ids() -> None:
    assert unit_label("conμgm3") == "µg/m³"
    assert unit_label("celsius") == "°C"
    assert unit_label("suffix: mg/L") == "mg/L"
    assert unit_label("short") == ""
    assert title_text("pm25 (ug/m3)") == "pm25 (µg/m³)"
    assert title_text("temperature (Cel)") == "temperature (°C)"
    assert title_text("tilt (1)") == "tilt"
    assert title_text("Bins due now (fill >= 90 %)") == "Bins due now (fill >= 90 %)"


@pytest.mark.parametrize(("unit", "top", "want"), [
    ("ms", 86_400_000.0, (3_600_000.0, "h")), ("ms", 250.0, (1.0, "ms")), ("ms", 5000.0, (1000.0, "s")),
    ("bytes", 3 * 2.0**20, (2.0**20, "MiB")), ("%", 1e9, (1.0, "%")),
])
def test_large_times_switch_unit_instead_of_an_offset(unit, top, want) -> None:
    assert scaled(unit, np.array([0.0, top, np.nan])) == want


def test_table_cells_are_truncated_to_fit() -> None:
    cells = _fit([["device", "text"], ["day-air-00001", "x" * 80]], budget=30)
    assert sum(max(len(r[c]) for r in cells) for c in range(2)) <= 30
    assert cells[1][0] == "day-air-00001" and cells[1][1].endswith("…")


def test_previews_render_panels_with_data(settings, influx, tmp_path):
    end = int(time.time() * 1000) // 60_000 * 60_000
    devs = synthetic.write(influx, end, hours=6)
    [p] = render_all(settings, tmp_path, hours=6, devices=synthetic.device_list_json(devs), to_ms=end,
                     uids=["kc-waste"])
    assert p.path.name == "kc-waste.png" and p.overlaps == []
    img = mpimg.imread(p.path)
    h, w = img.shape[:2]
    assert (w, h) == (p.width, p.height) and w >= 1400 and h >= 400  # readable at full width (issue 16)
    assert p.units["Fill level"] == "%" and p.units["distance (cm)"] == "cm"
    # the "due now" stat is red (threshold >= 1 bin): a sizeable share of pure-ish red pixels
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.2) & (img[..., 2] < 0.25)
    assert red.mean() > 0.01


def test_previews_cli_without_data_says_no_data(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("KC_INFLUX__DATABASE", settings.influx.database)
    monkeypatch.setenv("KC_INFLUX__URL", settings.influx.url)
    assert cli_main(["previews", "--out", str(tmp_path), "--hours", "1"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"{u}.png" for u in ("kc-air", "kc-water", "kc-waste", "kc-fleet", "kc-pipeline"))


def test_previews_command_parses_and_names_its_own_database(capsys) -> None:
    from devtools import previews

    with pytest.raises(SystemExit) as exc:
        previews.main(["--help"])
    assert exc.value.code == 0
    assert "--db" in capsys.readouterr().out
    assert previews.DEFAULT_DB != "kotacerdas_demo"  # never the demo's database


def test_a_long_firmware_version_stays_inside_the_figure(tmp_path) -> None:
    """The fleet preview's firmware donut: a long version string under one full wedge ran off the
    figure's left edge on a real pipeline run (overlap check: 'Firmware versions' / figure edge)."""
    from dashboards import verify
    from dashboards.definitions import fleet_dashboard
    from dashboards.previews import render
    from kotacerdas.catalogue import load_catalogue
    from kotacerdas.influx import Series

    d = fleet_dashboard(load_catalogue())
    pie = next(p for p in d.panels() if p.type == "piechart")
    long = "sim-1.0+9861888ecd"  # as on the run; one version, so its label sits at 9 o'clock
    series = [Series("device_status", {"device": f"d{i}"}, ["time", "fw"], [[0, long]])
              for i in range(130)]
    # every other panel with a day of data from 12 devices, so tight_layout packs the grid as on a run
    t0 = 1_764_547_200_000
    day = [Series("x", {"device": f"day-water-{i:05d}"}, ["time", "v"], [[t0 + h * 3_600_000, 50.0 + i] for h in range(24)])
           for i in range(12)]
    res = [verify.QueryResult(d.uid, x.title, "", None, series if x is pie else day) for x in d.panels()]
    p = render(d, res, tmp_path / "fleet.png", {})
    assert not [o for o in p.overlaps if pie.title in o], p.overlaps


def test_preview_maps_draw_the_outline_of_the_stations_city() -> None:
    from dashboards.previews import _outline_rings

    depok, attribution = _outline_rings([(106.82, -6.40, 62)])
    assert len(depok) == 1 and "OpenStreetMap" in attribution
    assert len(_outline_rings([(108.557, -6.732, 62)])[0]) == 1  # Cirebon
    assert _outline_rings([(106.79, -6.56, 62)])[0] == []  # Bogor: no outline shipped, none drawn
