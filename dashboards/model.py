"""Typed builders for the subset of Grafana's dashboard JSON model Kota Cerdas emits.

Why our own and not grafana-foundation-sdk: the SDK installs on Python 3.11, but it
models every panel option of every Grafana version; the dashboards here need a dozen
panel kinds with raw InfluxQL targets, and a small model we own is easier to validate
against our JSON Schema (dashboards/schema/dashboard.schema.json) and to execute in tests.

Field names follow Grafana's dashboard JSON model (schemaVersion 39, Grafana 10/11):
https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 39
DATASOURCE_UID = "kc-influxdb"
DATASOURCE_TYPE = "influxdb"
DATASOURCE_REF = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
TIMEZONE = "Asia/Jakarta"
TAG = "kotacerdas"

PanelType = Literal["timeseries", "stat", "gauge", "table", "geomap", "bargauge", "piechart", "barchart",
                    "state-timeline", "text"]
ResultFormat = Literal["time_series", "table"]


@dataclass
class Target:
    """One raw InfluxQL query. ``expect`` describes the shape tests assert on."""

    query: str
    result_format: ResultFormat = "time_series"
    alias: str | None = None
    # shape contract for the verification tests: columns every series must have,
    # and the tag keys the series are grouped by
    expect_columns: tuple[str, ...] = ()
    expect_group_by: tuple[str, ...] = ()

    def to_json(self, ref_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "refId": ref_id,
            "datasource": dict(DATASOURCE_REF),
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


@dataclass
class Link:
    title: str
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "url": self.url, "targetBlank": False}


@dataclass
class Panel:
    title: str
    type: PanelType
    targets: list[Target] = field(default_factory=list)
    w: int = 12
    h: int = 8
    unit: str | None = None
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    thresholds: list[dict] | None = None
    mappings: list[dict] = field(default_factory=list)
    color_mode: str | None = None  # "thresholds" colours by the steps; None = palette
    options: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict] = field(default_factory=list)
    overrides: list[dict] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    description: str = ""
    custom: dict[str, Any] = field(default_factory=dict)
    interval: str | None = None  # minimum $__interval

    def to_json(self, pid: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"mappings": self.mappings}
        if self.unit:
            defaults["unit"] = self.unit
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": self.thresholds or [{"color": "green", "value": None}]}
        defaults["color"] = {"mode": self.color_mode or "palette-classic"}
        if self.custom:
            defaults["custom"] = self.custom
        out: dict[str, Any] = {
            "id": pid,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "gridPos": {"x": x, "y": y, "w": self.w, "h": self.h},
            "datasource": dict(DATASOURCE_REF),
            "targets": [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
            "transformations": self.transformations,
            "links": [ln.to_json() for ln in self.links],
        }
        # panels share threshold/mapping lists built once per dashboard: emit independent copies
        out = copy.deepcopy(out)
        if self.interval:
            out["interval"] = self.interval
        return out


@dataclass
class Variable:
    """A query template variable over InfluxDB tag values (multi-select, with All = ``.*``)."""

    name: str
    label: str
    query: str
    include_all: bool = True
    multi: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": dict(DATASOURCE_REF),
            "query": self.query,
            "refresh": 2,  # on time range change: new devices appear without a reload
            "includeAll": self.include_all,
            "allValue": ".*",
            "multi": self.multi,
            "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
        }


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    time_from: str = "now-24h"
    refresh: str = "1m"
    extra_tags: tuple[str, ...] = ()

    def panels(self) -> list[Panel]:
        return [p for r in self.rows for p in r.panels]

    def to_json(self) -> dict[str, Any]:
        panels: list[dict] = []
        pid = 1
        y = 0
        for row in self.rows:
            panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
            pid += 1
            y += 1
            x = 0
            row_h = 0
            for p in row.panels:
                if x + p.w > 24:  # wrap: Grafana's grid is 24 columns wide
                    x, y = 0, y + row_h
                    row_h = 0
                panels.append(p.to_json(pid, x, y))
                pid += 1
                x += p.w
                row_h = max(row_h, p.h)
            y += row_h
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG, *self.extra_tags],
            "timezone": TIMEZONE,
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "refresh": self.refresh,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "monday",
            "templating": {"list": [v.to_json() for v in self.variables]},
            # Grafana adds its built-in annotation itself; its `builtIn` key is not in the dashboard schema
            "annotations": {"list": []},
            # every Kota Cerdas dashboard links to the others, keeping time range and variables
            "links": [{"type": "dashboards", "tags": [TAG], "asDropdown": False, "includeVars": True,
                       "keepTime": True, "title": "Kota Cerdas", "icon": "external link", "targetBlank": False}],
            "panels": panels,
        }
