"""A day of data in exactly the measurement schemas of docs/team-interfaces.md, for tests.

Used by the dashboards and open-data tests that need a known, fast fixture (every panel
query must return data of the expected shape; the API formats; the public page). It is not
what the previews or the demo show: those run the real pipeline (``kotacerdas previews``).
Telemetry fields come from the catalogue (typical value, expected span); derived
measurements come from the real formulas: ISPU and US AQI from analytics' own ``index``
(P.14/2020 and EPA tables), compliance against kotacerdas/standards.py's limits, so the
categories match the values. Averaging is not replayed here (a reading stands for its
period); tests of averaging live in tests/analytics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics import aqi_us, ispu
from kotacerdas import contract
from kotacerdas.catalogue import Catalogue, load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas import measurements as M
from kotacerdas.standards import ISPU_POLLUTANTS, QARTOD_FAIL, QARTOD_GOOD, QARTOD_SUSPECT, WATER_LIMITS

from dashboards import standards as std

# two cities so the city/district/device variables have something to filter
LAYOUT: tuple[tuple[str, str], ...] = (("depok", "beji"), ("depok", "sukmajaya"), ("bogor", "tanah_sareal"))
DEPOK_CENTRE = (-6.40, 106.82)
BOGOR_CENTRE = (-6.56, 106.79)


@dataclass(frozen=True)
class Device:
    device: str
    kind: str
    city: str
    district: str
    lat: float
    lon: float
    department: str


def devices(cat: Catalogue, per_kind: int = 3) -> list[Device]:
    out = []
    for k in cat:
        for i in range(per_kind):
            city, district = LAYOUT[i % len(LAYOUT)]
            lat0, lon0 = DEPOK_CENTRE if city == "depok" else BOGOR_CENTRE
            out.append(Device(f"{k.name.replace('_', '')}-{i + 1:03d}", k.name, city, district,
                              round(lat0 + 0.01 * i, 5), round(lon0 + 0.012 * i, 5), k.department))
    return out


def device_list_json(devs: list[Device]) -> list[dict]:
    """The simulators' device-list format (docs/team-interfaces.md, "Device list exchange")."""
    return [dict(d.__dict__) for d in devs]


def generate(end_ms: int, hours: float = 24.0, per_kind: int = 3, seed: int = 7,
             cat: Catalogue | None = None) -> tuple[list[str], list[Device]]:
    cat = cat or load_catalogue()
    rng = np.random.default_rng(seed)
    devs = devices(cat, per_kind)
    start = end_ms - int(hours * 3600_000)
    lines: list[str | None] = []
    for k in cat:
        raw_m = M.raw(k)
        step = max(k.report_interval_s, 300) * 1000  # coarser than real: keeps tests fast
        ts = np.arange(start + step, end_ms + 1, step)
        n = len(ts)
        phase = 2 * np.pi * (ts % 86400_000) / 86400_000
        for di, d in enumerate(x for x in devs if x.kind == k.name):
            vals: dict[str, np.ndarray] = {}
            for f in k.fields:
                # a diurnal swing around the catalogue's typical value, stronger at later stations
                pollutant = f.unit == "ug/m3"
                base = f.typical * (1 + (0.3 if pollutant else 0.03) * di)
                swing = 0.45 if pollutant else 0.1
                v = base * (1 + swing * np.sin(phase - 1.0 + 0.3 * di)) + rng.normal(0, 0.03 * abs(base) + 1e-9, n)
                vals[f.name] = np.clip(v, f.lo, f.hi)
            if k.fill_level:
                # bins fill up linearly and are emptied when full
                rate = 2.0 + 1.5 * di
                # the last reading is just past "due" for the first bin, lower for the others (one bin due now)
                fill = (std.BIN_FILL_DUE + 2.0 - 30 * di - (n - 1 - np.arange(n)) * rate * step / 3600_000) % 100
                vals[k.fill_level] = fill
            batt = 4.1 - 0.3 * np.arange(n) / n - 0.25 * di if k.battery else np.full(n, 5.0)
            for j in range(n):
                if di == 1 and n // 3 < j < n // 3 + 6:
                    continue  # a data gap for the fleet dashboard
                fields: dict[str, object] = {f: round(float(vals[f][j]), 4) for f in k.field_names}
                fields.update(battery=round(float(batt[j]), 3), seq=j, fw="1.2.0" if di else "1.1.4",
                              rssi=int(-60 - 8 * di), gw_lag_ms=int(150 + 40 * di))
                lines.append(raw_m.line({"device": d.device, "city": d.city, "district": d.district,
                                         "kind": k.name}, fields, int(ts[j])))
            tags = {"device": d.device, "city": d.city, "district": d.district}
            hourly = np.arange(start + 3600_000, end_ms + 1, 3600_000)
            for t in hourly:
                j = min(int((t - start) // step), n - 1)
                # derived: ISPU / AQI for air, compliance for water, forecast for bins
                if k.index:
                    for table, bands, mod in ((M.ISPU, std.ISPU_BANDS, ispu), (M.AQI_US, std.AQI_US_BANDS, aqi_us)):
                        subs: dict[str, tuple[float, float]] = {}
                        for pol in (p for p in ISPU_POLLUTANTS if k.has_field(p)):
                            conc = float(vals[pol][j])
                            idx = float(mod.index(pol, np.array([conc]))[0])
                            subs[pol] = (idx, conc)
                        subs[M.POLLUTANT_MAX] = max(subs.values())
                        for pol, (idx, conc) in subs.items():
                            b = std.category_of(bands, idx)
                            lines.append(table.line({**tags, "pollutant": pol},
                                                     {"value": round(idx, 1), "category": b.label,
                                                      "category_level": b.level, "concentration": round(conc, 2)}, int(t)))
                if k.limits:
                    # the parameters and limits analytics applies (Permenkes 2/2023, kotacerdas/standards.py);
                    # the third sampling point breaches its first regulated parameter
                    regulated = [p for p in WATER_LIMITS if p in vals]
                    breaches = 0
                    for p in regulated:
                        lim = WATER_LIMITS[p]
                        val = float(vals[p][j])
                        ok = int(lim.complies(val)) if not (di == 2 and p == regulated[0]) else 0
                        breaches += 1 - ok
                        lines.append(M.WATER_COMPLIANCE.line({**tags, "parameter": p},
                                                             {"value": round(val, 3), "limit_lo": lim.lo or 0.0,
                                                              "limit_hi": lim.hi, "compliant": ok}, int(t)))
                    lines.append(M.WATER_COMPLIANCE.line({**tags, "parameter": M.PARAMETER_ALL},
                                                         {"value": breaches, "limit_lo": 0.0, "limit_hi": 0.0,
                                                          "compliant": int(breaches == 0)}, int(t)))
                if k.fill_level:
                    fill_now = float(vals[k.fill_level][j])
                    rate = 2.0 + 1.5 * di
                    htf = max(0.0, (100 - fill_now) / rate)
                    lines.append(M.BIN_FORECAST.line(tags, {
                        "fill": round(fill_now, 1), "fill_rate": rate, "hours_to_full": round(htf, 2),
                        "full_by_tomorrow": int(htf <= 24), "priority": 0}, int(t)))
                # qc: one suspect and one failing reading per device and few hours
                if (t - start) // 3600_000 % 5 == di:
                    f = k.fields[di % len(k.fields)]
                    lines.append(M.QC.line({**tags, "kind": k.name, "field": f.name, "test": "gross_range"},
                                           {"flag": QARTOD_SUSPECT if di % 2 == 0 else QARTOD_FAIL, "score": 0.8},
                                           int(t)))
                lines.append(M.QC.line({**tags, "kind": k.name, "field": k.fields[0].name, "test": "spike"},
                                       {"flag": QARTOD_GOOD, "score": 0.0}, int(t)))
            # device_status every 10 minutes; device 2 goes offline in the last hour
            for t in np.arange(start + 600_000, end_ms + 1, 600_000):
                offline = di == 2 and t > end_ms - 3600_000
                lines.append(M.DEVICE_STATUS.line({**tags, "kind": k.name}, {
                    "state": "offline" if offline else "online", "online": 0 if offline else 1,
                    "stale": int(di == 1 and t > end_ms - 1800_000), "last_seen_ms": int(t - (3000_000 if offline else 30_000)),
                    "battery": round(float(batt[-1]), 3), "fw": "1.2.0" if di else "1.1.4"}, int(t)))
            if di == 0:
                lines.append(M.ALERTS.line({"department": k.department, "severity": "warning",
                                                    "rule": f"{k.name}_synthetic", "device": d.device},
                                         {"state": "open", "value": 1.0, "alert_id": f"a-{d.device}",
                                          "text_id": "Nilai di luar rentang", "text_en": "Value out of range"},
                                         end_ms - 1800_000))
    # bin_forecast priority: rank by hours_to_full at each hour (1 = most urgent)
    lines = _rank_bins(lines)
    # pipeline counters every 10 s over the last two hours; dead letters with reasons
    pstart = end_ms - 2 * 3600_000
    for svc, inst in (("ingest", "ingest-0"), ("gateway", "gw-0")):
        for i, tp in enumerate(range(pstart, end_ms + 1, 10_000)):
            lines.append(M.KC_PIPELINE.line({"service": svc, "instance": inst}, {
                "received": 50 * i, "written": 49 * i, "spooled": 0, "deadlettered": i // 10,
                "lag_ms": float(200.0 + 50 * np.sin(i / 30)), "batch_latency_ms": 12.0 + (i % 7),
                "spool_bytes": 0 if i % 200 else 4096}, tp))
    for i, (stage, reason) in enumerate((("gateway", "out_of_range"), ("gateway", "bad_json"),
                                         ("gateway", "unknown_device"), ("ingest", "write_rejected"))):
        for r in range(i + 1):
            lines.append(M.DEADLETTER.line({"stage": stage, "reason": reason}, {
                "detail": f"synthetic {reason} #{r}", "topic": contract.telemetry_topic("kc", "depok", "air", f"air-00{r + 1}"),
                "size": 120 + r, "count": 1}, end_ms - (r + 1) * 600_000 - i * 1000))
    return [ln for ln in lines if ln], devs


def _rank_bins(lines: list[str | None]) -> list[str | None]:
    out: list[str | None] = []
    by_time: dict[str, list[tuple[float, int]]] = {}
    for i, ln in enumerate(lines):
        if ln and ln.startswith(f"{M.BIN_FORECAST.name},"):
            ts = ln.rsplit(" ", 1)[1]
            htf = float(ln.split("hours_to_full=")[1].split(",")[0])
            by_time.setdefault(ts, []).append((htf, i))
    rank: dict[int, int] = {}
    for entries in by_time.values():
        for r, (_, i) in enumerate(sorted(entries), start=1):
            rank[i] = r
    for i, ln in enumerate(lines):
        out.append(ln.replace("priority=0i", f"priority={rank[i]}i") if i in rank and ln else ln)
    return out


def write(client: InfluxClient, end_ms: int, hours: float = 24.0, per_kind: int = 3) -> list[Device]:
    lines, devs = generate(end_ms, hours, per_kind)
    for i in range(0, len(lines), 5000):
        client.write(lines[i:i + 5000])
    return devs
