"""Every panel and variable query, executed as Grafana would, against the real InfluxDB.

The other parts write the measurements; here synthetic data in exactly the schemas of
docs/team-interfaces.md is written into the per-test database first.
"""

from __future__ import annotations

import time

import pytest

from dashboards import verify
from tests.dashboards import synthetic_day as synthetic
from dashboards.definitions import BINS_DUE_TITLE, all_dashboards


@pytest.fixture
def day(influx):
    end = int(time.time() * 1000) // 60_000 * 60_000
    devs = synthetic.write(influx, end)
    return end, devs


def test_every_panel_query_returns_data_of_the_expected_shape(influx, day):
    end, _ = day
    boards = all_dashboards()
    results = verify.run(influx, boards, from_ms=end - 86400_000, to_ms=end)
    n_targets = sum(len(p.targets) for d in boards for p in d.panels())
    n_vars = sum(len(d.variables) for d in boards)
    assert len(results) == n_targets + n_vars and n_targets > 60
    problems = [p for r in results for p in r.problems()]
    assert problems == []


def test_variables_restrict_the_panels(influx, day):
    end, devs = day
    boards = all_dashboards()
    results = verify.run(influx, boards, from_ms=end - 86400_000, to_ms=end,
                         variables={"city": ["bogor"], "district": None, "device": None})
    bogor = {d.device for d in devs if d.city == "bogor"}
    seen = set()
    for r in results:
        assert r.error is None, r.error
        for s in r.series:
            if "device" in s.tags:
                seen.add(s.tags["device"])
        if r.panel == "variable city":
            # the city variable itself is not filtered by its own value
            assert {v[1] for s in r.series for v in s.values} == {"depok", "bogor"}
        if r.panel == "variable device" and r.dashboard == "kc-air":
            assert {v[1] for s in r.series for v in s.values} == {d.device for d in devs if d.kind == "air" and d.city == "bogor"}
    assert seen and seen <= bogor


def test_derived_panels_show_what_the_data_says(influx, day):
    end, devs = day
    boards = {d.uid: d for d in all_dashboards()}
    res = {(r.dashboard, r.panel): r for r in verify.run(influx, boards.values(), from_ms=end - 86400_000, to_ms=end)}
    # waste: the first bin ends at 92 % -> one bin due now; the collection list is ranked 1..n
    due = res[("kc-waste", BINS_DUE_TITLE)].series[0]
    assert due.column("bins") == [1]
    coll = res[("kc-waste", "Collection list (priority 1 first)")].series
    assert sorted(s.column("priority")[0] for s in coll) == list(range(1, len(coll) + 1))
    tomorrow = res[("kc-waste", "Bins predicted full tomorrow (list)")].series
    assert all(v == 1 for s in tomorrow for v in s.column("full_by_tomorrow"))
    # fleet: device 3 of each kind is offline in the last hour
    offline = res[("kc-fleet", "Offline")].series[0].column("devices")[0]
    assert offline == len({d.kind for d in devs})
    # ISPU categories in the station table agree with the regulation's bands
    from dashboards import standards as std
    for s in res[("kc-air", "ISPU per station")].series:
        row = dict(zip(s.columns, s.values[0]))
        assert std.category_of(std.ISPU_BANDS, row["ispu"]).label == row["category"]
    # pipeline: dead-letter reasons with their counts (1..4 by construction)
    dl = res[("kc-pipeline", "Dead letters per reason (range total)")].series
    assert {s.tags["reason"]: s.column("count")[0] for s in dl} == {
        "out_of_range": 1, "bad_json": 2, "unknown_device": 3, "write_rejected": 4}


def test_default_ranges_and_the_verify_cli(settings, influx, day, monkeypatch, capsys):
    from dashboards.cli import main as cli_main
    from dashboards.verify import default_from_ms

    boards = {d.uid: d for d in all_dashboards()}
    assert default_from_ms(boards["kc-air"], 100_000_000) == 100_000_000 - 86400_000
    assert default_from_ms(boards["kc-pipeline"], 100_000_000) == 100_000_000 - 6 * 3600_000
    monkeypatch.setenv("KC_INFLUX__DATABASE", settings.influx.database)
    monkeypatch.setenv("KC_INFLUX__URL", settings.influx.url)
    assert cli_main(["verify"]) == 0
    assert "0 problems" in capsys.readouterr().out
    influx.query('DROP MEASUREMENT "bin_forecast"')
    assert cli_main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "Collection list (priority 1 first): no data" in out
