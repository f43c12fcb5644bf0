"""The live loop against the real InfluxDB, restarted between passes: the same `qc` flags as without restarts."""

from __future__ import annotations

import numpy as np

from analytics.service import AnalyticsService
from kotacerdas.influx import InfluxClient
from tests.analytics.test_service import NOW, telemetry_lines, typical

N = 8 * 60  # eight hours of 1-min air readings
SHIFT_AT = 5 * 60  # air-3's pm25 reads 40 ug/m3 high from here on


def _lines() -> list[str]:
    lines: list[str] = []
    for d in range(5):
        base = typical("air", 0.03, d)
        lines += telemetry_lines("air", f"air-{d}", N, 60, lambda n, i, d=d, base=base: base(n, i) + (
            40.0 if (d == 3 and n == "pm25" and i >= SHIFT_AT) else 0.0))
    return lines


def _passes(settings, restart: bool) -> None:
    """Passes every 20 min over the last 3 h of data; ``restart``: a new service process per pass."""
    svc = AnalyticsService(settings)
    try:
        for end in range(3 * 60, N + 1, 20):
            now = NOW - (N - end) * 60_000
            if restart:
                svc.close()
                svc = AnalyticsService(settings)
            svc.run_pass(now_ms=now, window_s=24 * 3600, emit_all=False)
    finally:
        svc.close()


def _charts(c: InfluxClient) -> dict[tuple[str, str, str], list]:
    out = {}
    for s in c.series('SELECT "flag","score" FROM "qc" WHERE "test"=\'ewma\' OR "test"=\'cusum\' '
                      'OR "test"=\'shift\' GROUP BY "device","field","test"'):
        out[(s.tags["device"], s.tags["field"], s.tags["test"])] = s.values
    return out


def _episodes(c: InfluxClient) -> dict[tuple[str, str, str], list]:
    return {(s.tags["device"], s.tags["field"], s.tags["fault"]): [dict(zip(s.columns, v)) for v in s.values]
            for s in c.series(
        'SELECT * FROM "qc_episode" GROUP BY "device","field","fault"')}


def test_restart_between_passes_gives_the_same_chart_flags(settings, influx, tmp_path):
    settings.analytics.extra_tests = ["ewma", "cusum"]  # the charts are opt-in (analytics/alarmset.py)
    other = settings.model_copy(deep=True)
    other.influx.database = settings.influx.database + "_r"
    other.state_dir = tmp_path / "state_restarted"
    lines = _lines()
    influx.write(lines)
    with InfluxClient(other.influx) as c2:
        c2.create_database()
        try:
            c2.write(lines)
            _passes(settings, restart=False)
            _passes(other, restart=True)
            straight, restarted = _charts(influx), _charts(c2)
            ep_straight, ep_restarted = _episodes(influx), _episodes(c2)
        finally:
            c2.drop_database(other.influx.database)
    assert straight == restarted
    assert ep_straight == ep_restarted
    # the shift is there to be found, and found soon after it starts (not only at some later pass)
    shift_ms = NOW - (N - 1 - SHIFT_AT) * 60_000
    hits = [r[0] for key, vals in straight.items() if key[:2] == ("air-3", "pm25") for r in vals]
    assert hits and shift_ms <= min(hits) <= shift_ms + 30 * 60_000
    assert (settings.state_dir / "analytics" / "charts" / "air.pm25.npz").exists()
    assert (settings.state_dir / "analytics" / "shift" / "air.pm25.npz").exists()
    # the level-shift test (analytics/shift.py) sees it too, once: within its window plus its verdict delay
    shift_hits = [r[0] for r in straight.get(("air-3", "pm25", "shift"), [])]
    assert shift_hits and shift_ms <= min(shift_hits) <= shift_ms + 95 * 60_000
    # nothing on the clean stations' pm25
    assert not [k for k in straight if k[1] == "pm25" and k[0] != "air-3"]
    assert np.isfinite([r[2] for vals in straight.values() for r in vals]).all()

    # the shift is one episode of fault type "shift" (the level-shift test alone) on air-3 pm25, from
    # its first verdict; the opted-in charts' alarms are episodes of their own type, from the shift
    rows = ep_straight[("air-3", "pm25", "shift")]
    assert len(rows) == 1 and rows[0]["time"] == min(shift_hits)
    assert rows[0]["peak_flag"] in (3, 4) and rows[0]["samples"] >= 1 and rows[0]["end_ms"] >= rows[0]["time"]
    assert rows[0]["peak_test"] == "shift"
    charts = ep_straight[("air-3", "pm25", "control_chart")]
    assert shift_ms <= charts[0]["time"] <= shift_ms + 30 * 60_000
    assert charts[0]["peak_test"] in ("ewma", "cusum")


def test_seasonal_baseline_from_persisted_days_with_a_one_day_window(settings, influx):
    """Nine days of bins, passes every 6 h over the default 24 h window, a new service each pass: the
    hour-of-day baseline comes from the days kept in state_dir, not from the window."""
    day_n, days = 96, 9
    n = days * day_n
    odd = 8 * day_n + 30  # day 8, 07:30: a temperature of the afternoon

    def temperature(dev: int, i: int) -> float:
        v = 30.0 + 4.0 * np.sin(2 * np.pi * (i % day_n) / day_n) + 0.1 * ((i * 7 + dev * 3) % 5 - 2)
        if dev == 1 and i == odd:
            v = 30.0 - 4.0
        return round(v, 1)

    lines = []
    for d in range(3):
        lines += telemetry_lines("waste_bin", f"bin-{d}", n, 900, lambda name, i, d=d: {
            "fill": 40.0, "distance": 150.0, "tilt": 0.0, "temperature": temperature(d, i)}[name])
    influx.write(lines)
    first_ms = NOW - (n - 1) * 900_000
    for k in range(1, days * 4 + 1):
        svc = AnalyticsService(settings)
        try:
            svc.run_pass(now_ms=first_ms + k * 6 * 3600_000, window_s=86400, emit_all=False)
        finally:
            svc.close()
    s = influx.series('SELECT "flag","score" FROM "qc" WHERE "test"=\'seasonal\' GROUP BY "device"')
    got = {x.tags["device"]: [r[0] for r in x.values] for x in s}
    odd_ms = first_ms + odd * 900_000
    odd_ms -= odd_ms % 900_000
    assert odd_ms in got.get("bin-1", [])
    # the daily cycle is no anomaly, and nothing is judged in the first seven days
    others = [t for dev, ts in got.items() for t in ts if not (dev == "bin-1" and t == odd_ms)]
    assert len(others) <= 2
    assert min(t for ts in got.values() for t in ts) >= first_ms + 7 * 86400_000 - 900_000


def test_cold_river_learned_range_through_the_service(settings, influx, tmp_path):
    """A river at 4-8 C (catalogue water 15-40 C): no gross-range verdict while its span is learned
    (3 h here, from the ranges file) nor after, across restarts; 27 C afterwards is suspect."""
    cfg = tmp_path / "ranges.yaml"
    cfg.write_text("learn: {days: 0.125}\n")
    settings.analytics.ranges_file = cfg
    n, odd = 6 * 60, 5 * 60

    def river(dev: int):
        base = typical("water", 0.01, dev)

        def v(name: str, i: int) -> float:
            if name != "temperature":
                return base(name, i)
            return 27.0 if (dev == 1 and i == odd) else round(6.0 + 2.0 * np.sin(2 * np.pi * i / 120) + 0.05 * (i % 3), 2)
        return v

    lines = []
    for d in range(3):
        lines += telemetry_lines("water", f"river-{d}", n, 60, river(d))
    influx.write(lines)
    first_ms = NOW - (n - 1) * 60_000
    for k in range(1, 13):
        svc = AnalyticsService(settings)
        try:
            svc.run_pass(now_ms=first_ms + k * 30 * 60_000, window_s=86400, emit_all=False)
        finally:
            svc.close()
    s = influx.series('SELECT "flag" FROM "qc" WHERE "test"=\'gross_range\' AND "field"=\'temperature\' '
                      'GROUP BY "device"')
    got = {x.tags["device"]: [(r[0], r[1]) for r in x.values] for x in s}
    odd_ms = first_ms + odd * 60_000
    assert got == {"river-1": [(odd_ms - odd_ms % 60_000, 3)]}
    assert (settings.state_dir / "analytics" / "ranges" / "water.temperature.npz").exists()


def test_multivariate_station_verdicts_written(settings, influx):
    """A correlated PM fault (tests/analytics/test_multivariate.py) through the service: `qc` rows with
    test "multivariate" on the fields the verdict is about (not on every field), and one `qc_episode`
    of fault "multivariate" for the station, once opted in (analytics/alarmset.py); not by default."""
    from tests.analytics.test_multivariate import FAULT, T, _stations

    x = _stations()
    lines = []
    for d in range(x.shape[0]):
        base = typical("air", 0.02, d)
        pm = {"pm25": x[d, 0], "pm10": x[d, 1], "co": x[d, 2]}
        lines += telemetry_lines("air", f"air-{d}", T, 60,
                                 lambda n, i, pm=pm, base=base: float(pm[n][i]) if n in pm else base(n, i))
    influx.write(lines)
    default = settings.model_copy(deep=True)
    default.state_dir = settings.state_dir / "default"
    for st in (default, settings):  # default first (its own state), then opted in
        if st is settings:
            st.analytics.extra_tests = ["multivariate"]
        svc = AnalyticsService(st)
        try:
            svc.run_pass(now_ms=NOW, window_s=T * 60)
        finally:
            svc.close()
        if st is default:
            assert not influx.series('SELECT "flag" FROM "qc" WHERE "test"=\'multivariate\'')  # opt-in
    s = influx.series('SELECT "flag" FROM "qc" WHERE "test"=\'multivariate\' GROUP BY "device","field"')
    assert {x.tags["field"] for x in s} <= {"pm25", "pm10", "co"}  # the fields it is about, not all 8
    got: dict[str, list] = {}
    for x in s:
        got.setdefault(x.tags["device"], []).extend(sorted({r[0] for r in x.values}))
    t0 = NOW - (T - 1) * 60_000
    lo, hi = t0 + FAULT.start * 60_000, t0 + FAULT.stop * 60_000
    assert len({t for t in got.get("air-1", []) if lo <= t < hi}) > 80  # most of the fault's two hours
    assert len([t for d, ts in got.items() for t in ts if not (d == "air-1" and lo <= t < hi + 3600_000)]) <= 5
    ep = influx.series('SELECT "samples" FROM "qc_episode" WHERE "fault"=\'multivariate\' AND "device"=\'air-1\'')
    assert ep and lo <= ep[0].values[0][0] < lo + 30 * 60_000
