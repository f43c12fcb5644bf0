from __future__ import annotations

from kotacerdas.routing import CityRouter, influx_for_city
from kotacerdas.settings import InfluxSettings, load_settings


def test_table_wins_default_otherwise_and_clients_are_shared() -> None:
    s = load_settings()
    s = s.model_copy(deep=True)
    a = InfluxSettings(url="http://10.0.0.1:8086", database="kc_a")
    s.routing.cities = {"bogor": a, "bekasi": a.model_copy(), "depok": s.influx.model_copy()}
    r = CityRouter(s)
    try:
        assert r.settings_for("bogor") is a
        assert r.settings_for("medan") is s.influx
        assert r.client_for("bogor") is r.client_for("bekasi")  # same URL + database: one pool
        assert r.client_for("depok") is r.client_for("medan")
        assert [t.url for t in r.targets()] == [s.influx.url, a.url]
        groups = r.group(["bogor", "depok", "bekasi", "medan"])
        assert sorted(map(sorted, groups.values())) == [["bekasi", "bogor"], ["depok", "medan"]]
    finally:
        r.close()
    assert influx_for_city(s, "bogor") is a
    assert influx_for_city(s.model_copy(update={"city": "bekasi"})).database == "kc_a"


def test_routing_table_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("KC_ROUTING__CITIES", '{"bogor": {"url": "http://127.0.0.1:9999", "database": "kc_bogor"}}')
    s = load_settings()
    assert influx_for_city(s, "bogor").database == "kc_bogor"
    assert influx_for_city(s, "depok") == s.influx
