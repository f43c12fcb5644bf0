"""One analytics pass against the real InfluxDB: telemetry in (team-interfaces schema), results out."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.service import AnalyticsService
from kotacerdas.catalogue import load_catalogue
from kotacerdas.lineprotocol import format_line

CAT = load_catalogue()
NOW = 1_763_900_000_000 - (1_763_900_000_000 % 60_000)  # a fixed, minute-aligned "now"


def telemetry_lines(kind: str, device: str, n: int, step_s: int, values, district: str = "beji") -> list[str]:
    """Line protocol exactly as ingest writes it (tags device/city/district/kind; fields + seq/battery/fw)."""
    k = CAT[kind]
    out = []
    for i in range(n):
        ts = NOW - (n - 1 - i) * step_s * 1000
        fields = {f.name: float(values(f.name, i)) for f in k.fields}
        fields.update(seq=i, fw="1.0.0", rssi=-60, gw_lag_ms=20)
        out.append(format_line(k.measurement, {"device": device, "city": "depok", "district": district,
                                               "kind": kind}, fields, ts))
    return out


def typical(kind: str, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = CAT[kind]

    def v(name: str, i: int) -> float:
        f = k.field(name)
        return f.quantise(f.typical + noise * f.typical * rng.standard_normal()) if f.typical else 0.0
    return v


def test_one_pass_writes_qc_ispu_aqi_water_bins(settings, influx):
    lines: list[str] = []
    # three clean air stations, one polluted (PM2.5 150 ug/m3 for the last 24 h)
    for d in range(3):
        lines += telemetry_lines("air", f"air-{d}", 120, 60, typical("air", 0.02, d))
    base = typical("air", 0.02, 9)
    lines += telemetry_lines("air", "air-smog", 120, 60, lambda n, i: 150.0 if n == "pm25" else base(n, i))
    # one air station with a gross-range failure (pm25 above the expected span) at one instant
    lines += telemetry_lines("air", "air-bad", 120, 60,
                             lambda n, i: 900.0 if (n == "pm25" and i == 100) else base(n, i))
    # water: one compliant point, one with turbidity 12 NTU
    lines += telemetry_lines("water", "wq-ok", 60, 60, typical("water", 0.01, 1))
    wbase = typical("water", 0.01, 2)
    lines += telemetry_lines("water", "wq-murky", 60, 60, lambda n, i: 12.0 if n == "turbidity" else wbase(n, i))
    # bins: one filling 2 %/h (15-min reports), one nearly full
    lines += telemetry_lines("waste_bin", "bin-a", 40, 900, lambda n, i: {"fill": 10 + 0.5 * i, "tilt": 0.0,
                                                                         "distance": 100.0, "temperature": 30.0}[n])
    lines += telemetry_lines("waste_bin", "bin-b", 40, 900, lambda n, i: {"fill": 60 + i, "tilt": 0.0,
                                                                         "distance": 30.0, "temperature": 30.0}[n])
    influx.write(lines)

    svc = AnalyticsService(settings)
    try:
        counts = svc.run_pass(now_ms=NOW, window_s=24 * 3600)
    finally:
        svc.close()
    assert counts["qc"] > 0 and counts["ispu"] > 0 and counts["aqi_us"] > 0

    # qc: the 900 ug/m3 reading fails gross range (catalogue expected span 0-500 -> suspect, range 0-1000 -> ok)
    s = influx.series('SELECT "flag" FROM "qc" WHERE "device"=\'air-bad\' AND "field"=\'pm25\' '
                      'AND "test"=\'gross_range\' AND "flag">1')
    assert len(s) == 1 and [r[1] for r in s[0].values] == [3]
    tags = influx.series('SHOW TAG KEYS FROM "qc"')[0].column("tagKey")
    assert sorted(tags) == ["city", "device", "district", "field", "kind", "test"]

    # ISPU of the smog station: 150 ug/m3 PM2.5 -> (200-100)/(150.4-55.4)*(150-55.4)+100 = 199.6 -> 200
    r = influx.series('SELECT "value","category","category_level","concentration" FROM "ispu" '
                      'WHERE "device"=\'air-smog\' AND "pollutant"=\'pm25\'')
    assert r[0].values[0][1:] == [200.0, "Tidak Sehat", 3, 150.0]
    mx = influx.series('SELECT "value","category" FROM "ispu" WHERE "device"=\'air-smog\' AND "pollutant"=\'max\'')
    assert mx[0].values[0][1:] == [200.0, "Tidak Sehat"]
    # US AQI 2024: 150.0 ug/m3 -> (300-201)/(225.4-125.5)*(150.0-125.5)+201 = 225.3 -> 225 Very Unhealthy
    a = influx.series('SELECT "value","category_level" FROM "aqi_us" WHERE "device"=\'air-smog\' '
                      'AND "pollutant"=\'pm25\'')
    assert a[0].values[0][1:] == [225.0, 5]

    # water compliance per parameter and overall
    w = {(x.tags["device"], x.tags["parameter"]): x.values[0][1]
         for x in influx.series('SELECT last("compliant") FROM "water_compliance" GROUP BY "device","parameter"')}
    assert w[("wq-murky", "turbidity")] == 0 and w[("wq-murky", "all")] == 0
    assert w[("wq-ok", "turbidity")] == 1 and w[("wq-ok", "all")] == 1

    # bins: bin-a fills 0.5 % per 15 min = 2 %/h; bin-b is full (99 %) and first in line
    b = {x.tags["device"]: dict(zip(x.columns, x.values[0]))
         for x in influx.series('SELECT * FROM "bin_forecast" GROUP BY "device"')}
    assert b["bin-a"]["fill_rate"] == pytest.approx(2.0, abs=1e-6)
    assert b["bin-a"]["hours_to_full"] == pytest.approx((100 - 29.5) / 2.0, abs=1e-6)
    assert b["bin-b"]["priority"] == 1 and b["bin-b"]["full_by_tomorrow"] == 1

    # alerts: smog -> environment agency, murky water -> water utility, full bin -> waste department
    al = {(x.tags["rule"], x.tags["device"]): x for x in
          influx.series('SELECT "state","text_id","text_en" FROM "alerts" GROUP BY "rule","device","department",'
                        '"severity"')}
    assert al[("ispu_unhealthy", "air-smog")].tags["department"] == "environment_agency"
    assert al[("water_noncompliant", "wq-murky")].tags["department"] == "water_utility"
    assert al[("bin_full", "bin-b")].tags["department"] == "waste_department"
    assert ("ispu_unhealthy", "air-0") not in al
    assert "kekeruhan" in al[("water_noncompliant", "wq-murky")].values[0][2]
    # the stored alert carries what an analyst filters and reads by: where, what was measured, the limit
    smog = influx.series('SELECT "district","city","concentration","concentration_unit","threshold","averaging_s",'
                         '"pollutant","observed_ms" FROM "alerts" WHERE "device"=\'air-smog\'')[0]
    row = dict(zip(smog.columns, smog.values[0]))
    assert (row["city"], row["district"], row["pollutant"]) == ("depok", "beji", "pm25")
    assert row["concentration"] == pytest.approx(150.0) and row["concentration_unit"] == "ug/m3"
    assert row["threshold"] == 101.0 and row["averaging_s"] == 86400.0 and row["observed_ms"] <= NOW
    assert {"city", "district"} <= set(influx.series('SHOW TAG KEYS FROM "alerts"')[0].column("tagKey"))


def test_second_pass_does_not_repeat_alerts(settings, influx):
    base = typical("air", 0.0, 1)
    influx.write(telemetry_lines("air", "air-smog", 30, 60, lambda n, i: 300.0 if n == "pm25" else base(n, i)))
    svc = AnalyticsService(settings)
    try:
        first = svc.run_pass(now_ms=NOW, window_s=3600)
        second = svc.run_pass(now_ms=NOW, window_s=3600)
    finally:
        svc.close()
    assert first["alerts"] == 1 and second["alerts"] == 0


def test_empty_database_is_a_quiet_pass(settings):
    svc = AnalyticsService(settings)
    try:
        assert svc.run_pass(now_ms=NOW, window_s=3600) == {"alerts": 0}
    finally:
        svc.close()


def test_non_numeric_values_are_counted_not_fatal(settings, influx):
    # InfluxDB fixes a field's type per shard: a writer that got there first with a string
    # (an old schema, a hand-made point) makes `ph` a string field for everybody in the shard
    influx.write([f'water,city=depok,device=wq-2,district=beji,kind=water ph="high",tds=100.0 {NOW}'])
    influx.write([format_line("water", {"device": "wq-1", "city": "depok", "district": "beji", "kind": "water"},
                              {"tds": 150.0, "turbidity": 1.0}, NOW - i * 60_000) for i in range(20)])
    svc = AnalyticsService(settings)
    try:
        counts = svc.run_pass(now_ms=NOW, window_s=3600)
        rejected = svc.registry.get_sample_value("kc_analytics_rows_rejected_total", {"reason": "non_numeric"})
    finally:
        svc.close()
    assert counts["water_compliance"] > 0  # the good parameters are still evaluated
    assert rejected == 1.0


def test_gap_points_only_inside_a_devices_reporting_span(settings, influx):
    base = typical("air", 0.01, 4)
    lines = telemetry_lines("air", "air-hole", 30, 60, base)
    del lines[10:15]  # a 5-minute silence
    influx.write(lines)
    svc = AnalyticsService(settings)
    try:
        svc.run_pass(now_ms=NOW, window_s=3 * 3600)  # the device reported only in the last 30 minutes
    finally:
        svc.close()
    flags = [r[1] for r in influx.series('SELECT "flag" FROM "qc" WHERE "test"=\'gap\' AND "field"=\'pm25\'')[0].values]
    # suspect/fail only: the first reading after the silence (missing bins themselves are no verdict)
    assert flags == [3]


def test_statistical_detectors_write_qc_exceptions(settings, influx):
    """Hampel, EWMA and CUSUM, opted in (analytics.extra_tests), write suspect/fail rows to `qc` (never
    "not evaluated"); without the opt-in they write nothing (tests/analytics/test_alarmset.py)."""
    settings.analytics.extra_tests = ["hampel", "ewma", "cusum"]
    day_n = 96  # bins report every 900 s
    n = 4 * day_n  # four days

    def temperature(dev: int, i: int) -> float:
        cycle = 32.0 + 2.0 * np.sin(2 * np.pi * i / day_n) + 0.1 * ((i * 7 + dev * 3) % 5 - 2)
        if dev == 1 and i == 2 * day_n + 10:
            cycle += 100.0  # a reading that belongs to no hour of this bin's day (Hampel: z 60 by default)
        if dev == 0 and i >= 3 * day_n:
            cycle += 3.0  # the last day: the bin's sensor reads 3 C above its neighbours
        return round(cycle, 1)

    lines = []
    for d in range(4):
        lines += telemetry_lines("waste_bin", f"bin-{d}", n, 900, lambda name, i, d=d: {
            "fill": 40.0, "distance": 150.0, "tilt": 0.0, "temperature": temperature(d, i)}[name])
    influx.write(lines)
    svc = AnalyticsService(settings)
    try:
        svc.run_pass(now_ms=NOW, window_s=4 * 86400)
    finally:
        svc.close()

    def times(test: str, device: str) -> list[int]:
        s = influx.series(f'SELECT "flag" FROM "qc" WHERE "test"=\'{test}\' AND "device"=\'{device}\' '
                          f'AND "field"=\'temperature\'')
        return [r[0] for r in s[0].values] if s else []

    def grid_time(i: int) -> int:  # qc points carry the start of the 900 s grid bin a reading fell in
        ms = NOW - (n - 1 - i) * 900_000
        return ms - ms % 900_000

    outlier_ms, offset_ms = grid_time(2 * day_n + 10), grid_time(3 * day_n)
    assert outlier_ms in times("hampel", "bin-1")  # the off-cycle reading
    # (the seasonal test needs 7 days of history: tests/analytics/test_service_restart.py)
    for test in ("ewma", "cusum"):
        ts = times(test, "bin-0")
        assert ts and min(ts) >= offset_ms, test  # the shift against the neighbours, and nothing before it
        assert min(ts) <= offset_ms + 2 * 3600_000, test  # found within two hours
    flags = influx.series('SELECT "flag" FROM "qc" WHERE "test"=\'hampel\' OR "test"=\'ewma\' OR "test"=\'cusum\' '
                          'OR "test"=\'seasonal\'')
    assert {r[1] for r in flags[0].values} <= {3, 4}  # suspect/fail only
    tags = influx.series('SHOW TAG VALUES FROM "qc" WITH KEY = "test"')[0].column("value")
    assert {"hampel", "ewma", "cusum"} <= set(tags)
    assert sorted(influx.series('SHOW TAG KEYS FROM "qc"')[0].column("tagKey")) == [
        "city", "device", "district", "field", "kind", "test"]


def test_seasonal_writes_nothing_in_a_one_day_window(settings, influx):
    """With less than seven days of history the seasonal residual is not evaluated: no `qc` rows at all."""
    base = typical("air", 0.02, 5)
    for d in range(3):
        influx.write(telemetry_lines("air", f"air-{d}", 120, 60, base))
    svc = AnalyticsService(settings)
    try:
        svc.run_pass(now_ms=NOW, window_s=86400)
    finally:
        svc.close()
    assert influx.series('SELECT count("flag") FROM "qc" WHERE "test"=\'seasonal\'') == []
    # no "not evaluated" (2) or "missing" (9) rows: a verdict or nothing
    assert influx.series('SELECT count("flag") FROM "qc" WHERE "flag" < 3 OR "flag" > 4') == []
