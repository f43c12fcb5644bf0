import copy

import pytest
import yaml
from importlib import resources

from kotacerdas.catalogue import CatalogueError, load_catalogue, parse_catalogue


def _doc():
    return yaml.safe_load(resources.files("kotacerdas").joinpath("catalogue.yaml").read_text())


def test_three_kinds_with_fiware_models():
    cat = load_catalogue()
    assert cat.kind_names == ("water", "waste_bin", "air")
    assert cat["water"].fiware_type == "WaterQualityObserved"
    assert cat["waste_bin"].fiware_type == "WasteContainer"
    assert cat["air"].fiware_type == "AirQualityObserved"


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("water", {"ph", "turbidity", "tds", "conductivity", "dissolved_oxygen", "temperature", "chlorine"}),
        ("waste_bin", {"distance", "fill", "tilt", "temperature"}),
        ("air", {"pm25", "pm10", "co2", "no2", "o3", "co", "temperature", "humidity"}),
    ],
)
def test_fields_per_kind(kind, fields):
    assert set(load_catalogue()[kind].field_names) == fields


def test_every_field_is_consistent():
    for kind in load_catalogue():
        assert kind.department in {"water_utility", "waste_department", "environment_agency"}
        assert kind.report_interval_s > 0
        for f in kind.fields:
            assert f.lo < f.hi and f.lo <= f.expected_lo <= f.expected_hi <= f.hi
            assert f.resolution > 0 and f.unit
            # every field is either a model attribute, a WaterQualityObserved measurand, or
            # explicitly absent from the model (the raw ultrasonic distance behind fillingLevel)
            assert f.fiware or f.measurand or (kind.name, f.name) == ("waste_bin", "distance")
            assert f.in_range(f.typical)
        lo, hi = kind.ranges()
        assert len(lo) == len(hi) == len(kind.fields)


def test_fiware_names_and_units_follow_the_smart_data_models():
    cat = load_catalogue()
    assert cat["air"].field("humidity").fiware == "relativeHumidity"
    assert cat["air"].field("humidity").fiware_scale == 0.01
    assert cat["waste_bin"].field("fill").fiware == "fillingLevel"
    assert cat["waste_bin"].field("fill").fiware_scale == 0.01
    chlorine = cat["water"].field("chlorine")
    assert chlorine.fiware == "" and chlorine.measurand == "Cl2"
    assert cat["water"].field("conductivity").fiware_scale == 0.0001  # uS/cm -> S/m
    assert cat["water"].field("dissolved_oxygen").fiware == "O2"


def test_quantise_to_resolution():
    ph = load_catalogue()["water"].field("ph")
    assert ph.quantise(7.2134) == 7.21
    ds = load_catalogue()["water"].field("temperature")
    assert ds.quantise(27.03) == 27.0  # DS18B20 12-bit: 0.0625 C steps
    assert ds.quantise(27.04) == 27.0625


def test_unknown_field_lookup_raises():
    with pytest.raises(KeyError):
        load_catalogue()["air"].field("ph")


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["kinds"]["air"]["fields"]["pm25"].__setitem__("range", [10, 5]), "min must be < max"),
        (lambda d: d["kinds"]["air"]["fields"]["pm25"].__setitem__("expected", [-5, 10]), "expected range"),
        (lambda d: d["kinds"]["air"]["fields"]["pm25"].__setitem__("resolution", 0), "resolution"),
        (lambda d: d["kinds"]["air"]["fields"]["pm25"].pop("unit"), "bad field spec"),
        (lambda d: d["kinds"]["air"].__setitem__("fields", {}), "no fields"),
        (lambda d: d["kinds"]["air"].__setitem__("index", "caqi"), "index 'caqi'"),
        (lambda d: d["kinds"]["water"].__setitem__("limits", "river"), "limits 'river'"),
        (lambda d: d["kinds"]["waste_bin"].__setitem__("fill_level", "level"), "not one of its fields"),
        (lambda d: d["kinds"]["waste_bin"].__setitem__("fill_level", "distance"), "must be in %"),
        (lambda d: d["kinds"]["waste_bin"].__setitem__("short_id", "Bin/1"), "short_id 'Bin/1'"),
        (lambda d: d["kinds"]["waste_bin"].__setitem__("short_id", "air"), "short_id must differ"),
    ],
)
def test_bad_catalogue_refused_at_load(mutate, message):
    d = copy.deepcopy(_doc())
    mutate(d)
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(d)


def test_derived_products_are_catalogue_properties():
    cat = load_catalogue()
    assert [k.name for k in cat.with_index()] == ["air"] and cat["air"].index == "ispu"
    assert [k.name for k in cat.with_limits()] == ["water"] and cat["water"].limits == "drinking_water"
    assert [k.name for k in cat.with_fill_level()] == ["waste_bin"] and cat["waste_bin"].fill_level == "fill"
    # the part of generated device ids: the kind's name unless the catalogue gives a shorter one
    assert [(k.name, k.short_id) for k in cat] == [("water", "water"), ("waste_bin", "bin"), ("air", "air")]
