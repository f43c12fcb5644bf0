import numpy as np

from kotacerdas.catalogue import load_catalogue

from simulators import signals
from simulators.fleet import build_fleet
from simulators.signals import HOUR_MS, Weather

from .helpers import NOW_MS, decoded, messages, small_scenario

CAT = load_catalogue()


def _local_ms(day_ms: int, hour: float) -> int:
    return int(day_ms + (hour - 7.0) * HOUR_MS)  # WIB = UTC+7


def test_every_catalogue_field_is_generated_quantised_and_in_range():
    sc = small_scenario(faults={})
    _, msgs = messages(sc)
    assert msgs
    for m in msgs:
        kind = CAT[m.topic.split("/")[3]]
        fields = decoded(m)["fields"]
        assert tuple(fields) == kind.field_names
        for name, v in fields.items():
            f = kind.field(name)
            assert f.lo <= v <= f.hi
            steps = v / f.resolution
            assert abs(steps - round(steps)) < 1e-6, (name, v)


def test_rush_hour_raises_pm25_and_no2_and_ozone_peaks_midday():
    sc = small_scenario(faults={})
    fl = build_fleet(sc)["air"]
    day = (NOW_MS // 86_400_000) * 86_400_000
    t = np.array([[_local_ms(day, 3.0), _local_ms(day, 7.5), _local_ms(day, 13.5), _local_ms(day, 18.5)]] * fl.n,
                 dtype=np.int64)
    w = Weather(1, NOW_MS - 86_400_000, NOW_MS, 7)
    w.starts = w.starts[:0]  # no rain in this comparison
    v = signals.generate(CAT["air"], fl, t, w, 7.0, None)
    night, morning, noon, evening = v["pm25"].mean(axis=0)
    assert morning > 1.5 * night and evening > 1.4 * night
    assert v["no2"][:, 1].mean() > v["no2"][:, 0].mean()
    assert v["o3"][:, 2].mean() > 2 * v["o3"][:, 0].mean()


def test_bins_fill_by_site_type_and_are_emptied_on_schedule():
    sc = small_scenario(kinds={"waste_bin": {"count": 60}}, faults={})
    fl = build_fleet(sc)["waste_bin"]
    t = (NOW_MS - 3 * 86_400_000 + np.arange(0, 72 * 4) * 900_000)[None, :].repeat(fl.n, 0)
    fill = signals.bin_fill(fl, signals.Clock.of(t, 7.0))
    assert fill.min() >= 0 and fill.max() <= 100
    drops = (np.diff(fill, axis=1) < -10).sum(axis=1)  # a collection empties the bin
    market = fl.site == 0
    residential = fl.site == 1
    assert market.any() and residential.any()
    # three days: markets are collected twice a day, homes once a day
    assert drops[market].mean() > drops[residential].mean() >= 2
    rate = np.diff(fill, axis=1).clip(0, None).mean(axis=1)
    assert rate[market].mean() > rate[residential].mean()


def test_rain_raises_water_turbidity_after_a_lag():
    sc = small_scenario(kinds={"water": {"count": 10}}, faults={})
    fl = build_fleet(sc)["water"]
    w = Weather(1, NOW_MS - 86_400_000, NOW_MS, 7)
    w.starts = np.array([NOW_MS - 10 * HOUR_MS], dtype=float)
    w.durs = np.array([2 * HOUR_MS], dtype=float)
    w.peaks = np.array([1.0])
    t = np.array([[NOW_MS - 11 * HOUR_MS, NOW_MS - 7.5 * HOUR_MS]] * fl.n, dtype=np.int64)
    v = signals.generate(CAT["water"], fl, t, w, 7.0, None)
    assert (v["turbidity"][:, 1] > v["turbidity"][:, 0] + 20).all()


def test_quantise_rounds_to_resolution_without_binary_noise():
    f = CAT["water"].field("ph")
    q = signals.quantise(f, np.array([7.2149, 7.21000000001, -3.0, 99.0]))
    assert q.tolist() == [7.21, 7.21, 0.0, 14.0]
    t = CAT["water"].field("temperature")
    assert signals.quantise(t, np.array([27.03])).tolist() == [27.0]
