"""Grafana-style interpolation of InfluxQL macros and template variables."""

from __future__ import annotations

import pytest

from dashboards.queries import interpolate, nice_interval_ms, where


def test_time_filter_interval_and_all():
    q = f'SELECT mean("pm25") FROM "air" {where()} GROUP BY time($__interval)'
    out = interpolate(q, from_ms=0, to_ms=86_400_000, variables={"city": None, "district": None, "device": None})
    assert "time >= 0ms and time <= 86400000ms" in out
    assert "GROUP BY time(1m)" in out  # 24 h / 1000 points = 86.4 s -> Grafana rounds to 1m
    assert '"city" =~ /^.*$/' in out and '"device" =~ /^.*$/' in out


def test_multi_values_are_escaped_and_joined():
    out = interpolate('SELECT 1 FROM "x" WHERE "device" =~ /^$device$/ AND "district" =~ /^$district$/ AND $timeFilter',
                      from_ms=0, to_ms=1000, variables={"device": ["a.1", "b/2"], "district": ["beji"]})
    assert r'/^(a\.1|b\/2)$/' in out and "/^beji$/" in out


def test_unknown_variable_is_an_error():
    with pytest.raises(ValueError, match="nosuch"):
        interpolate("SELECT 1 FROM x WHERE a =~ /^$nosuch$/", from_ms=0, to_ms=1, variables={})


@pytest.mark.parametrize("range_ms, expect", [(3600_000, 5000), (6 * 3600_000, 20000), (86400_000, 60000),
                                              (7 * 86400_000, 600000), (1000, 1000)])
def test_nice_interval(range_ms, expect):
    assert nice_interval_ms(range_ms) == expect


def test_panel_min_interval_wins():
    # a waste-bin trend reports every 900 s: $__interval never goes below it
    assert nice_interval_ms(86400_000, min_ms=900_000) == 900_000
    out = interpolate("SELECT 1 FROM x WHERE $timeFilter GROUP BY time($__interval)", from_ms=0, to_ms=86400_000,
                      min_interval_ms=900_000)
    assert out.endswith("GROUP BY time(15m)")
