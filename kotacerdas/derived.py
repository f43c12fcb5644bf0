"""Fields a device computes from another field it measures (catalogue ``derived_from`` / ``derivation``).

A derived field is never measured on its own: a bin's ``fill`` is computed by the firmware from the
ultrasonic ``distance`` (firmware/device/kc_drivers/ultrasonic.py ``fill_percent``), a water
station's ``conductivity`` from its TDS reading (firmware/device/kc_drivers/analog.py ``TDS.read``).
So a sensor fault reaches both fields, through the measured one. This module is the one
host-side home of those conversions (the simulator and analytics use it); the firmware keeps its
MicroPython twin because it cannot import numpy or this package (tests/simulators checks they agree).

Every function takes and returns numpy arrays of any shape (element-wise), in catalogue units.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# TDS = 0.5 * EC (mg/L from uS/cm): the DFRobot SEN0244 wiki's conversion factor, which the
# firmware's TDS driver uses (TDS_FACTOR there) and the catalogue's conductivity range states.
TDS_FACTOR = 0.5

# A bin sensor's default geometry (firmware kc_sensors.py defaults, device_config "waste_bin" keys):
# distance from the sensor to the floor of the empty bin, and to the fill line (100 %).
DEPTH_CM = 120.0
FULL_CM = 25.0


def fill_from_distance(distance_cm: np.ndarray, depth_cm: float = DEPTH_CM, full_cm: float = FULL_CM) -> np.ndarray:
    """Fill % from the ultrasonic distance (cm): 0 % at the floor (``depth_cm``), 100 % at ``full_cm``,
    clipped to 0..100 as the firmware clips it."""
    span = depth_cm - full_cm
    if span <= 0:
        raise ValueError("depth_cm must exceed full_cm")
    return np.clip((depth_cm - np.asarray(distance_cm, dtype=np.float64)) / span * 100.0, 0.0, 100.0)


def conductivity_from_tds(tds_mg_l: np.ndarray) -> np.ndarray:
    """Electrical conductivity (uS/cm) from TDS (mg/L): EC = TDS / TDS_FACTOR."""
    return np.asarray(tds_mg_l, dtype=np.float64) / TDS_FACTOR


# catalogue ``derivation`` name -> the conversion (source array, **device geometry) -> derived array
DERIVATIONS: dict[str, Callable[..., np.ndarray]] = {
    "fill_from_distance": fill_from_distance,
    "conductivity_from_tds": conductivity_from_tds,
}
