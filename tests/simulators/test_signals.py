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


def test_rush_hour_and_night_raise_pm25_no2_follows_traffic_and_ozone_peaks_midday():
    sc = small_scenario(faults={})
    fl = build_fleet(sc)["air"]
    day = (NOW_MS // 86_400_000) * 86_400_000
    t = np.array([[_local_ms(day, 3.0), _local_ms(day, 7.5), _local_ms(day, 13.5), _local_ms(day, 18.5)]] * fl.n,
                 dtype=np.int64)
    w = Weather(1, NOW_MS - 86_400_000, NOW_MS, 7)
    w.starts = w.starts[:0]  # no rain in this comparison
    v = signals.generate(CAT["air"], fl, t, w, 7.0, None)
    night, morning, noon, evening = v["pm25"].mean(axis=0)
    # PM2.5: rush hours and the night-time build-up stand above the well-mixed afternoon
    assert morning > 1.3 * noon and evening > 1.3 * noon and night > 1.3 * noon
    assert v["no2"][:, 1].mean() > v["no2"][:, 0].mean()
    assert v["o3"][:, 2].mean() > 2 * v["o3"][:, 0].mean()


def test_bins_fill_at_their_site_rate_and_are_emptied_on_schedule():
    sc = small_scenario(kinds={"waste_bin": {"count": 90}}, faults={})
    fl = build_fleet(sc)["waste_bin"]
    t = (NOW_MS - 7 * 86_400_000 + np.arange(0, 7 * 24 * 4) * 900_000)[None, :].repeat(fl.n, 0)
    fill = signals.bin_fill(fl, signals.Clock.of(t, 7.0))
    assert fill.min() >= 0 and fill.max() <= 100
    drops = (np.diff(fill, axis=1) < -4).sum(axis=1)  # a collection empties the bin
    market, household, communal = (fl.site == i for i in range(3))
    assert market.any() and household.any() and communal.any()
    # a week: markets daily, communal points every two days, households twice a week
    assert drops[market].mean() > drops[communal].mean() > drops[household].mean() >= 1
    # fill rate while filling, % per day (before a bin reaches 100 %)
    step = np.diff(fill, axis=1)
    filling = (step > 0) & (fill[:, 1:] < 99.9)
    per_day = np.array([step[i][filling[i]].mean() * 96 for i in range(fl.n)])
    assert 4.99 <= per_day[household].min() and per_day[household].max() <= 12.01 and 6 <= np.median(per_day[household]) <= 10
    assert 39.99 <= per_day[communal].min() and per_day[communal].max() <= 75.01
    assert 59.99 <= per_day[market].min() and per_day[market].max() <= 150.01


def test_pm25_climatology_night_build_up_and_annual_mean():
    sc = small_scenario(kinds={"air": {"count": 4}}, faults={})
    fl = build_fleet(sc)["air"]
    fl.level[:] = 1.0  # a typical site
    year0 = (NOW_MS // 86_400_000) * 86_400_000 - 365 * 86_400_000
    t = (year0 + np.arange(0, 365 * 24) * HOUR_MS)[None, :].repeat(fl.n, 0)
    w = Weather(1, year0, year0 + 366 * 86_400_000, 7)
    v = signals.generate(CAT["air"], fl, t, w, 7.0, None)["pm25"]
    c = signals.Clock.of(t, 7.0)
    assert 40 <= v.mean() <= 50
    month = np.floor(c.doy / (365.2425 / 12)).astype(int)[0]
    monthly = np.array([v[:, month == m].mean() for m in range(12)])
    assert 48 <= monthly[6:8].max() <= 58  # dry season (July, August)
    assert 13 <= monthly[:2].min() <= 21  # wet season (January, February)
    hour = np.floor(c.hour[0]).astype(int)
    night, afternoon = v[:, hour == 1].mean(), v[:, hour == 14].mean()
    assert night > 1.4 * afternoon  # build-up under the night-time boundary layer


def test_treated_water_ignores_rain_and_stays_compliant_without_faults():
    from kotacerdas.standards import WATER_LIMITS

    sc = small_scenario(kinds={"water": {"count": 200}}, faults={})
    fl = build_fleet(sc)["water"]
    w = Weather(1, NOW_MS - 86_400_000, NOW_MS, 7)
    w.starts = np.array([NOW_MS - 10 * HOUR_MS], dtype=float)
    w.durs = np.array([2 * HOUR_MS], dtype=float)
    w.peaks = np.array([1.0])
    t = np.array([[NOW_MS - 11 * HOUR_MS, NOW_MS - 7.5 * HOUR_MS]] * fl.n, dtype=np.int64)
    v = signals.generate(CAT["water"], fl, t, w, 7.0, None)
    assert np.allclose(v["turbidity"][:, 1], v["turbidity"][:, 0])  # the storm does not reach treated water
    # a day of noisy readings at 200 sites: nothing outside the Permenkes limits unless a fault is injected
    t = (NOW_MS - 86_400_000 + np.arange(0, 24 * 60) * 60_000)[None, :].repeat(fl.n, 0)
    v = signals.generate(CAT["water"], fl, t, w, 7.0, np.random.default_rng(5))
    for p, lim in WATER_LIMITS.items():
        q = signals.quantise(CAT["water"].field(p), v[p])
        assert (q < lim.hi if not lim.hi_inclusive else q <= lim.hi).all(), p
        if lim.lo is not None:
            assert (q >= lim.lo).all(), p


def test_quantise_rounds_to_resolution_without_binary_noise():
    f = CAT["water"].field("ph")
    q = signals.quantise(f, np.array([7.2149, 7.21000000001, -3.0, 99.0]))
    assert q.tolist() == [7.21, 7.21, 0.0, 14.0]
    t = CAT["water"].field("temperature")
    assert signals.quantise(t, np.array([27.03])).tolist() == [27.0]


def test_models_and_fault_fields_follow_catalogue_properties_not_kind_names():
    import dataclasses

    from kotacerdas.catalogue import INDEX_FAMILIES, LIMIT_SETS

    from simulators import faults

    assert set(signals.MODELS_BY_INDEX) == set(INDEX_FAMILIES) and set(signals.MODELS_BY_LIMITS) == set(LIMIT_SETS)
    # a kind renamed by an operator keeps its physics: the model comes from what it is
    renamed = {dataclasses.replace(k, name=k.name + "_x") for k in CAT}
    assert {signals.model_of(k) for k in renamed} == {signals.model_of(k) for k in CAT} and None not in {
        signals.model_of(k) for k in CAT}
    plain = dataclasses.replace(CAT["air"], index="")
    assert signals.model_of(plain) is None and faults.index_pollutants(plain) == ()
    assert faults.index_pollutants(CAT["air"]) == ("pm25", "pm10", "no2", "o3", "co")
    assert faults.regulated_fields(CAT["water"]) == ("ph", "turbidity", "tds", "chlorine")
    assert faults.regulated_fields(dataclasses.replace(CAT["water"], limits="")) == ()
    assert set(faults.EPISODE_POLLUTANTS) <= set(faults.index_pollutants(CAT["air"]))


def test_contamination_and_episode_hit_only_the_fields_the_plan_names():
    sc = small_scenario(faults={"contamination": 2, "pollution_episode": 1})
    run, _ = messages(sc)
    cont = [f for f in run.plan.faults if f.type == "contamination"]
    pol = [f for f in run.plan.faults if f.type == "pollution_episode"]
    assert cont and pol
    assert all(set(f.params["shift"]) == {"ph", "turbidity"} for f in cont)
    assert all(f.params["fields"] == ["pm25", "no2"] for f in pol)
    assert {lb.field for f in cont for lb in f.labels} == {"ph", "turbidity"}
