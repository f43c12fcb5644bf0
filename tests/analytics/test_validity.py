"""ISPU / US AQI validity: completeness rule, provisional flag and counts, ozone's 1-hour index,
and one averaging for the service and the evaluation harness."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from analytics import aqi_us, ispu
from analytics.averaging import period_mean
from analytics.service import AnalyticsService

from tests.analytics.test_service import NOW, telemetry_lines, typical


def _naive_period(x: np.ndarray, per_hour: int, n_hours: int) -> tuple[float, int, int]:
    """Plain-loop reference for the last time step of one series."""
    hours, vals, samples = 0, [], 0
    for k in range(n_hours):
        end = len(x) - k * per_hour
        if end <= 0:
            break
        chunk = x[max(end - per_hour, 0):end]
        ok = chunk[~np.isnan(chunk)]
        samples += len(ok)
        if len(ok) >= 0.75 * per_hour:
            hours += 1
            vals.append(ok.mean())
    return (float(np.mean(vals)) if vals else float("nan")), hours, samples


def test_period_mean_matches_a_plain_loop_and_counts_completeness():
    rng = np.random.default_rng(3)
    t = 26 * 60
    x = rng.uniform(10, 90, size=(4, t))
    x[1, -6 * 60:] = np.nan  # six silent hours: 18 valid -> still complete
    x[2, -7 * 60:] = np.nan  # seven: 17 valid -> provisional
    x[3, ::2] = np.nan  # every hour half empty: no valid hour at all
    avg = period_mean(x, 60.0, 24 * 3600)
    for s in range(3):
        want, hours, samples = _naive_period(x[s], 60, 24)
        assert avg.conc[s, -1] == pytest.approx(want)
        assert (avg.hours[s, -1], avg.samples[s, -1]) == (hours, samples)
    assert avg.hours_needed == 18
    assert list(avg.provisional[:, -1]) == [False, False, True, True]
    assert avg.hours[3, -1] == 0 and np.isfinite(avg.conc[3, -1])  # provisional value from partial hours
    assert np.isnan(period_mean(np.full((1, 10), np.nan), 60.0, 3600).conc).all()


def test_us_aqi_ozone_above_300_uses_the_1_hour_index():
    ugm3_per_ppm = 1000 / aqi_us.TO_TABLE_UNIT["o3"] / 1000  # ppm -> ug/m3
    # 8-hour ozone at 0.25 ppm has no 8-hour row above 0.200; the 1-hour table gives > 300 at 0.45 ppm
    i = aqi_us.o3_index(np.array([0.25 * ugm3_per_ppm * 1000]) / 1000, np.array([0.45 * ugm3_per_ppm]))
    assert i[0] == pytest.approx(round((500 - 301) / (0.604 - 0.405) * (0.45 - 0.405) + 301), abs=1)
    assert i[0] > 300
    # in clean air the 1-hour index is undefined and the 8-hour one stands
    low = aqi_us.o3_index(np.array([0.04 * ugm3_per_ppm]), np.array([0.06 * ugm3_per_ppm]))
    assert low[0] == aqi_us.index("o3", np.array([0.04 * ugm3_per_ppm]))[0]


def test_service_writes_provisional_flag_hours_and_samples(settings, influx):
    base = typical("air", 0.05, 1)  # noisy: a constant signal would fail the flat-line test
    # 20 hours of 1-minute readings: 20 valid hourly means of 24 -> complete (>= 18)
    influx.write(telemetry_lines("air", "air-full", 20 * 60, 60, base))
    # 2 hours only -> provisional
    influx.write(telemetry_lines("air", "air-new", 2 * 60, 60, base))
    svc = AnalyticsService(settings, registry=CollectorRegistry())
    try:
        svc.run_pass(now_ms=NOW, window_s=24 * 3600)
    finally:
        svc.close()
    rows = {(s.tags["device"], s.tags["pollutant"]): dict(zip(s.columns, s.values[0])) for s in influx.series(
        'SELECT "value", "provisional", "hours", "samples", "concentration" FROM "ispu" GROUP BY "device", "pollutant"')}
    full, new = rows[("air-full", "pm25")], rows[("air-new", "pm25")]
    assert (full["provisional"], full["hours"], full["samples"]) == (0, 20, 1200)
    assert (new["provisional"], new["hours"], new["samples"]) == (1, 2, 120)
    assert rows[("air-full", "max")]["provisional"] == 0 and rows[("air-new", "max")]["provisional"] == 1
    aqi = {s.tags["pollutant"]: dict(zip(s.columns, s.values[0])) for s in influx.series(
        'SELECT "provisional", "hours" FROM "aqi_us" WHERE "device" = \'air-full\' GROUP BY "pollutant"')}
    assert aqi["o3"]["hours"] == 8 and aqi["o3"]["provisional"] == 0  # US AQI ozone: 8 hours


def test_evaluation_harness_averages_like_the_service():
    """The harness's ISPU flag is ispu.index over ispu.averaged: the service's last value, at every step."""
    x = np.full((1, 30 * 60), 40.0)
    x[0, -3 * 60:] = 400.0  # a three-hour smog episode
    avg = ispu.averaged("pm25", x, 60.0)
    idx = ispu.index("pm25", avg.conc)
    # 24-hour mean at the end: (21 * 40 + 3 * 400) / 24 = 85 ug/m3 -> Tidak Sehat (ISPU 131)
    assert avg.conc[0, -1] == pytest.approx(85.0)
    assert idx[0, -1] > 100 and idx[0, -3 * 60 - 1] < 100
