"""PNG previews rendered from InfluxDB data (synthetic day in the platform's schemas)."""

from __future__ import annotations

import time

import matplotlib.image as mpimg
import numpy as np

from dashboards import synthetic
from dashboards.cli import main as cli_main
from dashboards.previews import render_all


def test_previews_render_panels_with_data(settings, influx, tmp_path):
    end = int(time.time() * 1000) // 60_000 * 60_000
    devs = synthetic.write(influx, end, hours=6)
    files = render_all(settings, tmp_path, hours=6, devices=synthetic.device_list_json(devs), to_ms=end,
                       uids=["kc-waste"])
    assert [f.name for f in files] == ["kc-waste.png"]
    img = mpimg.imread(files[0])
    h, w = img.shape[:2]
    assert w >= 1400 and h >= 400  # readable at full width (issue 16)
    # not blank: the stat panels paint large coloured areas, the plots draw lines
    assert float(np.std(img[..., :3])) > 0.05
    # the "due now" stat is red (threshold >= 1 bin): a sizeable share of pure-ish red pixels
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.2) & (img[..., 2] < 0.25)
    assert red.mean() > 0.01


def test_previews_cli_without_data_says_no_data(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("KC_INFLUX__DATABASE", settings.influx.database)
    monkeypatch.setenv("KC_INFLUX__URL", settings.influx.url)
    assert cli_main(["previews", "--out", str(tmp_path), "--hours", "1"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"{u}.png" for u in ("kc-air", "kc-water", "kc-waste", "kc-fleet", "kc-pipeline"))
