"""The five Kota Cerdas dashboards, built over the sensor catalogue.

Every telemetry panel is derived from the catalogue (fields, units, expected ranges,
departments, report intervals); the air, water and waste boards show the kind with an
``index``, ``limits`` or ``fill_level`` (catalogue properties, not kind names). Derived panels
read the measurements of :mod:`kotacerdas.measurements`; the field names in the query text
are checked against those schemas by :func:`kotacerdas.measurements.query_problems`
(dashboards.validate and the unit tests).
"""

from __future__ import annotations

from typing import Any

from kotacerdas import measurements as M
from kotacerdas.catalogue import Catalogue, Kind, load_catalogue
from kotacerdas.standards import QARTOD_SUSPECT

from dashboards import standards as std
from dashboards.model import Dashboard, Link, Panel, Row, Target, Variable
from dashboards.queries import tag_values, where
from dashboards.units import field_unit, grafana_unit

BINS_DUE_TITLE = f"Bins due now (fill >= {std.BIN_FILL_DUE:g} %)"

GAZETTEER = "public/gazetteer/kotacerdas-devices.json"

P_MAX = f"\"pollutant\" = '{M.POLLUTANT_MAX}'"
P_NOT_MAX = f"\"pollutant\" != '{M.POLLUTANT_MAX}'"
PARAM_ALL = f"\"parameter\" = '{M.PARAMETER_ALL}'"
PARAM_NOT_ALL = f"\"parameter\" != '{M.PARAMETER_ALL}'"

UID = {"air": "kc-air", "water": "kc-water", "waste": "kc-waste", "fleet": "kc-fleet", "pipeline": "kc-pipeline"}

# Indonesia centre view; "fit to data" takes over once the gazetteer has devices
_MAP_VIEW = {"id": "fit", "lat": -6.4, "lon": 106.82, "zoom": 11, "allLayers": True, "padding": 10, "maxZoom": 15}


def device_variables(measurement: str) -> list[Variable]:
    return [
        Variable("city", "Kota", tag_values(measurement, "city")),
        Variable("district", "Kecamatan", tag_values(measurement, "district", ("city",))),
        Variable("device", "Perangkat", tag_values(measurement, "device", ("city", "district"))),
    ]


def fleet_link() -> Link:
    # data link from any device cell/series to that device's fleet health view
    return Link("Fleet health of ${__data.fields.device}",
                f"/d/{UID['fleet']}/?var-device=${{__data.fields.device}}&${{__url_time_range}}")


def _geomap(title: str, target: Target, value_field: str, *, unit: str | None, thresholds: list[dict],
            mappings: list[dict] | None = None, description: str = "") -> Panel:
    return Panel(
        title, "geomap", [target], w=12, h=12, unit=unit, thresholds=thresholds, mappings=mappings or [],
        color_mode="thresholds", description=description, links=[fleet_link()],
        options={
            "view": dict(_MAP_VIEW),
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "osm-standard", "name": "OpenStreetMap"},
            "layers": [{
                "type": "markers",
                "name": title,
                # station coordinates come from the device registry export (gazetteer),
                # since telemetry carries only tags device/city/district
                "location": {"mode": "lookup", "lookup": "device", "gazetteer": GAZETTEER},
                "config": {
                    "showLegend": True,
                    "style": {
                        "color": {"field": value_field, "fixed": "dark-green"},
                        "size": {"fixed": 8, "min": 6, "max": 14},
                        "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                        "text": {"field": value_field, "mode": "field"},
                        "textConfig": {"fontSize": 10, "offsetY": -14, "textAlign": "center", "textBaseline": "bottom"},
                        "opacity": 0.8,
                    },
                },
                "tooltip": True,
            }],
            "tooltip": {"mode": "details"},
        },
    )


def _trend(kind: Kind, name: str, *, w: int = 12) -> Panel:
    f = kind.field(name)
    regulated = std.water_limit_steps(name) if kind.limits else None
    if regulated:
        lo, hi, _ = std.WATER_LIMITS[name]
        limit = f"{lo:g}-{hi:g}" if lo is not None else f"< {hi:g}"
        return Panel(
            f"{name} ({f.unit})", "timeseries",
            [Target(f'SELECT mean("{name}") FROM "{kind.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                    alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
            w=w, h=8, unit=field_unit(f), links=[fleet_link()],
            description=f"{f.sensor}. Permenkes 2/2023 drinking-water limit {limit} {f.unit} (red outside).",
            thresholds=regulated,
            custom={"thresholdsStyle": {"mode": "line+area"}, "spanNulls": 3 * k_ms(kind), "lineWidth": 1,
                    "fillOpacity": 0},
            interval=f"{kind.report_interval_s}s",
        )
    return Panel(
        f"{name} ({f.unit})", "timeseries",
        [Target(f'SELECT mean("{name}") FROM "{kind.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
        w=w, h=8, unit=field_unit(f), links=[fleet_link()],
        description=f"{f.sensor}. Expected span {f.expected_lo:g}-{f.expected_hi:g} {f.unit} (dashed band).",
        thresholds=[{"color": "orange", "value": None}, {"color": "transparent", "value": f.expected_lo},
                    {"color": "orange", "value": f.expected_hi}],
        custom={"thresholdsStyle": {"mode": "dashed"}, "spanNulls": 3 * k_ms(kind), "lineWidth": 1},
        # never aggregate finer than the devices report (else every other bucket is empty)
        interval=f"{kind.report_interval_s}s",
    )


def k_ms(kind: Kind) -> int:
    return kind.report_interval_s * 1000


def _alerts(department: str) -> Panel:
    return Panel(
        "Alerts (latest first)", "table",
        [Target(f'SELECT "severity", "rule", "device", "district", "state", "value", "concentration", '
                f'"concentration_unit", "threshold", "text_id", "text_en" FROM "{M.ALERTS.name}" '
                f"WHERE \"department\" = '{department}' AND \"device\" =~ /^$device$/ AND $timeFilter "
                f"ORDER BY time DESC LIMIT 100",
                result_format="table", expect_columns=("time", "severity", "rule", "device", "state", "text_id"))],
        w=24, h=8, links=[fleet_link()],
        mappings=[{"type": "value", "options": {"resolved": {"color": "green", "index": 0},
                                                 "open": {"color": "red", "index": 1},
                                                 "update": {"color": "orange", "index": 2}}}],
    )


def _qc_anomalies(kind: Kind) -> list[Panel]:
    qc_where = where(f"\"kind\" = '{kind.name}'", f'"flag" >= {QARTOD_SUSPECT}')
    return [
        Panel("Flagged readings (QARTOD suspect/fail) per field", "timeseries",
              [Target(f'SELECT count("flag") FROM "{M.QC.name}" {qc_where} GROUP BY time($__interval), "field" fill(0)',
                      alias="$tag_field", expect_columns=("time", "count"), expect_group_by=("field",))],
              w=12, custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal", "group": "A"}}),
        Panel("Latest anomalies", "table",
              [Target(f'SELECT last("flag") AS "flag", last("score") AS "score" FROM "{M.QC.name}" {qc_where} '
                      f'GROUP BY "device", "field", "test"',
                      result_format="table", expect_columns=("time", "flag", "score"),
                      expect_group_by=("device", "field", "test"))],
              w=12, links=[fleet_link()],
              mappings=[{"type": "value", "options": {str(v): {"text": t, "color": c, "index": i}
                                                      for i, (v, t, c) in enumerate(std.QARTOD_FLAGS)}}],
              transformations=[{"id": "sortBy", "options": {"sort": [{"field": "Time", "desc": True}]}}]),
    ]


def air_dashboard(cat: Catalogue) -> Dashboard:
    air = cat.single(cat.with_index(), "an air-quality index")
    ispu_steps = std.threshold_steps(std.ISPU_BANDS)
    station = Target(
        f'SELECT last("value") AS "ispu", last("category") AS "category", last("category_level") AS "level" '
        f"FROM \"{M.ISPU.name}\" {where(P_MAX)} GROUP BY \"device\"",
        result_format="table", expect_columns=("time", "ispu", "category", "level"), expect_group_by=("device",))
    per_pollutant = Target(
        f'SELECT last("value") AS "ispu", last("category") AS "category", last("concentration") AS "concentration" '
        f"FROM \"{M.ISPU.name}\" {where(P_NOT_MAX)} GROUP BY \"device\", \"pollutant\"",
        result_format="table", expect_columns=("time", "ispu", "category", "concentration"),
        expect_group_by=("device", "pollutant"))
    trends = [_trend(air, f.name) for f in air.fields]
    return Dashboard(
        UID["air"], "Kota Cerdas - Kualitas Udara (ISPU)",
        "Air quality stations: ISPU (Permen LHK P.14/2020) per station, US AQI for comparison, pollutant trends.",
        rows=[
            Row("ISPU now", [
                _geomap("ISPU per station", station, "ispu", unit="none", thresholds=ispu_steps,
                        description="Overall station ISPU (max over pollutants), coloured by the regulation's categories."),
                Panel("ISPU per station", "bargauge", [station], w=12, h=12, unit="none", min=0, max=500,
                      thresholds=ispu_steps, color_mode="thresholds", links=[fleet_link()],
                      options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^ispu$/", "values": True}}),
            ]),
            Row("ISPU over time", [
                Panel("ISPU (max over pollutants)", "timeseries",
                      [Target(f'SELECT max("value") FROM "{M.ISPU.name}" {where(P_MAX)} '
                              f'GROUP BY time($__interval), "device" fill(null)',
                              alias="$tag_device", expect_columns=("time", "max"), expect_group_by=("device",))],
                      w=12, unit="none", min=0, thresholds=ispu_steps, color_mode="palette-classic",
                      custom={"thresholdsStyle": {"mode": "area"}, "fillOpacity": 0}, links=[fleet_link()]),
                Panel("US AQI (comparison)", "timeseries",
                      [Target(f'SELECT max("value") FROM "{M.AQI_US.name}" {where(P_MAX)} '
                              f'GROUP BY time($__interval), "device" fill(null)',
                              alias="$tag_device", expect_columns=("time", "max"), expect_group_by=("device",))],
                      w=12, unit="none", min=0, thresholds=std.threshold_steps(std.AQI_US_BANDS),
                      custom={"thresholdsStyle": {"mode": "area"}, "fillOpacity": 0}),
                Panel("ISPU per pollutant (latest)", "table", [per_pollutant], w=24, h=8, unit="none",
                      thresholds=ispu_steps, mappings=std.text_mappings(std.ISPU_BANDS), links=[fleet_link()],
                      overrides=[{"matcher": {"id": "byName", "options": "ispu"},
                                  "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                                 {"matcher": {"id": "byName", "options": "concentration"},
                                  "properties": [{"id": "unit", "value": grafana_unit("ug/m3")}]}]),
            ]),
            Row("Pollutant and weather trends", trends),
            Row("Data quality and alerts", [*_qc_anomalies(air), _alerts(air.department)]),
        ],
        variables=device_variables(air.measurement), extra_tags=("air",),
    )


def water_dashboard(cat: Catalogue) -> Dashboard:
    water = cat.single(cat.with_limits(), "drinking-water limits")
    compliant_map = [{"type": "value", "options": {"0": {"text": "Tidak memenuhi", "color": "red", "index": 0},
                                                   "1": {"text": "Memenuhi", "color": "green", "index": 1}}}]
    status = Target(
        f'SELECT last("compliant") AS "compliant" FROM "{M.WATER_COMPLIANCE.name}" {where(PARAM_ALL)} '
        f'GROUP BY "device"',
        result_format="table", expect_columns=("time", "compliant"), expect_group_by=("device",))
    return Dashboard(
        UID["water"], "Kota Cerdas - Jaringan Air (Water network)",
        "Water quality per sampling point, compliance with the drinking-water limits applied by analytics "
        "(Permenkes 2/2023), and anomalies flagged by QARTOD quality control.",
        rows=[
            Row("Compliance now", [
                _geomap("Compliance per sampling point", status, "compliant", unit="none",
                        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
                        mappings=compliant_map),
                Panel("Compliance per parameter (latest)", "table",
                      [Target(f'SELECT last("value") AS "value", last("limit_lo") AS "limit_lo", last("limit_hi") AS "limit_hi", '
                              f'last("compliant") AS "compliant" FROM "{M.WATER_COMPLIANCE.name}" '
                              f"{where(PARAM_NOT_ALL)} GROUP BY \"device\", \"parameter\"",
                              result_format="table", expect_columns=("time", "value", "limit_lo", "limit_hi", "compliant"),
                              expect_group_by=("device", "parameter"))],
                      w=12, h=12, links=[fleet_link()],
                      overrides=[{"matcher": {"id": "byName", "options": "compliant"},
                                  "properties": [{"id": "mappings", "value": compliant_map},
                                                 {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}]),
                Panel("Share of compliant readings", "timeseries",
                      [Target(f'SELECT mean("compliant") * 100 FROM "{M.WATER_COMPLIANCE.name}" '
                              f"{where(PARAM_ALL)} GROUP BY time($__interval), \"device\" fill(null)",
                              alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                      w=24, h=7, unit="percent", min=0, max=100,
                      thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 95}],
                      custom={"thresholdsStyle": {"mode": "line"}}),
            ]),
            Row("Quality per sampling point", [_trend(water, f.name, w=8) for f in water.fields]),
            Row("Anomalies and alerts", [*_qc_anomalies(water), _alerts(water.department)]),
        ],
        variables=device_variables(water.measurement), extra_tags=("water",),
    )


def waste_dashboard(cat: Catalogue) -> Dashboard:
    bin_ = cat.single(cat.with_fill_level(), "a fill level")
    fill = bin_.fill_level
    fill_steps: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "orange", "value": std.BIN_FILL_WARN},
                  {"color": "red", "value": std.BIN_FILL_DUE}]
    latest = Target(
        f'SELECT last("{fill}") AS "fill" FROM "{bin_.measurement}" {where()} GROUP BY "device"',
        result_format="table", expect_columns=("time", "fill"), expect_group_by=("device",))
    fc_latest = (f'SELECT last("priority") AS "priority", last("fill") AS "fill", last("fill_rate") AS "fill_rate", '
                 f'last("hours_to_full") AS "hours_to_full", last("full_by_tomorrow") AS "full_by_tomorrow" '
                 f'FROM "{M.BIN_FORECAST.name}" {where()} GROUP BY "device"')
    fc_cols = ("time", "priority", "fill", "fill_rate", "hours_to_full", "full_by_tomorrow")
    col_props: list[dict[str, Any]] = [
        {"matcher": {"id": "byName", "options": "fill"}, "properties": [
            {"id": "unit", "value": "percent"}, {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
            {"id": "min", "value": 0}, {"id": "max", "value": 100}]},
        {"matcher": {"id": "byName", "options": "fill_rate"}, "properties": [{"id": "unit", "value": "suffix: %/h"}]},
        {"matcher": {"id": "byName", "options": "hours_to_full"}, "properties": [{"id": "unit", "value": "h"}]},
    ]
    return Dashboard(
        UID["waste"], "Kota Cerdas - Pengangkutan Sampah (Waste collection)",
        "Bin fill levels, bins predicted full by tomorrow and the collection list ranked by analytics.",
        rows=[
            Row("Fill levels now", [
                _geomap("Fill level per bin", latest, "fill", unit="percent", thresholds=fill_steps),
                Panel("Bins predicted full tomorrow", "stat",
                      [Target(f'SELECT sum("full_by_tomorrow") AS "bins" FROM ({fc_latest})',
                              expect_columns=("time", "bins"))],
                      w=6, h=6, unit="none", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
                      color_mode="thresholds",
                      options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"}),
                Panel(BINS_DUE_TITLE, "stat",
                      [Target(f'SELECT count("fill") AS "bins" FROM ({latest.query}) WHERE "fill" >= {std.BIN_FILL_DUE:g}',
                              expect_columns=("time", "bins"))],
                      w=6, h=6, unit="none", thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                      color_mode="thresholds",
                      options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"}),
                Panel("Bins predicted full tomorrow (list)", "table",
                      [Target(f'SELECT * FROM ({fc_latest}) WHERE "full_by_tomorrow" = 1',
                              result_format="table", expect_columns=fc_cols)],
                      w=12, h=6, overrides=col_props, links=[fleet_link()],
                      transformations=[{"id": "sortBy", "options": {"sort": [{"field": "priority"}]}}]),
            ]),
            Row("Collection list", [
                Panel("Collection list (priority 1 first)", "table",
                      [Target(fc_latest, result_format="table", expect_columns=fc_cols, expect_group_by=("device",))],
                      w=24, h=10, overrides=col_props, links=[fleet_link()],
                      transformations=[{"id": "sortBy", "options": {"sort": [{"field": "priority"}]}}]),
            ]),
            Row("Trends", [
                Panel("Fill level", "timeseries",
                      [Target(f'SELECT mean("{fill}") FROM "{bin_.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                              alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                      w=12, unit=field_unit(bin_.field(fill)), min=0, max=100, thresholds=fill_steps,
                      custom={"thresholdsStyle": {"mode": "line"}}, links=[fleet_link()]),
                Panel("Hours until full (forecast)", "timeseries",
                      [Target(f'SELECT mean("hours_to_full") FROM "{M.BIN_FORECAST.name}" {where()} GROUP BY time($__interval), "device" fill(null)',
                              alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                      w=12, unit="h", min=0,
                      thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 24}],
                      custom={"thresholdsStyle": {"mode": "line"}}),
                *[_trend(bin_, f.name) for f in bin_.fields if f.name != fill],
            ]),
            Row("Anomalies and alerts", [*_qc_anomalies(bin_), _alerts(bin_.department)]),
        ],
        variables=device_variables(bin_.measurement), extra_tags=("waste",),
    )


def fleet_dashboard(cat: Catalogue) -> Dashboard:
    status_latest = (f'SELECT last("online") AS "online", last("stale") AS "stale" FROM "{M.DEVICE_STATUS.name}" {where()} '
                     f'GROUP BY "device"')
    battery_kinds = [k for k in cat if k.battery]
    rows = [
        Row("Fleet now", [
            Panel("Online", "stat", [Target(f'SELECT sum("online") AS "devices" FROM ({status_latest})',
                                            expect_columns=("time", "devices"))],
                  w=6, h=5, color_mode="thresholds", thresholds=[{"color": "green", "value": None}],
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"}),
            Panel("Offline", "stat", [Target(f'SELECT count("online") - sum("online") AS "devices" FROM ({status_latest})',
                                             expect_columns=("time", "devices"))],
                  w=6, h=5, color_mode="thresholds", thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"}),
            Panel("Stale (online, silent)", "stat", [Target(f'SELECT sum("stale") AS "devices" FROM ({status_latest})',
                                                            expect_columns=("time", "devices"))],
                  w=6, h=5, color_mode="thresholds", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"}),
            Panel("Firmware versions", "piechart",
                  [Target(f'SELECT last("fw") AS "fw" FROM "{M.DEVICE_STATUS.name}" {where()} GROUP BY "device"',
                          result_format="table", expect_columns=("time", "fw"), expect_group_by=("device",))],
                  w=6, h=5, transformations=[{"id": "groupBy", "options": {"fields": {
                      "fw": {"aggregations": [], "operation": "groupby"},
                      "device": {"aggregations": ["count"], "operation": "aggregate"}}}}],
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "values": True}, "pieType": "donut",
                           "legend": {"displayMode": "table", "placement": "right", "values": ["value"]}}),
            Panel("Devices (last status)", "table",
                  [Target(f'SELECT last("state") AS "state", last("online") AS "online", last("stale") AS "stale", '
                          f'last("last_seen_ms") AS "last_seen", last("battery") AS "battery", last("fw") AS "fw" '
                          f'FROM "{M.DEVICE_STATUS.name}" {where()} GROUP BY "device", "kind", "city", "district"',
                          result_format="table",
                          expect_columns=("time", "state", "online", "stale", "last_seen", "battery", "fw"),
                          expect_group_by=("device", "kind", "city", "district"))],
                  w=24, h=10,
                  overrides=[
                      {"matcher": {"id": "byName", "options": "last_seen"}, "properties": [{"id": "unit", "value": "dateTimeFromNow"}]},
                      {"matcher": {"id": "byName", "options": "battery"}, "properties": [
                          {"id": "unit", "value": grafana_unit(cat.battery.unit)},
                          {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                              {"color": "red", "value": None}, {"color": "orange", "value": std.BATTERY_EMPTY_V},
                              {"color": "green", "value": std.BATTERY_LOW_V}]}},
                          {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
                      {"matcher": {"id": "byName", "options": "state"}, "properties": [
                          {"id": "mappings", "value": [{"type": "value", "options": {
                              "online": {"color": "green", "index": 0}, "offline": {"color": "red", "index": 1}}}]},
                          {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
                  ]),
        ]),
        Row("Battery", [
            Panel(f"Battery - {k.title}", "timeseries",
                  [Target(f'SELECT mean("battery") FROM "{k.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                          alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                  w=24 // max(len(battery_kinds), 1), unit=grafana_unit(cat.battery.unit),
                  thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": std.BATTERY_EMPTY_V},
                              {"color": "transparent", "value": std.BATTERY_LOW_V}],
                  custom={"thresholdsStyle": {"mode": "area"}})
            for k in battery_kinds
        ]),
        Row("Data gaps (share of expected reports per hour)", [
            Panel(f"Completeness - {k.title}", "state-timeline",
                  # expected reports per hour come from the catalogue's report interval
                  [Target(f'SELECT count("seq") * 100 / {3600 / k.report_interval_s:g} FROM "{k.measurement}" {where()} '
                          f'GROUP BY time(1h), "device" fill(0)',
                          alias="$tag_device", expect_columns=("time", "count"), expect_group_by=("device",))],
                  w=24 // len(list(cat)), h=10, unit="percent", min=0, max=100, color_mode="thresholds",
                  thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 50}, {"color": "green", "value": 90}],
                  options={"showValue": "never", "mergeValues": False, "rowHeight": 0.9})
            for k in cat
        ]),
        Row("Link quality", [
            Panel(f"RSSI - {k.title}", "timeseries",
                  [Target(f'SELECT mean("rssi") FROM "{k.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                          alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                  w=24 // len(list(cat)), unit="dBm")
            for k in cat
        ] + [
            Panel(f"Gateway lag - {k.title}", "timeseries",
                  [Target(f'SELECT mean("gw_lag_ms") FROM "{k.measurement}" {where()} GROUP BY time($__interval), "device" fill(null)',
                          alias="$tag_device", expect_columns=("time", "mean"), expect_group_by=("device",))],
                  w=24 // len(list(cat)), unit="ms")
            for k in cat
        ]),
    ]
    return Dashboard(UID["fleet"], "Kota Cerdas - Kesehatan Perangkat (Fleet health)",
                     "Device lifecycle from the gateway (online/offline, last seen, battery, firmware) and data gaps.",
                     rows=rows, variables=device_variables(M.DEVICE_STATUS.name), extra_tags=("fleet",))


def pipeline_dashboard(cat: Catalogue) -> Dashboard:
    svc = ['"service" =~ /^$service$/']
    pw = where(*svc, names=())

    def counter_rate(field: str, title: str) -> Panel:
        return Panel(title, "timeseries",
                     [Target(f'SELECT non_negative_derivative(last("{field}"), 1s) FROM "{M.KC_PIPELINE.name}" {pw} '
                             f'GROUP BY time($__interval), "service", "instance" fill(null)',
                             alias="$tag_service $tag_instance", expect_columns=("time", "non_negative_derivative"),
                             expect_group_by=("service", "instance"))],
                     w=12, unit="reqps", interval="10s")

    def gauge_series(field: str, title: str, unit: str, agg: str = "mean") -> Panel:
        return Panel(title, "timeseries",
                     [Target(f'SELECT {agg}("{field}") FROM "{M.KC_PIPELINE.name}" {pw} GROUP BY time($__interval), "service", "instance" fill(null)',
                             alias="$tag_service $tag_instance", expect_columns=("time", agg),
                             expect_group_by=("service", "instance"))],
                     w=12, unit=unit, interval="10s")

    dl_where = where(names=())
    return Dashboard(
        UID["pipeline"], "Kota Cerdas - Kesehatan Pipeline (Pipeline health)",
        "Ingest throughput, lag, spool and dead letters by stage and reason.",
        rows=[
            Row("Throughput", [counter_rate("received", "Received per second"), counter_rate("written", "Written per second"),
                               counter_rate("deadlettered", "Dead-lettered per second"),
                               gauge_series("spool_bytes", "Spool size", "bytes", "max")]),
            Row("Latency", [gauge_series("lag_ms", "Lag (device time to write)", "ms", "max"),
                            gauge_series("batch_latency_ms", "Batch write latency", "ms")]),
            Row("Dead letters", [
                Panel("Dead letters by reason", "timeseries",
                      [Target(f'SELECT sum("count") FROM "{M.DEADLETTER.name}" {dl_where} GROUP BY time($__interval), "stage", "reason" fill(0)',
                              alias="$tag_stage/$tag_reason", expect_columns=("time", "sum"), expect_group_by=("stage", "reason"))],
                      w=12, unit="short", custom={"drawStyle": "bars", "fillOpacity": 70,
                                                  "stacking": {"mode": "normal", "group": "A"}}),
                Panel("Dead letters per reason (range total)", "bargauge",
                      [Target(f'SELECT sum("count") AS "count" FROM "{M.DEADLETTER.name}" {dl_where} GROUP BY "stage", "reason"',
                              alias="$tag_stage/$tag_reason", expect_columns=("time", "count"), expect_group_by=("stage", "reason"))],
                      w=12, unit="short", color_mode="thresholds",
                      thresholds=[{"color": "orange", "value": None}],
                      options={"orientation": "horizontal", "displayMode": "basic",
                               "reduceOptions": {"calcs": ["sum"], "values": False}}),
                Panel("Latest dead letters", "table",
                      [Target(f'SELECT "stage", "reason", "detail", "topic", "size" FROM "{M.DEADLETTER.name}" {dl_where} '
                              f"ORDER BY time DESC LIMIT 100",
                              result_format="table", expect_columns=("time", "stage", "reason", "detail", "topic", "size"))],
                      w=24, h=9),
            ]),
            Row("Alerts (all departments)", [
                Panel("Open and recent alerts", "table",
                      [Target(f'SELECT "department", "severity", "rule", "device", "state", "text_id" FROM "{M.ALERTS.name}" {dl_where} '
                              f"ORDER BY time DESC LIMIT 100",
                              result_format="table", expect_columns=("time", "department", "severity", "rule", "state"))],
                      w=24, h=8, links=[fleet_link()]),
            ]),
        ],
        variables=[Variable("service", "Service", f'SHOW TAG VALUES FROM "{M.KC_PIPELINE.name}" WITH KEY = "service"')],
        time_from="now-6h", refresh="30s", extra_tags=("pipeline",),
    )


def all_dashboards(cat: Catalogue | None = None) -> list[Dashboard]:
    cat = cat or load_catalogue()
    return [air_dashboard(cat), water_dashboard(cat), waste_dashboard(cat), fleet_dashboard(cat), pipeline_dashboard(cat)]
