"""A simulated day through the real pipeline, then every dashboard panel query against what it stored,
and the previews rendered from it.

simulate -> MQTT -> gateway -> ingest -> InfluxDB -> analytics (the passes the live service
would have made over the day, ``--once --replay``), each as a ``kotacerdas`` subprocess on the
real local broker and database (per-test topic root and database), then dashboards.verify runs
every panel and variable query and dashboards.previews draws every dashboard from the same data.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import numpy as np

from analytics import ispu
from kotacerdas.influx import InfluxClient
from tests.services import REPO, kc, service_env, start_pipeline
from tests.waiting import until

from dashboards import standards as std
from dashboards import verify
from dashboards.definitions import BINS_DUE_TITLE, UID, all_dashboards
from dashboards.previews import render_all

SCENARIO = Path(__file__).parent / "data" / "day.toml"

# Panels whose content depends on what the day happened to produce (an alert firing, a bin
# due right now, an anomaly flagged): they must run without error but may be empty.
MAY_BE_EMPTY = {
    "Alerts (latest first)", "Open and recent alerts", BINS_DUE_TITLE,
    "Bins predicted full tomorrow (list)", "Bins predicted full tomorrow", "Latest anomalies",
    "Flagged readings (QARTOD suspect/fail) per field", "Dead letters by reason",
    "Dead letters per reason (range total)", "Latest dead letters", "Dead-lettered per second",
    "Stale (online, silent)", "Offline",
}


# a dashboard drawing only what gateway and ingest wrote (no analytics output: the pipeline one has
# the alerts table)
NOT_ANALYTICS = (UID["fleet"],)


def _kc(argv: list[str], env: dict, timeout: float = 300):
    r = kc(*argv, env=env, timeout=timeout)
    assert r.returncode == 0, f"kotacerdas {' '.join(argv)} -> {r.returncode}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.long
def test_simulated_day_through_the_pipeline_fills_every_panel(settings, tmp_path):
    # ingest's kc_pipeline stats every 2 s (10 s by default): the pipeline dashboard has its data sooner
    env = service_env(tmp_path, mqtt_port=settings.mqtt.port, influx_url=settings.influx.url,
                      database=settings.influx.database, root=settings.mqtt.topic_root,
                      KC_INGEST__STATS_INTERVAL_S="2")
    procs, devices = start_pipeline(SCENARIO, env, tmp_path)
    procs_raw: list[subprocess.Popen] = []
    try:
        summary = tmp_path / "summary.json"
        _kc(["simulate", "run", str(SCENARIO), "--summary", str(summary), "--no-progress"], env)
        good = json.loads(summary.read_text()).get("good_by_kind", {})
        assert sum(good.values()) > 300
        with InfluxClient(settings.influx) as c:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                stored = {k: int(c.scalar(f'SELECT count("seq") FROM "{m}"') or 0)
                          for k, m in (("air", "air"), ("water", "water"), ("waste_bin", "waste_bin"))}
                if all(stored[k] >= n for k, n in good.items()):
                    break
                time.sleep(0.25)
            assert all(stored[k] >= n for k, n in good.items()), (stored, good)
            # every 3 h over the day: an ISPU/AQI history for the time-series panels, as the live
            # service would have written it; it runs while the pipeline dashboard's data accumulates
            replay_log = tmp_path / "analytics-replay.log"
            with open(replay_log, "wb") as log:
                replay = subprocess.Popen([sys.executable, "-m", "kotacerdas", "analytics", "run", "--once", "--replay",
                                           "86400", "--every", "10800"], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs_raw.append(replay)
            # the pipeline dashboard needs ingest's kc_pipeline points in two of its 20 s buckets (the
            # derivative panels): wait until its queries say so, not for a fixed interval
            pipeline = [d for d in all_dashboards() if d.uid == UID["pipeline"]]

            def pipeline_problems() -> list[str]:
                rs = verify.run(c, pipeline, from_ms=None, to_ms=int(time.time() * 1000))
                return [p for r in rs if r.panel not in MAY_BE_EMPTY for p in r.problems()]

            until(lambda: not pipeline_problems(), 90, "the pipeline dashboard's kc_pipeline points", every_s=0.5)
            # the dashboards that draw no analytics output are rendered while the replay runs
            device_list = json.loads(devices.read_text())
            previews = render_all(settings, tmp_path / "previews", devices=device_list, uids=NOT_ANALYTICS,
                                  to_ms=int(time.time() * 1000))
            rc = replay.wait(300)
            assert rc == 0, f"analytics run --once --replay -> {rc}\n{replay_log.read_text(errors='replace')[-3000:]}"
            to_ms = int(time.time() * 1000)
            # each dashboard over its own default range, as it opens in Grafana (the pipeline
            # dashboard's 6 h gives 20 s buckets: the derivative panels need two in the run's minute)
            results = verify.run(c, all_dashboards(), from_ms=None, to_ms=to_ms)
            # the limits analytics applied (written with each verdict) are the ones the water panels draw
            applied = {s.tags["parameter"]: s.values[0][1:] for s in c.series(
                'SELECT last("limit_lo"), last("limit_hi") FROM "water_compliance" WHERE "parameter" != \'all\' '
                'GROUP BY "parameter"')}
            # the index categories analytics wrote are the bands the panels colour by
            categories = {m: [tuple(v[1:]) for s in c.series(f'SELECT "value", "category" FROM "{m}"') for v in s.values]
                          for m in ("ispu", "aqi_us")}
            indices = [(s.tags["pollutant"], *v[1:]) for s in c.series(
                'SELECT "value", "concentration" FROM "ispu" WHERE "pollutant" != \'max\' GROUP BY "pollutant"')
                for v in s.values]
            ispu_times = {v[0] for s in c.series('SELECT "value" FROM "ispu"') for v in s.values}
            # the rest on both cores: matplotlib holds one, so half of them in a forked child
            rest = [d.uid for d in all_dashboards() if d.uid not in NOT_ANALYTICS]
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                child = pool.submit(render_all, settings, tmp_path / "previews", devices=device_list, to_ms=to_ms,
                                    uids=rest[::2])
                previews += render_all(settings, tmp_path / "previews", devices=device_list, to_ms=to_ms,
                                       uids=rest[1::2])
                previews += child.result(timeout=300)
            assert sorted(p.path.name for p in previews) == sorted(f"{d.uid}.png" for d in all_dashboards())
    finally:
        for r in procs_raw:
            if r.poll() is None:
                r.kill()
                r.wait(10)
        for p in reversed(procs):
            p.stop()
    assert set(applied) == set(std.WATER_LIMITS), applied
    for param, (lo, hi) in applied.items():
        want_lo, want_hi, _ = std.WATER_LIMITS[param]
        assert hi == pytest.approx(want_hi) and (want_lo is None or lo == pytest.approx(want_lo)), (param, lo, hi)
    for m, bands in (("ispu", std.ISPU_BANDS), ("aqi_us", std.AQI_US_BANDS)):
        assert categories[m], f"analytics wrote no {m}"
        wrong = [(v, cat) for v, cat in categories[m] if std.category_of(bands, v).label != cat]
        assert wrong == [], (m, wrong[:5])
    # the stored index is P.14/2020's formula applied to the stored (averaged) concentration, at
    # one time per replayed pass
    assert indices and len(ispu_times) >= 8, (len(indices), len(ispu_times))
    for pol, value, conc in indices:
        assert value == ispu.index(pol, np.array([conc]))[0], (pol, value, conc)
    # previews: readable width, nothing overlapping, every panel with a unit labelled in print form
    grafana_ids = {"conμgm3", "celsius", "percent", "short", "reqps", "volt", "none"}
    for p in previews:
        assert p.width >= 1400 and p.path.stat().st_size > 50_000, p
        assert p.overlaps == [], (p.path.name, p.overlaps)
        assert not set(p.units.values()) & grafana_ids, p.units
        assert set(p.empty) <= MAY_BE_EMPTY, (p.path.name, p.empty)
    units = {t: u for p in previews for t, u in p.units.items()}
    assert units["pm25 (ug/m3)"] == "µg/m³" and units["Fill level"] == "%" and units["chlorine (mg/L)"] == "mg/L"
    errors = [r for r in results if r.error]
    assert not errors, [r.error for r in errors]
    problems = [p for r in results if r.panel not in MAY_BE_EMPTY for p in r.problems()]
    assert problems == [], "\n".join(problems)
    # and with data, even the may-be-empty ones must have the right shape
    shape = [p for r in results if r.panel in MAY_BE_EMPTY and r.series for p in r.problems()]
    assert shape == [], "\n".join(shape)
    filled = sum(1 for r in results if r.series)
    empty = sorted({f"{r.dashboard}/{r.panel}" for r in results if not r.series})
    print(f"{filled}/{len(results)} queries returned data after a simulated day; empty: {empty}")
