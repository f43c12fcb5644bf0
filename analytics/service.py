"""The analytics service: a thin shell of I/O around the pure cores.

One pass: read a window of telemetry per kind from InfluxDB, resample it to a
regular grid, run the QC tests and statistical detectors, compute ISPU / US AQI (air), Permenkes 2/2023
compliance (water) and fill forecasts (bins), write everything back as the
measurements in docs/team-interfaces.md, then evaluate alert rules and deliver
the transitions (MQTT, webhook, e-mail).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from analytics import (alarmset, aqi_us, chartstate, delivery, emptylevel, episodes, ispu, multivariate, qc, ranges, seasonal, shift,
                       statefile, stateful, trend, waste, water)
from analytics.averaging import period_mean
from analytics.alertconfig import Subscription, load as load_alert_config
from analytics.alerts import AlertEngine, AlertStore, Condition
from analytics.outbox import Item, Outbox
from analytics.detectors import StatParams, params_for, run_all
from analytics.grid import Grid, to_grid
from kotacerdas.catalogue import Catalogue, Kind, load_catalogue
from kotacerdas.influx import InfluxClient, InfluxError
from kotacerdas import measurements as M
from kotacerdas.lineprotocol import escape_key
from kotacerdas.routing import influx_for_city
from kotacerdas.settings import Settings
from kotacerdas.standards import ISPU_BANDS, ISPU_POLLUTANTS
from kotacerdas.stations import StationIndex

log = logging.getLogger("analytics.service")

WATER_WINDOW_S = 900.0  # compliance on the median of the last 15 minutes: one noisy reading is no breach
HOURS_TO_FULL_CAP = 24.0 * 365  # "never at this rate" (inf cannot be stored in InfluxDB)
WRITE_BATCH = 5000


@dataclass
class KindWindow:
    kind: Kind
    grid: Grid
    tags: list[dict[str, str]]  # per series: device, city, district
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (S, T)

    @property
    def devices(self) -> list[str]:
        return [t["device"] for t in self.tags]


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.passes = Counter("kc_analytics_passes_total", "analytics passes", ["result"], registry=registry)
        self.pass_seconds = Histogram("kc_analytics_pass_seconds", "duration of a pass", registry=registry)
        self.written = Counter("kc_analytics_points_written_total", "points written", ["measurement"],
                               registry=registry)
        self.alerts = Counter("kc_analytics_alerts_total", "alert transitions", ["state", "department"],
                              registry=registry)
        self.delivery_failures = Counter("kc_analytics_delivery_failures_total", "failed deliveries", ["channel"],
                                         registry=registry)
        self.rejected = Counter("kc_analytics_rows_rejected_total", "unusable rows read back", ["reason"],
                                registry=registry)
        self.series = Gauge("kc_analytics_series", "series analysed in the last pass", ["kind"], registry=registry)
        self.last_pass = Gauge("kc_analytics_last_pass_timestamp_seconds", "end of the last good pass",
                               registry=registry)


def ispu_hourly(x: np.ndarray, step_s: float) -> np.ndarray:
    """Latest 1-hour mean (S,) with the same hourly completeness (US AQI 1-hour ozone)."""
    return period_mean(x, step_s, 3600.0).conc[:, -1]


def _num(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan


class AnalyticsService:
    def __init__(self, settings: Settings, *, catalogue: Catalogue | None = None,
                 registry: CollectorRegistry | None = None, mqtt_client: Any = None):
        self.settings = settings
        self.cat = catalogue or load_catalogue()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        # one analytics process per city reads and writes that city's InfluxDB (kotacerdas/routing.py)
        self.influx = InfluxClient(influx_for_city(settings))
        self.store = AlertStore(settings.state_dir / "analytics" / "alerts.sqlite")
        self.engine = AlertEngine(self.store)
        cfg = load_alert_config(settings.analytics.rules_file, {k.name: k.department for k in self.cat})
        self.rules = cfg.rules
        self.subscriptions = list(cfg.subscriptions) + _legacy_subscriptions(settings)
        a = settings.analytics
        self.outbox = Outbox(settings.state_dir / "analytics" / "outbox.sqlite", backoff_s=a.webhook_backoff_s,
                             max_backoff_s=a.delivery_max_backoff_s, max_attempts=a.delivery_max_attempts)
        self.stations = StationIndex(settings.stations_file)
        # the tests written as `qc` verdicts and episodes: what `analytics evaluate` scores, plus opt-ins
        self.tests = alarmset.written(settings.analytics.extra_tests)
        self.mqtt = mqtt_client
        self._emitted_to: dict[str, int] = {}  # kind -> last grid time already written (loop mode)
        # the stateful tests' states per (kind, field), carried from pass to pass and across restarts,
        # by the name analytics.stateful.States gives them
        root = settings.state_dir / "analytics"
        self.states: dict[str, statefile.Store[Any]] = {
            "chart": chartstate.ChartStore(root / "charts"), "seasonal": seasonal.SeasonStore(root / "seasonal"),
            "shift": shift.ShiftStore(root / "shift"), "trend": trend.TrendStore(root / "trend"),
            "empty": emptylevel.EmptyStore(root / "emptylevel")}
        self.episodes = episodes.EpisodeStore(settings.state_dir / "analytics" / "episodes")
        self.ranges_cfg = ranges.load(settings.analytics.ranges_file, self.cat)
        self.ranges = ranges.RangeStore(settings.state_dir / "analytics" / "ranges")
        # one worker keeps deliveries in order per alert (open before resolved)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="alert-delivery")
        self._outbox: list[Future] = []
        if self.outbox.next_due_ms() is not None:  # deliveries a previous run could not finish
            self._outbox.append(self._pool.submit(self._drain))

    def close(self) -> None:
        self.flush_deliveries(retry=False)  # what still fails stays in the outbox for the next start
        self._pool.shutdown(wait=True)
        self.outbox.close()
        self.influx.close()
        self.store.close()

    # ------------------------------------------------------------- reading

    def read_kind(self, kind: Kind, start_ms: int, end_ms: int) -> KindWindow:
        step_ms = int(kind.report_interval_s * 1000)
        grid = Grid.covering(start_ms, end_ms, step_ms)
        cols = ",".join(f'"{f}"' for f in kind.field_names)
        q = (f'SELECT {cols} FROM "{kind.measurement}" WHERE time >= {grid.t0_ms}ms AND time <= {int(end_ms)}ms '
             f'GROUP BY "device","city","district"')
        series = self.influx.series(q)
        tags = [{"device": s.tags.get("device", ""), "city": s.tags.get("city", ""),
                 "district": s.tags.get("district", "")} for s in series]
        win = KindWindow(kind, grid, tags)
        if not series:
            return win
        idx_parts, t_parts = [], []
        vals: dict[str, list[np.ndarray]] = {f: [] for f in kind.field_names}
        for i, s in enumerate(series):
            t = np.array([r[0] for r in s.values], dtype=np.int64)
            idx_parts.append(np.full(len(t), i, dtype=np.int64))
            t_parts.append(t)
            for f in kind.field_names:
                if f in s.columns:
                    j = s.columns.index(f)
                    col = [r[j] for r in s.values]
                    arr = np.array([_num(v) for v in col], dtype=np.float64)
                    bad = sum(1 for v, a in zip(col, arr) if v is not None and a != a)
                    if bad:  # a string or bool where a number belongs: counted and skipped, never fatal
                        self.metrics.rejected.labels("non_numeric").inc(bad)
                        log.warning("non-numeric values ignored",
                                    extra={"measurement": kind.measurement, "field": f, "count": bad})
                    vals[f].append(arr)
                else:
                    vals[f].append(np.full(len(t), np.nan))
        idx, t = np.concatenate(idx_parts), np.concatenate(t_parts)
        for f in kind.field_names:
            win.fields[f] = to_grid(idx, t, np.concatenate(vals[f]), len(series), grid, how="mean")
        self.metrics.series.labels(kind.name).set(len(series))
        return win

    # ------------------------------------------------------------- one pass

    def run_pass(self, now_ms: int | None = None, *, window_s: float | None = None,
                 emit_all: bool = True) -> dict[str, int]:
        """One analytics pass over [now - window, now]; returns points written per measurement."""
        t0 = time.monotonic()
        now_ms = int(now_ms if now_ms is not None else time.time() * 1000)
        window_ms = int((window_s or self.settings.analytics.window_s) * 1000)
        counts: dict[str, int] = {}
        conditions: list[Condition] = []
        try:
            for kind in self.cat:
                win = self.read_kind(kind, now_ms - window_ms, now_ms)
                if not win.tags:
                    continue
                emit_from = win.grid.t0_ms if emit_all else self._emitted_to.get(kind.name, win.grid.t0_ms - 1) + 1
                # one step of delay: the newest bin is judged once its successor has arrived (the
                # spike test needs both neighbours); detectors.stream_run replays exactly this
                emit_to = int(win.grid.times_ms[-2]) if win.grid.n > 1 else win.grid.t0_ms - 1
                flags = self._qc(win, emit_from, emit_to, counts)
                # each analysis applies to the kinds whose catalogue entry asks for it (index, limits,
                # fill_level), so a new kind gets indices / compliance / forecasts without code naming it,
                # and a river probe with a pH field is not judged by drinking-water limits by accident
                if kind.index:
                    conditions += self._air(win, flags, counts)
                if kind.limits:
                    conditions += self._water(win, flags, counts)
                if kind.fill_level:
                    conditions += self._bins(win, flags, counts)
                self._emitted_to[kind.name] = max(emit_to, emit_from - 1)
            counts[M.ALERTS.name] = self._alerts(conditions)
        except InfluxError:
            self.metrics.passes.labels("error").inc()
            raise
        self.metrics.passes.labels("ok").inc()
        self.metrics.pass_seconds.observe(time.monotonic() - t0)
        self.metrics.last_pass.set(time.time())
        log.info("analytics pass done", extra={"counts": str(counts), "seconds": round(time.monotonic() - t0, 3)})
        return counts

    def _write(self, measurement: str, lines: Iterable[str | None], counts: dict[str, int]) -> None:
        batch: list[str] = []
        n = 0
        for ln in lines:
            if ln is None:
                continue
            batch.append(ln)
            if len(batch) >= WRITE_BATCH:
                self.influx.write(batch)
                n += len(batch)
                batch = []
        if batch:
            self.influx.write(batch)
            n += len(batch)
        counts[measurement] = counts.get(measurement, 0) + n
        self.metrics.written.labels(measurement).inc(n)

    def _qc(self, win: KindWindow, emit_from: int, emit_to: int, counts: dict[str, int]) -> dict[str, np.ndarray]:
        """Run the full detector set per field; write `qc` for bins in [emit_from, emit_to]; return the
        worst data-quality flag per field (S, T).

        Only suspect/fail (3/4) are written: good is implied by absence, "not evaluated" (2:
        warm-up, the newest bin, a seasonal baseline without 3 days) and "missing" (9: the gap
        test flags the first reading after a silence instead) are the absence of a verdict.
        """
        times = win.grid.times_ms
        emit = (times >= emit_from) & (times <= emit_to)
        worst: dict[str, np.ndarray] = {}
        lines: list[str] = []
        ep_lines: list[str | None] = []
        tag_base = [",".join(f"{k}={escape_key(v)}" for k, v in (("city", t["city"]), ("device", t["device"]),
                                                                 ("district", t["district"])) if v)
                    for t in win.tags]
        def exceptions(fname: str, res: dict[str, qc.QcResult], present: np.ndarray) -> None:
            for test, r in res.items():
                # Exceptions only: writing every value x test would multiply the database's
                # write load by ~40.
                mask = present & emit[None, :] & ((r.flag == qc.SUSPECT) | (r.flag == qc.FAIL))
                ss, tt = np.nonzero(mask)
                fl, sc = r.flag[ss, tt], r.score[ss, tt]
                suffix = f",field={escape_key(fname)},kind={escape_key(win.kind.name)},test={test} "
                for s_, t_, f_, c_ in zip(ss.tolist(), tt.tolist(), fl.tolist(), sc.tolist()):
                    fields = f"flag={f_}i" + (f",score={c_!r}" if math.isfinite(c_) else "")
                    lines.append(f"qc,{tag_base[s_]}{suffix}{fields} {int(times[t_])}")  # M.QC, by hand: hot

        for fname, x in win.fields.items():
            if np.isnan(x).all():
                continue
            p = params_for(win.kind, win.kind.field(fname), win.grid.step_ms / 1000.0)
            # float64 like the telemetry read back (a service window is small; the benchmark runs float32)
            # (EWMA / CUSUM / seasonal come from the stateful charts below, never from the windowed set)
            res = run_all(x, p, win.grid.t0_ms, dtype=np.float64, score_dtype=np.float64,
                          tests=self.tests - {"ewma", "cusum", "seasonal"})
            res["gross_range"] = self._gross_range(win, fname, x, p, emit_to)
            res.update(self._charts(win, fname, x, p, emit_to))
            worst[fname] = qc.worst(*(r.flag for name, r in res.items() if name in ("gross_range", "spike",
                                                                                     "flat_line")))
            res = {k: r for k, r in res.items() if k in self.tests}  # only what evaluate scores (and opt-ins)
            ep_lines += self._episodes(win, fname, res, p, emit_to)
            exceptions(fname, res, ~np.isnan(x))
        # the station's co-located fields together (analytics/multivariate.py): one episode per station
        # (field tag "station"); `qc` verdicts on the fields each verdict is about (their share of Q)
        # (opt-in: analytics/alarmset.py)
        mv = [f for f in multivariate.station_fields(win.kind) if f in win.fields and not np.isnan(win.fields[f]).all()]
        if len(mv) >= 2 and "multivariate" in self.tests:
            xs = np.stack([win.fields[f] for f in mv], axis=1)
            p = params_for(win.kind, win.kind.field(mv[0]), win.grid.step_ms / 1000.0)
            r, about = multivariate.station_test(xs, p.g0(win.grid.t0_ms), p.block,
                                                 np.array([win.kind.field(f).resolution for f in mv]))
            ep_lines += self._episodes(win, multivariate.STATION, {"multivariate": r}, p, emit_to)
            for i, fname in enumerate(mv):
                on_field = qc.QcResult(np.where(about[:, i], r.flag, np.int8(qc.GOOD)), r.score)
                exceptions(fname, {"multivariate": on_field}, ~np.isnan(xs[:, i]))
        self._write(M.QC.name, lines, counts)
        self._write(M.QC_EPISODE.name, ep_lines, counts)
        return worst

    def _episodes(self, win: KindWindow, fname: str, res: dict[str, qc.QcResult], p, emit_to: int) -> list[str | None]:  # noqa: ANN001
        """Alarm episodes (:mod:`analytics.episodes`) over the bins up to ``emit_to`` not yet seen; the
        tracker's state is saved for the next pass (or the next start)."""
        st = self.episodes.get(win.kind.name, fname)
        n = int(np.searchsorted(win.grid.times_ms, emit_to, side="right"))
        if n == 0:
            return []
        eps = episodes.update(st, st.rows_for(win.devices), res, p.g0(win.grid.t0_ms), n, win.grid.step_ms)
        self.episodes.save(win.kind.name, fname)
        return [M.QC_EPISODE.line({**{k: v for k, v in win.tags[e.row].items() if v}, "field": fname,
                                   "kind": win.kind.name, "fault": e.fault},
                                  {"end_ms": e.end_ms, "peak_ms": e.peak_ms, "peak_flag": e.peak_flag,
                                   "peak_score": e.peak_score if math.isfinite(e.peak_score) else None,
                                   "peak_test": e.peak_test, "samples": e.samples, "open": int(e.open)},
                                  e.onset_ms) for e in eps]

    def _gross_range(self, win: KindWindow, fname: str, x: np.ndarray, p, emit_to: int) -> qc.QcResult:  # noqa: ANN001
        """Gross range with this deployment's expected span per series (:mod:`analytics.ranges`:
        configured, learned from the first weeks, or the catalogue's); the sensor range still fails."""
        lc = self.ranges_cfg.learn
        lp = ranges.LearnParams(p.fail_lo, p.fail_hi, win.grid.step_ms, lc.days, lc.q_lo, lc.q_hi, lc.margin,
                                lc.min_fraction, p.suspect_lo, p.suspect_hi, p.resolution)
        st = self.ranges.get(win.kind.name, fname)
        n = int(np.searchsorted(win.grid.times_ms, emit_to, side="right"))
        lo, hi = ranges.expected(self.ranges_cfg, st, win.kind.name, fname, win.devices, x, p.g0(win.grid.t0_ms), n,
                                 lp)
        self.ranges.save(win.kind.name, fname)
        return qc.gross_range(x, p.fail_lo, p.fail_hi, lo, hi)

    def _charts(self, win: KindWindow, fname: str, x: np.ndarray, p, emit_to: int) -> dict[str, qc.QcResult]:  # noqa: ANN001
        """The stateful tests (:func:`analytics.stateful.advance`) over the bins up to ``emit_to`` not yet
        processed by this or an earlier run; their states are saved before the pass writes anything
        else, so a restart resumes where the last pass stopped. (S, T) results, 2 elsewhere."""
        src = stateful.Source.of(win.kind, win.fields, p, win.grid.step_ms / 1000.0)
        st = stateful.States.get(lambda name, key: self.states[name].get(win.kind.name, fname, key), p, StatParams(),
                                 self.tests, src is not None)
        n = int(np.searchsorted(win.grid.times_ms, emit_to, side="right"))
        out = stateful.advance(st, win.devices, x, p.g0(win.grid.t0_ms), src=src, n=n)
        for name, store in self.states.items():
            if getattr(st, name) is not None:
                store.save(win.kind.name, fname)
        return out

    def _usable(self, win: KindWindow, flags: dict[str, np.ndarray], fname: str) -> np.ndarray:
        x = win.fields[fname]
        f = flags.get(fname)
        return x if f is None else np.where(f == qc.FAIL, np.nan, x)

    def _tail_mean(self, x: np.ndarray, seconds: float, step_ms: int, how: str = "mean") -> np.ndarray:
        n = max(int(round(seconds * 1000 / step_ms)), 1)
        tail = x[:, -n:]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, which is the answer
            return np.nanmean(tail, axis=1) if how == "mean" else np.nanmedian(tail, axis=1)

    def _air(self, win: KindWindow, flags: dict[str, np.ndarray], counts: dict[str, int]) -> list[Condition]:
        ts = int(win.grid.times_ms[-1])
        conditions: list[Condition] = []
        pols = [p for p in ISPU_POLLUTANTS if p in win.fields]
        step_s = win.grid.step_ms / 1000.0
        for meas, mod in ((M.ISPU, ispu), (M.AQI_US, aqi_us)):
            # per pollutant: (concentration, index, provisional, hours, samples) at the last step, (S,)
            per: dict[str, tuple[np.ndarray, ...]] = {}
            for p in pols:
                if p not in mod.TABLES:
                    continue
                x = self._usable(win, flags, p)
                avg = mod.averaged(p, x, step_s)
                conc = avg.conc[:, -1]
                idx = mod.index(p, conc)
                if meas is M.AQI_US and p == "o3":
                    idx = aqi_us.o3_index(conc, ispu_hourly(x, step_s))
                per[p] = (conc, idx, avg.provisional[:, -1], avg.hours[:, -1], avg.samples[:, -1])
            if not per:
                continue
            stack = np.stack([v[1] for v in per.values()])
            valid = ~np.isnan(stack).all(axis=0)
            best = np.argmax(np.where(np.isnan(stack), -1, stack), axis=0)
            names = list(per)
            lines = []
            for i, tags in enumerate(win.tags):
                rows = [(p, per[p]) for p in names]
                if valid[i]:
                    rows.append((M.POLLUTANT_MAX, per[names[best[i]]]))
                for p, (conc_a, idx_a, prov_a, hours_a, samples_a) in rows:
                    val = idx_a[i]
                    if not math.isfinite(val):
                        continue
                    lvl = int(mod.level(np.array([val]))[0])
                    lines.append(meas.line({**tags, "pollutant": p}, {
                        "value": float(val), "category": mod.category(lvl), "category_level": lvl,
                        "concentration": float(conc_a[i]), "provisional": int(prov_a[i]),
                        "hours": int(hours_a[i]), "samples": int(samples_a[i])}, ts))
                if meas is M.ISPU and valid[i]:
                    val = float(per[names[best[i]]][1][i])
                    lvl = int(ispu.level(np.array([val]))[0])
                    band = ISPU_BANDS[lvl - 1]
                    pol = names[best[i]]
                    conditions.append(Condition(
                        self.rules["ispu_unhealthy"], tags["device"], val, ts, f"{band.label}, {pol}",
                        f"{band.label_en}, {pol}", **self._where(tags), pollutant=pol,
                        concentration=float(per[pol][0][i]), concentration_unit=win.kind.field(pol).unit,
                        averaging_s=float(ispu.AVERAGING_S[pol]), advice_id=band.advice_id,
                        advice_en=band.advice_en))
            self._write(meas.name, lines, counts)
        return conditions

    def _water(self, win: KindWindow, flags: dict[str, np.ndarray], counts: dict[str, int]) -> list[Condition]:
        ts = int(win.grid.times_ms[-1])
        params = [p for p in water.LIMITS if p in win.fields]
        vals = {p: self._tail_mean(self._usable(win, flags, p), WATER_WINDOW_S, win.grid.step_ms, "median")
                for p in params}
        per, overall = water.evaluate(vals)
        exceed = {p: water.exceedance(p, vals[p]) for p in params}
        lines, conditions = [], []
        for i, tags in enumerate(win.tags):
            bad_id, bad_en, worst = [], [], math.nan
            for p in params:
                v = float(vals[p][i])
                if not math.isfinite(v):
                    continue
                lim = water.LIMITS[p]
                lines.append(M.WATER_COMPLIANCE.line({**tags, "parameter": p}, {
                    "value": v, "limit_lo": float(lim.lo if lim.lo is not None else 0.0), "limit_hi": float(lim.hi),
                    "compliant": int(per[p][i])}, ts))
                e = float(exceed[p][i])
                worst = e if not math.isfinite(worst) else max(worst, e)
                if not per[p][i]:
                    bad_id.append(f"{lim.name_id} {v:g}")
                    bad_en.append(f"{lim.name_en} {v:g}")
            if math.isfinite(worst):
                lines.append(M.WATER_COMPLIANCE.line({**tags, "parameter": M.PARAMETER_ALL}, {
                    "value": float(len(bad_id)), "limit_lo": 0.0, "limit_hi": 0.0, "compliant": int(overall[i])}, ts))
                conditions.append(Condition(self.rules["water_noncompliant"], tags["device"], worst, ts,
                                            ", ".join(bad_id) or "-", ", ".join(bad_en) or "-", **self._where(tags),
                                            averaging_s=WATER_WINDOW_S,
                                            advice_id="Jangan minum air tanpa dimasak; PDAM sedang memeriksa.",
                                            advice_en="Do not drink the water unboiled; the utility is checking."))
        self._write(M.WATER_COMPLIANCE.name, lines, counts)
        return conditions

    def _bins(self, win: KindWindow, flags: dict[str, np.ndarray], counts: dict[str, int]) -> list[Condition]:
        ts = int(win.grid.times_ms[-1])
        conditions: list[Condition] = []
        fill = win.kind.fill_level
        if fill in win.fields:
            fc = waste.forecast(self._usable(win, flags, fill), win.grid.step_ms / 1000.0)
            lines = []
            for i, tags in enumerate(win.tags):
                if not math.isfinite(fc.fill[i]):
                    continue
                rate = float(fc.fill_rate[i]) if math.isfinite(fc.fill_rate[i]) else 0.0
                lines.append(M.BIN_FORECAST.line(tags, {
                    "fill": float(fc.fill[i]), "fill_rate": rate,
                    "hours_to_full": float(min(fc.hours_to_full[i], HOURS_TO_FULL_CAP)),
                    "full_by_tomorrow": int(fc.full_by_horizon[i]), "priority": int(fc.priority[i])}, ts))
                conditions.append(Condition(self.rules["bin_full"], tags["device"], float(fc.fill[i]), ts,
                                            **self._where(tags)))
            self._write(M.BIN_FORECAST.name, lines, counts)
        for fname, rule in (("tilt", "bin_tilted"), ("temperature", "bin_fire")):
            if fname in win.fields:
                latest = self._tail_mean(self._usable(win, flags, fname), 3 * win.kind.report_interval_s,
                                         win.grid.step_ms, "median")
                conditions += [Condition(self.rules[rule], t["device"], float(latest[i]), ts, **self._where(t),
                                         averaging_s=3.0 * win.kind.report_interval_s)
                               for i, t in enumerate(win.tags)]
        return conditions

    # ------------------------------------------------------------- alerts

    def _alerts(self, conditions: list[Condition]) -> int:
        self._outbox = [f for f in self._outbox if not f.done()]
        events = self.engine.evaluate(conditions)
        if not events:
            return 0
        lines = [M.ALERTS.line({"department": a.department, "severity": a.severity, "rule": a.rule, "device": a.device,
                                "city": a.city, "district": a.district},
                               {"state": a.state, "value": a.value, "alert_id": a.alert_id,
                                "text_id": a.text_id, "text_en": a.text_en, "lat": a.lat, "lon": a.lon,
                                "observed_ms": a.observed_ms, "pollutant": a.pollutant or None,
                                "concentration": a.concentration, "concentration_unit": a.concentration_unit or None,
                                "threshold": a.threshold, "averaging_s": a.averaging_s}, a.updated_ms)
                 for a in events]
        counts: dict[str, int] = {}
        self._write(M.ALERTS.name, lines, counts)
        for a in events:
            self.metrics.alerts.labels(a.state, a.department).inc()
            self.deliver(a)
        return counts.get(M.ALERTS.name, 0)

    def _where(self, tags: dict[str, str]) -> dict[str, Any]:
        pos = self.stations.get(tags.get("device", ""))
        return {"city": tags.get("city", ""), "district": tags.get("district", ""),
                "lat": pos.lat if pos else None, "lon": pos.lon if pos else None}

    def deliver(self, a) -> None:  # noqa: ANN001
        """Publish on MQTT and queue e-mails/webhooks for the matching subscriptions (durably, before
        sending); the delivery worker drains the queue (a slow webhook never stalls a pass)."""
        now_ms = int(time.time() * 1000)
        for sub in self.subscriptions:
            if sub.channel == "email" and not self.settings.analytics.smtp_host:
                continue  # no mail server configured: nothing could ever be sent
            if sub.wants(a.department, a.city, a.district, a.severity):
                self.outbox.add(a, sub.channel, sub.to, now_ms)
        self._outbox.append(self._pool.submit(self._deliver_now, a))

    def flush_deliveries(self, timeout_s: float = 60.0, *, retry: bool = True) -> dict[str, int]:
        """Wait for queued deliveries, retrying failed ones as their backoff allows, up to ``timeout_s``
        (``--once`` exits after it; what is still undelivered stays queued for the next start).
        Returns successes per channel."""
        deadline = time.monotonic() + timeout_s
        done: dict[str, int] = {}
        while True:
            futures, self._outbox = self._outbox, []
            for f in futures:
                try:
                    for ch, good in f.result(timeout=max(deadline - time.monotonic(), 0.1)).items():
                        done[ch] = done.get(ch, 0) + int(good)
                except Exception as exc:  # noqa: BLE001 - a delivery bug must not take the service down
                    log.error("alert delivery crashed", extra={"error": f"{type(exc).__name__}: {exc}"})
            nxt = self.outbox.next_due_ms()
            if nxt is None or not retry:
                return done
            wait_s = max(nxt / 1000 - time.time(), 0.0)
            if time.monotonic() + wait_s > deadline:
                return done
            time.sleep(wait_s)
            self._outbox.append(self._pool.submit(self._drain))

    def _deliver_now(self, a) -> dict[str, bool]:  # noqa: ANN001
        ok: dict[str, bool] = {}
        if self.mqtt is not None:
            try:
                info = delivery.publish_mqtt(self.mqtt, self.settings.mqtt.topic_root, a, qos=1)
                info.wait_for_publish(timeout=10)
                ok["mqtt"] = info.is_published()
            except (RuntimeError, ValueError, OSError) as exc:
                log.warning("mqtt alert publish failed", extra={"error": str(exc)})
                ok["mqtt"] = False
            if not ok["mqtt"]:
                self.metrics.delivery_failures.labels("mqtt").inc()
        ok.update(self._drain())
        return ok

    def _drain(self) -> dict[str, bool]:
        """Send every due outbox item once; failures are rescheduled (durably) with backoff."""
        s = self.settings.analytics
        secret = s.webhook_secret.get_secret_value().encode() if s.webhook_secret else None
        ok: dict[str, bool] = {}
        for item in self.outbox.due(int(time.time() * 1000)):
            good, permanent, err = self._send(item, secret)
            ok[item.channel] = ok.get(item.channel, False) or good
            if good:
                self.outbox.done(item)
                continue
            self.metrics.delivery_failures.labels(item.channel).inc()
            if self.outbox.failed(item, int(time.time() * 1000), err, permanent=permanent):
                log.error("alert delivery given up", extra={"channel": item.channel, "alert_id": item.alert.alert_id,
                                                            "attempts": item.attempts + 1, "error": err})
        return ok

    def _send(self, item: Item, secret: bytes | None) -> tuple[bool, bool, str]:
        s = self.settings.analytics
        if item.channel == "webhook":
            return delivery.webhook_attempt(item.target, secret, item.alert)
        if not s.smtp_host:
            return False, False, "no smtp_host configured"
        return delivery.email_attempt(s.smtp_host, s.smtp_port, item.target, item.alert)


def _legacy_subscriptions(settings: Settings) -> list[Subscription]:
    """``webhook_url`` (every alert) and ``alert_email_to`` (department -> address) as subscriptions."""
    a = settings.analytics
    subs = [Subscription(channel="webhook", to=a.webhook_url)] if a.webhook_url else []
    subs += [Subscription(channel="email", to=to, departments=[dept]) for dept, to in a.alert_email_to.items()]
    return subs
