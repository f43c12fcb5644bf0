"""Catalogue unit strings -> Grafana unit ids.

Grafana's unit ids are the ones its unit picker stores in ``fieldConfig.defaults.unit``
(``celsius``, ``percent``, ``volt``, ``ppm``, ``conμgm3`` ...). Units Grafana has no id
for (pH, NTU, mg/L, cm, uS/cm) use its ``suffix:<text>`` custom-unit syntax so the
panel still shows the catalogue's unit next to the number.
"""

from __future__ import annotations

from kotacerdas.catalogue import Field

_GRAFANA_UNIT: dict[str, str] = {
    "Cel": "celsius",
    "%": "percent",
    "V": "volt",
    "ppm": "ppm",
    "ug/m3": "conμgm3",
    "1": "none",
    "pH": "suffix: pH",
    "NTU": "suffix: NTU",
    "mg/L": "suffix: mg/L",
    "uS/cm": "suffix: µS/cm",
    "cm": "suffix: cm",
}


class UnknownUnit(KeyError):
    pass


def grafana_unit(catalogue_unit: str) -> str:
    """Grafana unit id; raises :class:`UnknownUnit` so a new catalogue unit is noticed at build time."""
    try:
        return _GRAFANA_UNIT[catalogue_unit]
    except KeyError:
        raise UnknownUnit(f"no Grafana unit mapping for catalogue unit {catalogue_unit!r}; add it to dashboards/units.py") from None


def field_unit(f: Field) -> str:
    return grafana_unit(f.unit)


def known_units() -> frozenset[str]:
    return frozenset(_GRAFANA_UNIT)
