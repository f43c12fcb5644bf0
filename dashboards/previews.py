"""Static PNG previews of each dashboard's panels, rendered with matplotlib from InfluxDB data.

Each dashboard becomes one PNG: a grid of its panels, each drawn from the same
interpolated InfluxQL the Grafana panel runs (dashboards.verify), so a preview is
also a visual check that the panel has data. For reports and the README; not a
replacement for Grafana's rendering.
"""

from __future__ import annotations

import math
import time
from zoneinfo import ZoneInfo
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kotacerdas.influx import InfluxClient  # noqa: E402
from kotacerdas.settings import Settings  # noqa: E402

from dashboards import verify  # noqa: E402
from dashboards.definitions import all_dashboards  # noqa: E402
from dashboards.model import Dashboard, Panel  # noqa: E402
from dashboards.provisioning import gazetteer  # noqa: E402

_NAMED = {"green": "#37872d", "blue": "#1f60c4", "yellow": "#f2cc0c", "red": "#c4162a", "orange": "#ff780a",
          "purple": "#8f3bb8", "transparent": "#dddddd", "text": "#555555", "dark-green": "#19730e"}


JAKARTA = ZoneInfo("Asia/Jakarta")
# Grafana unit ids -> what a reader sees (a preview never shows "conμgm3" or "short")
_UNIT_LABEL = {"conμgm3": "µg/m³", "conugm3": "µg/m³", "celsius": "°C", "percent": "%", "percentunit": "%",
               "volt": "V", "none": "", "short": "", "reqps": "requests/s", "dBm": "dBm", "h": "h", "ms": "ms",
               "s": "s", "ppm": "ppm", "lengthm": "m"}


def unit_label(unit: str | None) -> str:
    if not unit:
        return ""
    return _UNIT_LABEL.get(unit, unit.removeprefix("suffix:").strip())


def _colour(c: str) -> str:
    return _NAMED.get(c, c)


def _threshold_colour(panel: Panel, v: float | None) -> str:
    steps = panel.thresholds or [{"color": "green", "value": None}]
    col = steps[0]["color"]
    for s in steps:
        if s["value"] is not None and v is not None and v >= s["value"]:
            col = s["color"]
    return _colour(col)


def _value_col(cols: Sequence[str]) -> int:
    return next(i for i, c in enumerate(cols) if c != "time")


def _draw(ax: Any, panel: Panel, res: verify.QueryResult, coords: dict[str, tuple[float, float]]) -> None:
    ax.set_title(panel.title, fontsize=11, loc="left")
    ax.tick_params(labelsize=8)
    series = [s for s in res.series if s.values]
    if res.error or not series:
        ax.text(0.5, 0.5, "No data" if not res.error else "query error", ha="center", va="center", color="grey")
        ax.set_axis_off()
        return
    t = panel.type
    if t in ("timeseries",):
        for s in series[:12]:
            x = [np.datetime64(int(r[0]), "ms") for r in s.values]
            i = _value_col(s.columns)
            y = np.array([np.nan if r[i] is None else r[i] for r in s.values], dtype=float)
            keep = ~np.isnan(y)  # connect across empty buckets (Grafana: spanNulls)
            x = np.array(x)[keep]
            y = y[keep]
            ax.plot(x, y, lw=0.8, label=" ".join(s.tags.values()) or s.columns[i])
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=JAKARTA))
        if len(series) <= 8:
            ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=2)
        if unit_label(panel.unit):
            ax.set_ylabel(unit_label(panel.unit), fontsize=9)
    elif t == "state-timeline":
        shown = series[:12]
        i = _value_col(shown[0].columns)
        n = min(len(s.values) for s in shown)
        grid = np.array([[np.nan if r[i] is None else r[i] for r in s.values[:n]] for s in shown], dtype=float)
        finite = bool(np.isfinite(grid).any())
        lo: float = panel.min if panel.min is not None else (float(np.nanmin(grid)) if finite else 0.0)
        hi: float = panel.max if panel.max is not None else (float(np.nanmax(grid)) if finite else 1.0)
        t0, t1 = (np.datetime64(int(shown[0].values[k][0]), "ms") for k in (0, n - 1))
        extent = (mdates.date2num(t0), mdates.date2num(t1), len(shown) - 0.5, -0.5)
        im = ax.imshow(grid, aspect="auto", cmap="RdYlGn_r" if hi > lo else "RdYlGn", vmin=lo,
                       vmax=hi if hi > lo else lo + 1, interpolation="nearest", extent=extent)
        ax.set_yticks(range(len(shown)), [s.tags.get("device", "") for s in shown], fontsize=7)
        ax.xaxis_date()
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=JAKARTA))
        cb = ax.figure.colorbar(im, ax=ax, pad=0.01, fraction=0.04)  # the heatmap's scale
        cb.ax.tick_params(labelsize=7)
        if unit_label(panel.unit):
            cb.set_label(unit_label(panel.unit), fontsize=8)
    elif t in ("stat",):
        s = series[0]
        v = s.values[-1][_value_col(s.columns)]
        txt = f"{v:g}" if isinstance(v, (int, float)) else str(v)
        ax.text(0.5, 0.45, f"{txt} {unit_label(panel.unit)}".strip(), ha="center", va="center",
                fontsize=28, color="white", weight="bold")
        ax.set_facecolor(_threshold_colour(panel, v if isinstance(v, (int, float)) else None))
        ax.set_xticks([])
        ax.set_yticks([])
    elif t in ("geomap",):
        vcol = panel.options["layers"][0]["config"]["style"]["color"]["field"]
        pts = []
        for s in series:
            dev = s.tags.get("device")
            v = dict(zip(s.columns, s.values[-1])).get(vcol)
            if dev in coords:
                pts.append((coords[dev][1], coords[dev][0], v, dev))
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=120,
                       c=[_threshold_colour(panel, p[2]) for p in pts], edgecolors="black", linewidths=0.5)
            for lon, lat, v, dev in pts:
                ax.annotate(f"{dev}\n{v:g}" if isinstance(v, (int, float)) else dev, (lon, lat), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
            ax.set_xlabel("longitude (°)", fontsize=8)
            ax.set_ylabel("latitude (°)", fontsize=8)
            ax.margins(0.25)
            ax.ticklabel_format(useOffset=False)
        else:
            ax.text(0.5, 0.5, "no device coordinates (build --devices)", ha="center", va="center", color="grey", fontsize=7)
    elif t in ("bargauge",):
        labels, vals = [], []
        for s in series[:15]:
            i = _value_col(s.columns)
            v = s.values[-1][i] if panel.targets[0].result_format == "table" else sum(r[i] or 0 for r in s.values)
            labels.append("/".join(s.tags.values()))
            vals.append(v or 0)
        ax.barh(labels, vals, color=[_threshold_colour(panel, v) for v in vals])
        ax.tick_params(axis="y", labelsize=7)
        if unit_label(panel.unit):
            ax.set_xlabel(unit_label(panel.unit), fontsize=8)
    elif t == "piechart":
        counts: dict[str, int] = {}
        for s in series:
            v = s.values[-1][_value_col(s.columns)]
            counts[str(v)] = counts.get(str(v), 0) + 1
        ax.pie(list(counts.values()), labels=list(counts), textprops={"fontsize": 8}, wedgeprops={"width": 0.45})
    else:  # table: the first rows as text
        cols = [*series[0].tags.keys(), *[c for c in series[0].columns if c != "time"]][:7]
        rows: list[list[str]] = []
        for s in series:
            for r in s.values[:1] if s.tags else s.values[:8]:
                rec = {**s.tags, **dict(zip(s.columns, r))}
                rows.append([_fmt(rec.get(c)) for c in cols])
        rows = rows[:8]
        ax.set_axis_off()
        if rows:
            tab = ax.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="left")
            tab.auto_set_font_size(False)
            tab.set_fontsize(8)
            tab.scale(1, 1.25)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    s = "" if v is None else str(v)
    return s if len(s) <= 22 else s[:21] + "…"


def render(d: Dashboard, results: list[verify.QueryResult], path: Path, coords: dict[str, tuple[float, float]],
           max_panels: int = 24, dpi: int = 100) -> Path:
    by_panel = {(r.panel): r for r in results if r.dashboard == d.uid and not r.panel.startswith("variable ")}
    panels = [p for p in d.panels() if p.title in by_panel][:max_panels]
    ncol = 3
    nrow = math.ceil(len(panels) / ncol)
    # 16 in x 100 dpi = 1600 px: readable when shown at full width
    fig, axes = plt.subplots(nrow, ncol, figsize=(16, 3.8 * nrow), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        _draw(ax, p, by_panel[p.title], coords)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(f"{d.title}  (times in Asia/Jakarta)", fontsize=14, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (3.8 * nrow)))  # room for the title above the first row
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def render_all(settings: Settings, out: Path, *, hours: float = 24.0, devices: Sequence[dict] = (),
               to_ms: int | None = None, uids: Sequence[str] | None = None) -> list[Path]:
    to_ms = to_ms or int(time.time() * 1000)
    coords = {g["key"]: (g["latitude"], g["longitude"]) for g in gazetteer(devices)}
    boards = [d for d in all_dashboards() if uids is None or d.uid in uids]
    with InfluxClient(settings.influx) as c:
        results = verify.run(c, boards, from_ms=to_ms - int(hours * 3600_000), to_ms=to_ms)
    return [render(d, results, out / f"{d.uid}.png", coords) for d in boards]
