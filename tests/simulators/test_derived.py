"""Derived fields (catalogue ``derived_from``): the simulator derives them as the firmware does, and a
fault on either field of a pair reaches both through the measured one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from kotacerdas import derived
from kotacerdas.catalogue import load_catalogue

from simulators import signals
from simulators.engine import GOOD

from .helpers import decoded, messages, small_scenario

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware" / "device" / "kc_drivers"


def _firmware(name: str):
    spec = importlib.util.spec_from_file_location(f"fw_{name}", FIRMWARE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_host_derivations_agree_with_the_firmware_twins():
    us, analog = _firmware("ultrasonic"), _firmware("analog")
    for d in (10.0, 25.0, 60.5, 119.9, 130.0, 400.0):
        assert derived.fill_from_distance(np.array(d), 120.0, 25.0) == us.fill_percent(d, 120.0, 25.0)
    assert analog.TDS_FACTOR == derived.TDS_FACTOR


def test_catalogue_names_the_pairs():
    cat = load_catalogue()
    assert cat["waste_bin"].partners("fill") == ("distance", "fill")
    assert cat["waste_bin"].partners("distance") == ("distance", "fill")
    assert cat["water"].partners("conductivity") == ("tds", "conductivity")
    assert cat["water"].partners("ph") == ("ph",)


def test_a_fill_fault_moves_the_distance_and_fill_is_re_derived():
    kind = load_catalogue()["waste_bin"]
    geo = signals.DEVICE_GEOMETRY["fill_from_distance"]
    dist = np.array([[100.0, 80.0, 60.0]])
    clean = {"distance": dist.copy(), "fill": derived.fill_from_distance(dist, **geo)}
    raw = {k: v.copy() for k, v in clean.items()}
    raw["fill"][0, 1] += 20.0  # an offset injected on fill alone
    signals.carry_to_source(kind, raw, clean)
    span = geo["depth_cm"] - geo["full_cm"]
    assert np.allclose(raw["distance"], [[100.0, 80.0 - 0.2 * span, 60.0]])
    assert np.allclose(raw["fill"], clean["fill"] + [[0.0, 20.0, 0.0]])
    # a fault on distance alone: fill follows it
    raw = {k: v.copy() for k, v in clean.items()}
    raw["distance"][0, 0] = 40.0  # stuck on an object under the lid
    signals.carry_to_source(kind, raw, clean)
    assert np.allclose(raw["fill"][0, 0], derived.fill_from_distance(np.array(40.0), **geo))


def test_streamed_fill_and_conductivity_are_always_the_derivations_of_what_was_measured():
    sc = small_scenario(faults={"offset": 6, "spike": 6, "drift": 4, "flatline": 4}, seed=11)
    run, msgs = messages(sc)
    cat = load_catalogue()
    geo = signals.DEVICE_GEOMETRY["fill_from_distance"]
    n_bin = n_water = 0
    for m in msgs:
        if m.cls != GOOD or m.kind not in ("waste_bin", "water"):
            continue
        f = decoded(m)["fields"]
        if m.kind == "waste_bin":
            want = float(derived.fill_from_distance(np.array(f["distance"]), **geo))
            # quantised separately: 0.1 cm of distance is 0.09 % of fill, plus 0.05 % rounding
            assert abs(f["fill"] - want) <= 0.2, f
            n_bin += 1
        else:
            want = float(derived.conductivity_from_tds(np.array(f["tds"])))
            assert abs(f["conductivity"] - want) <= cat["water"].field("conductivity").resolution + 2.0 / 0.5, f
            n_water += 1
    assert n_bin > 50 and n_water > 50
    labels = [json.loads(lb.to_json()) for lb in run.labels]
    pairs = [lb for lb in labels if lb["kind"] == "waste_bin" and lb["field"] in ("fill", "distance")]
    assert pairs, "seed 11 should put a value fault on a bin's fill or distance"
    for lb in pairs:  # each labelled with its partner: same device, window and type
        other = "distance" if lb["field"] == "fill" else "fill"
        assert any(o["device"] == lb["device"] and o["field"] == other and o["start"] == lb["start"]
                   and o["end"] == lb["end"] and o["type"] == lb["type"] for o in labels)
