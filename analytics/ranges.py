"""Expected ranges per deployment: configured, or learned from each series' first weeks.

The catalogue's ``expected`` spans describe a tropical city (water 15-40 C): a river in a cold
climate reads 2-10 C and would be "suspect" all year. The gross range test therefore takes its
suspect bounds per series from, in this order:

1. the deployment's ranges file (``settings.analytics.ranges_file``, YAML, validated by
   :func:`load`: unknown kinds, fields or keys, ``lo >= hi``, bounds outside the sensor's
   ``range`` are refused with every problem named):

   .. code-block:: yaml

      learn: {days: 14, q_lo: 0.001, q_hi: 0.999, margin: 0.5}   # or learn: {enabled: false}
      ranges:
        - {kind: water, field: temperature, lo: 0.0, hi: 18.0, devices: ["river-*"]}

2. when learning is on (the default): the series' own span over its first ``days`` of readings
   (quantiles ``q_lo`` .. ``q_hi`` of a histogram over the sensor range, widened by ``margin`` x
   that span (at least 10 resolution steps) on each side, clipped to the sensor range). While it
   learns, the catalogue's span applies only if most of the series' first hour of readings lay
   inside it (a tropical station is checked from its second hour; a cold river is not "suspect"
   for two weeks); in the first hour, and for a series that does not fit the catalogue, there is
   no suspect bound (the sensor's ``range`` still fails impossible readings);
3. learning off: the catalogue's ``expected``.

The learning histogram and the learned bounds are kept per series in
``state_dir/analytics/ranges`` (each bin counted once, in grid order, like the other stateful
detectors). To re-learn a series, delete its kind.field file. A fault during the first weeks
widens the learned span only as far as its share of readings passes ``q_lo`` / ``q_hi``.

Arrays: values (S, n) field units; bounds (S, T); histogram (S, :data:`BINS`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analytics import statefile
from kotacerdas.catalogue import Catalogue

BINS = 1000  # histogram bins over the sensor range (water temperature: 0.1 C)
FORMAT = 1
NEVER = np.iinfo(np.int64).max
MIN_PAD_STEPS = 10  # resolution steps added on each side of a learned span, at least


class RangesError(ValueError):
    """The ranges file is invalid; the message lists every problem."""


class LearnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    days: float = Field(default=14.0, gt=0)
    q_lo: float = Field(default=0.001, ge=0, lt=0.5)
    q_hi: float = Field(default=0.999, gt=0.5, le=1)
    margin: float = Field(default=0.5, ge=0)  # fraction of the learned span added on each side
    min_fraction: float = Field(default=0.5, gt=0, le=1)  # readings needed, as a fraction of the period's bins


class RangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    field: str
    lo: float
    hi: float
    devices: list[str] = Field(default_factory=lambda: ["*"])  # shell-style patterns


class RangesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learn: LearnSpec = Field(default_factory=lambda: LearnSpec())
    ranges: list[RangeSpec] = Field(default_factory=list)


def load(path: Path | None, cat: Catalogue) -> RangesConfig:
    """The ranges file at ``path`` (None: defaults, learning on), checked against the catalogue."""
    if path is None:
        return RangesConfig()
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        cfg = RangesConfig.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise RangesError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise RangesError(f"{path}: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from exc
    problems = []
    for i, r in enumerate(cfg.ranges):
        where = f"ranges.{i} ({r.kind}.{r.field})"
        if r.kind not in cat:
            problems.append(f"{where}: unknown kind")
            continue
        if r.field not in cat[r.kind].field_names:
            problems.append(f"{where}: {r.kind} has no field {r.field!r}")
            continue
        f = cat[r.kind].field(r.field)
        if not r.lo < r.hi:
            problems.append(f"{where}: lo {r.lo} must be below hi {r.hi}")
        if r.lo < f.lo or r.hi > f.hi:
            problems.append(f"{where}: [{r.lo}, {r.hi}] leaves the sensor range [{f.lo}, {f.hi}]")
    if cfg.learn.q_lo >= cfg.learn.q_hi:
        problems.append("learn: q_lo must be below q_hi")
    if problems:
        raise RangesError(f"{path}: " + "; ".join(problems))
    return cfg


def configured(cfg: RangesConfig, kind: str, field: str, devices: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Configured bounds per device (S,), NaN where no entry matches (the last matching entry wins)."""
    lo, hi = np.full(len(devices), np.nan), np.full(len(devices), np.nan)
    for r in cfg.ranges:
        if r.kind != kind or r.field != field:
            continue
        hit = np.array([any(fnmatch.fnmatchcase(d, p) for p in r.devices) for d in devices], dtype=bool)
        lo[hit], hi[hit] = r.lo, r.hi
    return lo, hi


@dataclass(frozen=True)
class LearnParams:
    sensor_lo: float  # field units: catalogue `range`
    sensor_hi: float
    step_ms: int
    days: float = 14.0
    q_lo: float = 0.001
    q_hi: float = 0.999
    margin: float = 0.5
    min_fraction: float = 0.5
    catalogue_lo: float = np.nan  # field units: catalogue `expected`
    catalogue_hi: float = np.nan
    resolution: float = 0.0  # field units: the pad is at least MIN_PAD_STEPS of it (a series that sat
    # on one quantised value while learning must not make its first honest change "suspect")

    @property
    def probe(self) -> int:
        """Grid bins of the first hour."""
        return max(int(round(PROBE_S * 1000 / self.step_ms)), 1)

    @property
    def bins(self) -> int:
        """Grid bins in the learning period."""
        return max(int(round(self.days * 86_400_000 / self.step_ms)), 1)


_ARRAYS = ("first_g", "learned_g", "counts", "lo", "hi", "probe_in", "probe_n", "fits")
PROBE_S = 3600.0  # readings that decide whether the catalogue's span fits a series while it learns


class RangeState:
    """Per series: first bin with a reading (-1 none yet), the bin from which the learned bounds
    apply (:data:`NEVER` until learned), the histogram of the learning period, the bounds."""

    def __init__(self, devices: list[str]):
        s = len(devices)
        self.devices = list(devices)
        self.first_g = np.full(s, -1, dtype=np.int64)
        self.learned_g = np.full(s, NEVER, dtype=np.int64)
        self.counts = np.zeros((s, BINS))
        self.lo, self.hi = np.full(s, np.nan), np.full(s, np.nan)
        # first hour: readings inside the catalogue span / all; fits: 1 the span applies while learning
        # (from first_g + probe bins), 0 not, -1 undecided
        self.probe_in, self.probe_n = np.zeros(s), np.zeros(s)
        self.fits = np.full(s, -1, dtype=np.int64)
        self.g_next: int | None = None

    def rows_for(self, devices: list[str]) -> np.ndarray:
        return statefile.rows_for(self, devices, _ARRAYS, lambda n: RangeState([""] * n))

    def save(self, path: Path) -> None:
        statefile.save(path, self.devices, [FORMAT, BINS, -1 if self.g_next is None else self.g_next],
                       {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: Path) -> "RangeState | None":
        got = statefile.restore(path, _ARRAYS, [FORMAT, BINS], cls)
        return None if got is None else got[0]


def _quantile_edges(counts: np.ndarray, q: float, lp: LearnParams) -> np.ndarray:
    """The ``q`` quantile (S,) of histograms (S, BINS) over [sensor_lo, sensor_hi], at bin centres."""
    cum = np.cumsum(counts, axis=1)
    target = q * cum[:, -1:]
    idx = np.minimum((cum < target).sum(axis=1), BINS - 1)
    width = (lp.sensor_hi - lp.sensor_lo) / BINS
    return lp.sensor_lo + (idx + 0.5) * width


def learn(st: RangeState, rows: np.ndarray, x: np.ndarray, g0: int, lp: LearnParams) -> None:
    """Count bins ``g0 .. g0 + n - 1`` of ``x`` (len(rows), n) into the learning histograms (bins before
    ``st.g_next`` were counted by an earlier pass) and fix the bounds of series whose period ended."""
    n = x.shape[1]
    first = 0 if st.g_next is None else max(st.g_next - g0, 0)
    if n == 0 or first >= n:
        return
    v = x[:, first:]
    g = g0 + first + np.arange(v.shape[1])
    present = ~np.isnan(v)
    seen = present.any(axis=1)
    fg = st.first_g[rows]
    new = (fg < 0) & seen
    fg = np.where(new, g[np.argmax(present, axis=1)], fg)
    st.first_g[rows] = fg
    end = np.where(fg >= 0, fg + lp.bins, NEVER)  # first bin after the learning period
    inside = present & (g[None, :] < end[:, None]) & (st.learned_g[rows] == NEVER)[:, None]
    in_probe = present & (g[None, :] < np.where(fg >= 0, fg + lp.probe, NEVER)[:, None])
    with np.errstate(invalid="ignore"):
        fit = (v >= lp.catalogue_lo) & (v <= lp.catalogue_hi)
    st.probe_in[rows] += (in_probe & fit).sum(axis=1)
    st.probe_n[rows] += in_probe.sum(axis=1)
    decide = (st.fits[rows] < 0) & (fg >= 0) & (fg + lp.probe <= g[-1] + 1)
    st.fits[rows[decide]] = (2 * st.probe_in[rows[decide]] > st.probe_n[rows[decide]]).astype(np.int64)
    ri, ci = np.nonzero(inside)
    b = np.clip(((v[ri, ci] - lp.sensor_lo) / (lp.sensor_hi - lp.sensor_lo) * BINS).astype(np.int64), 0, BINS - 1)
    np.add.at(st.counts, (rows[ri], b), 1.0)
    # the period is over within this pass: bounds from the histogram, applying from its end
    last = g[-1]
    done = (st.learned_g[rows] == NEVER) & (end <= last)
    if done.any():
        r = rows[done]
        enough = st.counts[r].sum(axis=1) >= lp.min_fraction * lp.bins
        qlo, qhi = _quantile_edges(st.counts[r], lp.q_lo, lp), _quantile_edges(st.counts[r], lp.q_hi, lp)
        pad = np.maximum(lp.margin * np.maximum(qhi - qlo, (lp.sensor_hi - lp.sensor_lo) / BINS),
                         MIN_PAD_STEPS * lp.resolution)
        st.lo[r] = np.where(enough, np.maximum(qlo - pad, lp.sensor_lo), np.nan)
        st.hi[r] = np.where(enough, np.minimum(qhi + pad, lp.sensor_hi), np.nan)
        st.learned_g[r] = np.where(enough, end[done], NEVER)
        # too few readings: learn again from the next reading on
        st.first_g[r] = np.where(enough, st.first_g[r], -1)
        again = r[~enough]
        st.counts[again] = 0.0
        st.probe_in[again] = st.probe_n[again] = 0.0
        st.fits[again] = -1
    st.g_next = g0 + n


def bounds(st: RangeState, rows: np.ndarray, g0: int, n: int, lp: LearnParams) -> tuple[np.ndarray, np.ndarray]:
    """Suspect bounds for bins ``g0 .. g0 + n - 1``, each (len(rows), n): learned once learned, the
    catalogue's while learning a series it fits (after its first hour), else NaN."""
    g = g0 + np.arange(n)[None, :]
    on = g >= st.learned_g[rows][:, None]
    cat = (st.fits[rows] == 1)[:, None] & (g >= (st.first_g[rows] + lp.probe)[:, None]) & ~on
    lo = np.where(on, st.lo[rows][:, None], np.where(cat, lp.catalogue_lo, np.nan))
    hi = np.where(on, st.hi[rows][:, None], np.where(cat, lp.catalogue_hi, np.nan))
    return lo, hi


class RangeStore(statefile.Store[RangeState]):
    """Learning states of one service, one file per (kind, field) under ``root``."""

    def __init__(self, root: Path):
        super().__init__(root, lambda path, _: RangeState.load(path), lambda _: RangeState([]))


def expected(cfg: RangesConfig, st: RangeState, kind: str, field: str, devices: list[str], x: np.ndarray,
             g0: int, learn_to: int, lp: LearnParams) -> tuple[np.ndarray, np.ndarray]:
    """Suspect bounds (S, T) for a window ``x`` (S, T) whose column 0 is bin ``g0``: configured, else
    learned (after counting columns up to ``learn_to`` - 1), else the catalogue's when learning is off."""
    s, t = x.shape
    clo, chi = configured(cfg, kind, field, devices)
    if cfg.learn.enabled:
        rows = st.rows_for(devices)
        learn(st, rows, x[:, :learn_to], g0, lp)
        lo, hi = bounds(st, rows, g0, t, lp)
    else:
        lo, hi = np.full((s, t), lp.catalogue_lo), np.full((s, t), lp.catalogue_hi)
    fixed = ~np.isnan(clo)
    lo[fixed], hi[fixed] = clo[fixed, None], chi[fixed, None]
    return lo, hi


__all__ = ["BINS", "LearnParams", "RangeSpec", "RangeState", "RangeStore", "RangesConfig", "RangesError", "bounds",
           "configured", "expected", "learn", "load"]
