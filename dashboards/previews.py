"""Static PNG previews of each dashboard's panels, rendered with matplotlib from InfluxDB data.

Each dashboard becomes one PNG: a grid of its panels, each drawn from the same
interpolated InfluxQL the Grafana panel runs (dashboards.verify), so a preview is
also a visual check that the panel has data. ``kotacerdas previews`` fills a database
through the real pipeline first (devtools/previews.py); this module only reads what
the services and analytics wrote. For reports and the README; not a replacement for
Grafana's rendering.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

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
               "volt": "V", "none": "", "short": "", "reqps": "per second", "dBm": "dBm", "h": "h", "ms": "ms",
               "s": "s", "ppm": "ppm", "lengthm": "m", "bytes": "bytes", "dateTimeFromNow": ""}
# catalogue unit strings in panel titles ("pm25 (ug/m3)") -> printed form
_TITLE_UNIT = {"ug/m3": "µg/m³", "Cel": "°C", "uS/cm": "µS/cm", "1": ""}
# a time or size axis switches to the larger unit once its values pass twice that unit
_LADDERS = {"ms": ((3_600_000.0, "h"), (60_000.0, "min"), (1000.0, "s")), "s": ((3600.0, "h"), (60.0, "min")),
            "bytes": ((2.0**20, "MiB"), (2.0**10, "KiB"))}
FIG_W_IN, DPI = 16.0, 100  # 1600 px: readable when shown at full width
MAX_ROWS = 12  # series drawn per heatmap / bar gauge; the title says how many were left out


def unit_label(unit: str | None) -> str:
    if not unit:
        return ""
    return _UNIT_LABEL.get(unit, unit.removeprefix("suffix:").strip())


def title_text(title: str) -> str:
    """The panel title with catalogue units printed as a reader expects (µg/m³, °C; none for "1")."""
    def repl(m: re.Match) -> str:
        u = _TITLE_UNIT.get(m.group(1), m.group(1))
        return f" ({u})" if u else ""
    return re.sub(r" \(([^()]+)\)$", repl, title)


def scaled(unit: str, values: np.ndarray) -> tuple[float, str]:
    """(divisor, unit) that keeps an axis' numbers short: 8.6e7 ms is drawn as 24 h, not with a 1e7 offset."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    for size, name in _LADDERS.get(unit, ()):
        if top >= 2 * size:
            return size, name
    return 1.0, unit


@dataclass
class Preview:
    """What one rendered dashboard shows: the file, its size, the unit labels drawn per panel, and
    which panels' boxes (titles, ticks, labels, legends, colour bars) overlap another's."""

    path: Path
    width: int
    height: int
    units: dict[str, str] = field(default_factory=dict)  # panel title -> unit text drawn ("" for unitless)
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # panels drawn as "No data"


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


def _time_axis(ax: Any) -> None:
    loc = mdates.AutoDateLocator(tz=JAKARTA, minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=JAKARTA, show_offset=False))


def _plain_y(ax: Any) -> None:
    if isinstance(ax.yaxis.get_major_formatter(), ScalarFormatter):
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def _legend_below(ax: Any, n: int, handles: list | None = None) -> Any:
    # below the plot, not over the lines; tight_layout makes room for it
    kw = {"handles": handles} if handles is not None else {}
    return ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False,
                     ncol=min(n, 3), **kw)


def _series_label(s: Any, col: str) -> str:
    return " ".join(v for v in s.tags.values() if v) or col


def _draw_timeseries(ax: Any, panel: Panel, series: list, shown_unit: list[str]) -> None:
    drawn = series[:24]
    ys = []
    for s in drawn:
        i = _value_col(s.columns)
        x = np.array([np.datetime64(int(r[0]), "ms") for r in s.values])
        y = np.array([np.nan if r[i] is None else r[i] for r in s.values], dtype=float)
        keep = ~np.isnan(y)  # connect across empty buckets (Grafana: spanNulls)
        ys.append((x[keep], y[keep], _series_label(s, s.columns[i])))
    unit = unit_label(panel.unit)
    div, unit = scaled(unit, np.concatenate([y for _, y, _ in ys]) if ys else np.zeros(0))
    for x, y, label in ys:
        ax.plot(x, y / div, lw=0.8, label=label)
    _time_axis(ax)
    _plain_y(ax)
    if len(drawn) <= 6:
        _legend_below(ax, len(drawn))
    else:
        ax.text(0.99, 0.98, f"{len(series)} series", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="#555555")
    if unit:
        ax.set_ylabel(unit, fontsize=9)
    shown_unit.append(unit)


def _step_scale(panel: Panel, lo: float, hi: float) -> tuple[Any, Any, list[float]]:
    """A colour map and norm from the panel's threshold steps (what Grafana colours by), so the
    heatmap's scale shows the same bands; without steps, a continuous map over [lo, hi]."""
    steps = panel.thresholds or []
    if len(steps) < 2:
        return plt.get_cmap("viridis"), None, []
    bounds = [lo] + [float(s["value"]) for s in steps[1:] if lo < float(s["value"]) < hi] + [hi]
    colours = [_threshold_colour(panel, (a + b) / 2) for a, b in zip(bounds, bounds[1:])]
    return ListedColormap(colours), BoundaryNorm(bounds, len(colours)), bounds


def _draw_heatmap(ax: Any, panel: Panel, series: list, shown_unit: list[str]) -> None:
    shown = series[:MAX_ROWS]
    i = _value_col(shown[0].columns)
    n = min(len(s.values) for s in shown)
    grid = np.array([[np.nan if r[i] is None else r[i] for r in s.values[:n]] for s in shown], dtype=float)
    finite = bool(np.isfinite(grid).any())
    lo: float = panel.min if panel.min is not None else (float(np.nanmin(grid)) if finite else 0.0)
    hi: float = panel.max if panel.max is not None else (float(np.nanmax(grid)) if finite else 1.0)
    hi = hi if hi > lo else lo + 1
    cmap, norm, bounds = _step_scale(panel, lo, hi)
    t0, t1 = (mdates.date2num(np.datetime64(int(shown[0].values[k][0]), "ms")) for k in (0, n - 1))
    im = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm, vmin=None if norm else lo, vmax=None if norm else hi,
                   interpolation="nearest", extent=(t0, t1, len(shown) - 0.5, -0.5))
    ax.set_yticks(range(len(shown)), [s.tags.get("device", "") for s in shown], fontsize=7)
    ax.xaxis_date()
    _time_axis(ax)
    cb = ax.figure.colorbar(im, ax=ax, pad=0.01, fraction=0.05, ticks=bounds or None)  # the heatmap's scale
    cb.ax.tick_params(labelsize=7)
    unit = unit_label(panel.unit)
    if unit:
        cb.set_label(unit, fontsize=8)
    shown_unit.append(unit)


def _draw_stat(ax: Any, panel: Panel, series: list, shown_unit: list[str]) -> None:
    s = series[0]
    v = s.values[-1][_value_col(s.columns)]
    txt = f"{v:g}" if isinstance(v, (int, float)) else str(v)
    unit = unit_label(panel.unit)
    ax.text(0.5, 0.45, f"{txt} {unit}".strip(), ha="center", va="center", fontsize=28, color="white",
            weight="bold", transform=ax.transAxes)
    ax.set_facecolor(_threshold_colour(panel, v if isinstance(v, (int, float)) else None))
    ax.set_xticks([])
    ax.set_yticks([])
    shown_unit.append(unit)


# the city outlines the public page draws too (OpenStreetMap, ODbL; docs/dashboards.md "Base map")
OUTLINES = Path(__file__).parent / "public" / "outlines.geojson"


def _outline_rings(pts: list[tuple[float, float, Any]]) -> tuple[list[list[list[float]]], str]:
    """Outer rings (lon, lat) of the outlines whose box holds a station, and their attribution."""
    try:
        doc = json.loads(OUTLINES.read_text("utf-8"))
    except (OSError, ValueError):
        return [], ""
    rings = []
    for f in doc.get("features", []):
        g = f["geometry"]
        for poly in ([g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]):
            r = poly[0]
            xs, ys = [c[0] for c in r], [c[1] for c in r]
            if any(min(xs) <= lon <= max(xs) and min(ys) <= lat <= max(ys) for lon, lat, _ in pts):
                rings.append(r)
    return rings, str(doc.get("attribution", ""))


def _draw_map(ax: Any, panel: Panel, series: list, coords: dict[str, tuple[float, float]],
              shown_unit: list[str]) -> None:
    vcol = panel.options["layers"][0]["config"]["style"]["color"]["field"]
    pts = []
    for s in series:
        dev = s.tags.get("device")
        v = dict(zip(s.columns, s.values[-1])).get(vcol)
        if dev in coords:
            pts.append((coords[dev][1], coords[dev][0], v))
    if not pts:
        ax.text(0.5, 0.5, "no station coordinates (--devices)", ha="center", va="center", color="grey", fontsize=8)
        ax.set_axis_off()
        return
    rings, attribution = _outline_rings(pts)
    for r in rings:  # under the stations
        ax.fill([c[0] for c in r], [c[1] for c in r], facecolor="#f3f4ee", edgecolor="#7d8a6f", linewidth=1, zorder=0)
    if rings:
        ax.text(0.01, 0.01, attribution, transform=ax.transAxes, fontsize=6, color="#555")
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=60 if len(pts) > 30 else 110,
               c=[_threshold_colour(panel, p[2]) for p in pts], edgecolors="black", linewidths=0.5)
    if len(pts) <= 25:  # beyond that the numbers cover each other; the colours still tell
        for lon, lat, v in pts:
            if isinstance(v, (int, float)):
                ax.annotate(f"{v:g}", (lon, lat), fontsize=7, xytext=(5, 3), textcoords="offset points")
    steps = panel.thresholds or []
    handles = [plt.Line2D([], [], marker="o", ls="", color=_colour(s["color"]), markeredgecolor="black",
                          label=("< " if s["value"] is None else "≥ ") + f"{(steps[1]['value'] if s['value'] is None and len(steps) > 1 else s['value']):g}")
               for s in steps if len(steps) > 1]
    if handles:
        _legend_below(ax, len(handles), handles).set_title(f"{vcol} {unit_label(panel.unit)}".strip(), prop={"size": 7})
    ax.set_xlabel("longitude (°E)", fontsize=8)
    ax.set_ylabel("latitude (°)", fontsize=8)
    ax.margins(0.15)
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    # a km east as long as a km north: a degree of longitude is cos(latitude) of a degree of latitude
    mid = sum(p[1] for p in pts) / len(pts)
    ax.set_aspect(1 / math.cos(math.radians(mid)), adjustable="datalim")
    shown_unit.append("°")


def _draw_bars(ax: Any, panel: Panel, series: list, shown_unit: list[str]) -> None:
    labels, vals = [], []
    for s in series[:MAX_ROWS]:
        i = _value_col(s.columns)
        v = s.values[-1][i] if panel.targets[0].result_format == "table" else sum(r[i] or 0 for r in s.values)
        labels.append("/".join(v for v in s.tags.values() if v))
        vals.append(v or 0)
    ax.barh(labels, vals, color=[_threshold_colour(panel, v) for v in vals])
    ax.tick_params(axis="y", labelsize=7)
    if panel.max is not None:
        ax.set_xlim(panel.min or 0, max(max(vals), 1) * 1.1 if panel.max > 10 * max(max(vals), 1) else panel.max)
    unit = unit_label(panel.unit)
    if unit:
        ax.set_xlabel(unit, fontsize=8)
    shown_unit.append(unit)


def _fit(cells: list[list[str]], budget: int) -> list[list[str]]:
    """Truncate the widest columns until a row fits ``budget`` characters (a table never spills)."""
    widths = [max(len(r[c]) for r in cells) for c in range(len(cells[0]))]
    while sum(widths) > budget and max(widths) > 6:
        widths[widths.index(max(widths))] -= 1
    return [[v if len(v) <= w else v[: w - 1] + "…" for v, w in zip(r, widths)] for r in cells]


def _draw_table(ax: Any, panel: Panel, series: list, shown_unit: list[str]) -> None:
    cols = [*series[0].tags.keys(), *[c for c in series[0].columns if c != "time"]][:7]
    rows: list[list[str]] = []
    for s in series:
        for r in s.values[:1] if s.tags else s.values[:8]:
            rec = {**s.tags, **dict(zip(s.columns, r))}
            rows.append([_fmt(rec.get(c)) for c in cols])
    ax.set_axis_off()
    rows = rows[:8]
    if not rows:
        return
    cells = _fit([cols, *rows], budget=50)
    widths = np.array([max(len(r[c]) for r in cells) + 2 for c in range(len(cols))], dtype=float)
    tab = ax.table(cellText=cells[1:], colLabels=cells[0], loc="upper center", cellLoc="left",
                   colWidths=list(widths / widths.sum()))
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.25)
    shown_unit.append("")


def _draw(ax: Any, panel: Panel, res: verify.QueryResult, coords: dict[str, tuple[float, float]]) -> str | None:
    """Draw one panel; returns the unit text drawn ("" unitless), or None when there was nothing to draw."""
    series = [s for s in res.series if s.values]
    title = title_text(panel.title)
    if panel.type in ("state-timeline", "bargauge") and len(series) > MAX_ROWS:
        title += f" ({MAX_ROWS} of {len(series)})"
    ax.set_title(title, fontsize=11 if len(title) <= 45 else 9.5, loc="left")
    ax.tick_params(labelsize=8)
    if res.error or not series:
        ax.text(0.5, 0.5, "No data" if not res.error else "query error", ha="center", va="center", color="grey")
        ax.set_axis_off()
        return None
    shown: list[str] = []
    t = panel.type
    if t == "timeseries":
        _draw_timeseries(ax, panel, series, shown)
    elif t == "state-timeline":
        _draw_heatmap(ax, panel, series, shown)
    elif t == "stat":
        _draw_stat(ax, panel, series, shown)
    elif t == "geomap":
        _draw_map(ax, panel, series, coords, shown)
    elif t == "bargauge":
        _draw_bars(ax, panel, series, shown)
    elif t == "piechart":
        counts: dict[str, int] = {}
        for s in series:
            v = s.values[-1][_value_col(s.columns)]
            counts[str(v)] = counts.get(str(v), 0) + 1
        # a legend under the donut, not labels beside it: a long version string beside a full
        # circle ran off the figure's edge (the overlap check caught it on a real run)
        wedges, _ = ax.pie(list(counts.values()), wedgeprops={"width": 0.45}, radius=0.85, center=(0, 0.25))
        ax.legend(wedges, [f"{k} ({n})" for k, n in counts.items()], loc="lower center", fontsize=8,
                  frameon=False, ncol=1 if len(counts) < 4 else 2)
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.3, 1.2)
        shown.append("")
    else:
        _draw_table(ax, panel, series, shown)
    return shown[0] if shown else ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def overlaps(fig: Any, groups: dict[str, list[Any]]) -> list[tuple[str, str]]:
    """Pairs of panels whose drawn boxes (axes with titles, tick labels, axis labels, legends, and
    their colour bars) intersect, panels that run into the figure title, and panels cut off at the
    figure's edge."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = {}
    for name, axes in groups.items():
        bbs = [a.get_tightbbox(r) for a in axes]
        boxes[name] = (min(b.x0 for b in bbs), min(b.y0 for b in bbs), max(b.x1 for b in bbs), max(b.y1 for b in bbs))
    if fig._suptitle is not None:
        b = fig._suptitle.get_window_extent(r)
        boxes["(figure title)"] = (b.x0, b.y0, b.x1, b.y1)
    w, h = fig.canvas.get_width_height()
    out = [(name, "(figure edge)") for name, (x0, y0, x1, y1) in boxes.items()
           if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1]
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
            if min(ax1, bx1) - max(ax0, bx0) > 1 and min(ay1, by1) - max(ay0, by0) > 1:  # 1 px of antialiasing
                out.append((a, b))
    return out


def render(d: Dashboard, results: list[verify.QueryResult], path: Path, coords: dict[str, tuple[float, float]],
           max_panels: int = 24, dpi: int = DPI) -> Preview:
    by_panel = {r.panel: r for r in results if r.dashboard == d.uid and not r.panel.startswith("variable ")}
    panels = [p for p in d.panels() if p.title in by_panel][:max_panels]
    ncol = 3
    nrow = math.ceil(len(panels) / ncol)
    row_h = 4.4
    fig, axes = plt.subplots(nrow, ncol, figsize=(FIG_W_IN, row_h * nrow + 0.6), squeeze=False)
    units: dict[str, str] = {}
    empty: list[str] = []
    groups: dict[str, list[Any]] = {}
    for ax, p in zip(axes.flat, panels):
        before = set(fig.axes)
        u = _draw(ax, p, by_panel[p.title], coords)
        if u is None:
            empty.append(p.title)
        else:
            units[p.title] = u
        groups[p.title] = [ax, *(set(fig.axes) - before)]  # the panel and its colour bar
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(f"{d.title}  (times in Asia/Jakarta)", fontsize=14, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (row_h * nrow + 0.6)), h_pad=1.5, w_pad=2.0)
    bad = overlaps(fig, groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    size = (int(round(fig.get_figwidth() * dpi)), int(round(fig.get_figheight() * dpi)))
    plt.close(fig)
    return Preview(path, *size, units, bad, empty)


def render_all(settings: Settings, out: Path, *, hours: float | None = None, devices: Sequence[dict] = (),
               to_ms: int | None = None, uids: Sequence[str] | None = None) -> list[Preview]:
    """``hours=None``: each dashboard over its own default range, as it opens in Grafana."""
    to_ms = to_ms or int(time.time() * 1000)
    coords = {g["key"]: (g["latitude"], g["longitude"]) for g in gazetteer(devices)}
    boards = [d for d in all_dashboards() if uids is None or d.uid in uids]
    with InfluxClient(settings.influx) as c:
        from_ms = None if hours is None else to_ms - int(hours * 3600_000)
        results = verify.run(c, boards, from_ms=from_ms, to_ms=to_ms)
    return [render(d, results, out / f"{d.uid}.png", coords) for d in boards]
