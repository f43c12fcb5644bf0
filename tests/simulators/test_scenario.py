import pytest

from kotacerdas.catalogue import load_catalogue

from simulators.fleet import device_records
from simulators.scenario import MAX_SPAN_S, ScenarioError, list_scenarios, load_scenario, parse_scenario


def test_shipped_scenarios_load_and_demo_is_small():
    names = dict(list_scenarios())
    assert {"demo", "depok"} <= set(names)
    demo = load_scenario("demo")
    assert all(k.count <= 10 for k in demo.kinds)
    assert 10 <= demo.duration_s <= 30
    assert demo.faults["malformed"] > 0 and demo.faults["out_of_range"] > 0 and demo.faults["unknown_device"] > 0


def test_depok_covers_all_districts_and_is_city_sized():
    sc = load_scenario("depok")
    counts = {k.kind: k.count for k in sc.kinds}
    assert counts["air"] >= 200 and counts["waste_bin"] >= 1000 and counts["water"] >= 50
    recs = device_records(sc)
    districts = {r["district"] for r in recs}
    assert districts == {"Beji", "Bojongsari", "Cilodong", "Cimanggis", "Cinere", "Cipayung", "Limo",
                         "Pancoran Mas", "Sawangan", "Sukmajaya", "Tapos"}
    assert len({r["device"] for r in recs}) == len(recs)


def test_report_interval_defaults_to_catalogue():
    cat = load_catalogue()
    sc = parse_scenario({"kinds": {"air": {"count": 1}, "waste_bin": {"count": 1, "interval_s": 60}}})
    by = {k.kind: k for k in sc.kinds}
    assert by["air"].interval_s == cat["air"].report_interval_s
    assert by["waste_bin"].interval_s == 60


@pytest.mark.parametrize("doc, words", [
    ({"kinds": {"plasma": {"count": 1}}}, "not a catalogue kind"),
    ({"kinds": {}}, "no devices"),
    ({"kinds": {"air": {"count": 1}}, "span_s": MAX_SPAN_S + 1}, "span_s"),
    ({"kinds": {"air": {"count": 1}}, "faults": {"gremlins": 1}}, "unknown type"),
    ({"kinds": {"air": {"count": 1}}, "city": "atlantis"}, "no built-in districts"),
    ({"kinds": {"air": {"count": 1}}, "qos": 2}, "qos"),
])
def test_invalid_scenarios_are_refused_with_the_key(doc, words):
    with pytest.raises(ScenarioError, match=words):
        parse_scenario(doc)


def test_unknown_scenario_name_lists_shipped():
    with pytest.raises(ScenarioError, match="demo"):
        load_scenario("no-such-scenario")


def test_with_duration_keeps_acceleration():
    sc = load_scenario("demo")
    s2 = sc.with_duration(sc.duration_s / 2)
    assert s2.acceleration == pytest.approx(sc.acceleration)
    assert s2.span_s == pytest.approx(sc.span_s / 2)


def test_device_export_matches_the_gateway_schema():
    recs = device_records(load_scenario("demo"))
    cat = load_catalogue()
    for r in recs:
        assert set(r) == {"device", "kind", "city", "district", "lat", "lon", "department"}
        assert r["department"] == cat[r["kind"]].department
        assert -7 < r["lat"] < -6 and 106 < r["lon"] < 107


@pytest.mark.parametrize("name", [n for n, _ in list_scenarios()])
def test_every_shipped_scenario_produces_valid_traffic(name):
    from kotacerdas import contract

    from simulators.engine import GOOD, Run

    sc = load_scenario(name)
    sc = sc.with_duration(min(sc.duration_s, 300.0 / sc.acceleration))  # a few simulated minutes
    now = 1_795_000_000_000
    run = Run(sc, "kc", now)
    good = [m for m in run.messages(births=False) if m.cls == GOOD]
    assert good
    for m in good[:2000]:
        assert contract.validate_telemetry(m.topic, m.payload, now, root="kc")
