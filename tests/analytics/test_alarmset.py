"""What the service writes as alarms is what `analytics evaluate` scores (analytics/alarmset.py)."""

from __future__ import annotations

import pytest

from analytics import alarmset, episodes
from analytics.evaluate import DETECTORS_FOR, RULE_DETECTORS
from analytics.service import AnalyticsService
from kotacerdas.influx import InfluxClient
from tests.analytics.test_service import NOW, telemetry_lines


@pytest.mark.unit
def test_default_set_is_what_evaluate_scores_plus_the_data_quality_tests():
    scored = {d for dets in DETECTORS_FOR.values() for d in dets} - set(RULE_DETECTORS)
    assert scored | set(alarmset.DATA_QUALITY) == alarmset.DEFAULT
    assert alarmset.written() == alarmset.DEFAULT
    assert not set(alarmset.OPT_IN) & alarmset.DEFAULT


@pytest.mark.unit
def test_every_written_test_has_an_episode_type_and_opt_ins_never_share_a_scored_one():
    assert set(episodes.FAULT_OF) == set(alarmset.ALL)
    default_types = {episodes.FAULT_OF[t] for t in alarmset.DEFAULT}
    assert not {episodes.FAULT_OF[t] for t in alarmset.OPT_IN} & default_types
    # the scored groups' names: a shift episode is the shift test only, a drift episode the trend test
    assert [t for t, f in episodes.FAULT_OF.items() if f == "shift"] == ["shift"]
    assert [t for t, f in episodes.FAULT_OF.items() if f == "drift"] == ["trend"]


@pytest.mark.unit
def test_opt_in_by_name_and_unknown_names_refused():
    assert alarmset.written(["cusum"]) == alarmset.DEFAULT | {"cusum"}
    with pytest.raises(ValueError, match="cusm"):
        alarmset.written(["cusm"])


def _fault_lines() -> list[str]:
    """Four bins over four days; bin-1 has one off-cycle reading (Hampel's), bin-0 reads 3 C high the
    last day (EWMA / CUSUM and the neighbour drift test fire on it with the opt-in)."""
    day_n, n = 96, 4 * 96
    lines: list[str] = []
    for d in range(4):
        def value(name: str, i: int, d: int = d) -> float:
            if name != "temperature":
                return {"fill": 40.0, "distance": 150.0, "tilt": 0.0}[name]
            v = 32.0 + 2.0 * (((i % day_n) / day_n) - 0.5) + 0.1 * ((i * 7 + d * 3) % 5 - 2)
            v += 100.0 if (d == 1 and i == 2 * day_n + 10) else 0.0
            v += 3.0 if (d == 0 and i >= 3 * day_n) else 0.0
            return round(v, 1)
        lines += telemetry_lines("waste_bin", f"bin-{d}", n, 900, value)
    return lines


def _written(influx, measurement: str, key: str) -> set[str]:
    got = influx.series(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"')
    return set(got[0].column("value")) if got else set()


def _pass(settings) -> None:
    svc = AnalyticsService(settings)
    try:
        svc.run_pass(now_ms=NOW, window_s=4 * 86400)
    finally:
        svc.close()


def test_a_pass_writes_no_verdict_or_episode_outside_the_scored_set(settings, influx, tmp_path):
    lines = _fault_lines()
    influx.write(lines)
    _pass(settings)
    tests = _written(influx, "qc", "test")
    assert tests, "the faults raise some verdict"
    assert tests <= alarmset.DEFAULT
    assert _written(influx, "qc_episode", "fault") <= {episodes.FAULT_OF[t] for t in alarmset.DEFAULT}
    # the same data with the opt-ins on raises them: their absence above is the default, not the data
    other = settings.model_copy(deep=True)
    other.influx.database = settings.influx.database + "_optin"
    other.state_dir = tmp_path / "state_optin"
    other.analytics.extra_tests = list(alarmset.OPT_IN)
    with InfluxClient(other.influx) as c2:
        c2.create_database()
        try:
            c2.write(lines)
            _pass(other)
            opted = _written(c2, "qc", "test")
            faults = _written(c2, "qc_episode", "fault")
        finally:
            c2.drop_database(other.influx.database)
    assert opted & set(alarmset.OPT_IN)
    assert opted <= alarmset.DEFAULT | set(alarmset.OPT_IN)
    assert faults & {episodes.FAULT_OF[t] for t in alarmset.OPT_IN}


@pytest.mark.unit
def test_all_alarms_row_counts_each_untouched_run_of_any_written_test_once():
    import numpy as np

    from analytics.evaluate import ALL_ALARMS, new_rows, score_field
    from kotacerdas.catalogue import load_catalogue

    kind = load_catalogue()["air"]
    step = kind.report_interval_s * 1000
    t = 200
    times = np.arange(t, dtype=np.int64) * step
    spike, shift, rule = (np.zeros((2, t), dtype=bool) for _ in range(3))
    spike[0, 10] = shift[0, 10:20] = True  # one run seen by two tests: one false alarm
    shift[1, 50:60] = True  # a second false alarm
    spike[1, 100] = True  # on the label below: not false
    rule[1, 150:160] = True  # an alert rule, not a `qc` test: not in the row
    label = {"device": "b", "kind": "air", "field": "pm25", "start": int(times[100]), "end": int(times[101]),
             "type": "spike"}
    rows = new_rows()
    score_field(rows, kind, "pm25", {"spike": spike, "shift": shift, "ispu_unhealthy": rule}, times, 1.0,
                {"a": 0, "b": 1}, [label])
    assert rows[ALL_ALARMS].false_runs == 2
    assert rows[ALL_ALARMS].false_per_sensor_day == 1.0  # two series x one day


@pytest.mark.unit
def test_station_test_is_scored_only_when_opted_in():
    """The station test (analytics/multivariate.py) is opt-in: by default `evaluate` neither runs it
    nor counts it; opted in, its verdicts on an unlabelled relationship fault are false alarms in
    the all-alarms row, as the service would write them."""
    from analytics.evaluate import ALL_ALARMS, evaluate
    from tests.analytics.test_multivariate import T, _stations

    x = _stations()
    data = {("air", f"air-{d}"): [(i * 60_000, {"pm25": float(x[d, 0, i]), "pm10": float(x[d, 1, i]),
                                                "co": float(x[d, 2, i])}) for i in range(T)]
            for d in range(x.shape[0])}
    assert DETECTORS_FOR["correlated"] == ("shift",)
    rows = {r.type: r for r in evaluate(data, [])}
    opted = {r.type: r for r in evaluate(data, [], extra_tests=["multivariate"])}
    # the fault's two hours are unlabelled here: the station test's runs on its fields are false
    assert opted[ALL_ALARMS].false_runs >= rows[ALL_ALARMS].false_runs + 1
    assert rows["correlated"].false_runs == opted["correlated"].false_runs  # scored by shift alone
