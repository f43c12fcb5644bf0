"""Multivariate residuals per station: rolling PCA over its co-located fields (Hotelling T², Q / SPE).

Univariate tests judge each field against its own past. A fault that breaks the *relationship*
between fields (PM10 no longer following PM2.5, humidity not falling as temperature rises, a
co-located pair drifting apart) while every field stays inside its usual range and moves
smoothly passes them all. Here every station (series) gets its own principal-component model of
its F fields, re-fitted every block from the previous ``k`` blocks (the data's drift is followed;
blocks aligned to absolute grid time as in :mod:`analytics.baseline`, so a live pass gives what a
batch run gives and a verdict depends on the past only):

- each field standardised by the training blocks' mean and standard deviation (never below
  ``floor`` = the fields' resolutions, so a quantised field that sat still is no division by 0);
- the correlation matrix's eigenvectors; the components whose eigenvalue is at least
  ``lam_min`` form the model (at least one, at most F - 1): the rest are the station's tight linear
  relationships (a combination of fields that varies by less than ``lam_min`` of one field's
  variance). A rule on the eigenvalue, not on a fraction of explained variance: a station with
  several independent fields (temperature, O3, ...) and one tight pair (PM2.5 / PM10) would
  otherwise put an independent field into the residual and drown the pair's relationship;
- T² = sum over the model's components of score² / eigenvalue (how far along the usual
  directions), Q = the squared residual off the model (how far off the usual relationship).

The verdict is on Q / theta1 (theta1 = the sum of the residual eigenvalues: Q's expected value
when the model holds, J. E. Jackson and G. S. Mudholkar, "Control procedures for residuals
associated with principal component analysis", Technometrics 21(3), 1979) divided by its usual
value in the station's previous blocks (:func:`past_scale`: real residuals are autocorrelated and
heavy-tailed, far beyond the theoretical limits): > ``suspect`` -> 3, > ``fail`` -> 4 (chosen on
the simulator's clean data, docs/analytics.md).
Limitation: the model is re-fitted from the recent past *including* a fault's first block, so a
persistent relationship fault is flagged for about its first hour (one block) and then absorbed
(the episode still records its onset). Excluding flagged samples from training would make each
block depend on the verdicts before it (a state carried across passes, like analytics/chartstate.py):
not done.

A sample with any of the fields missing, or without ``min_blocks`` usable training blocks, is
not evaluated (2) or missing (9 when every field is missing).

Shapes: x (S, F, T) field units; blocks (S, NB, ...); results (S, T).
"""

from __future__ import annotations

import numpy as np

from analytics import baseline as bl
from analytics.qc import MISSING, NOT_EVALUATED, QcResult, _threshold_flags

STATION = "station"  # the `qc` / `qc_episode` field tag of this test's verdicts (all of a station's fields)
K_BLOCKS = 12  # training blocks (12 h with hourly blocks): within the service's 24 h window
MIN_BLOCKS = 6
LAM_MIN = 0.05
SUSPECT_Q = 20.0
FAIL_Q = 40.0


def _trailing_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over the previous ``k`` blocks (never the block itself) along axis 1 of (S, NB, ...)."""
    c = np.cumsum(a, axis=1)
    out = np.zeros_like(a)
    out[:, 1:] = c[:, :-1]
    if k < a.shape[1]:
        out[:, k + 1 :] -= c[:, : a.shape[1] - k - 1]
    return out


def fit_score(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, k: int = K_BLOCKS,
              min_blocks: int = MIN_BLOCKS, lam_min: float = LAM_MIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T², Q / theta1, evaluated) each (S, T) for a window x (S, F, T) whose column 0 is grid index ``g0``.

    ``floor``: smallest standard deviation per field (F,) or one for all, field units.
    """
    s, f, t = x.shape
    blocks = bl.Blocks(t, g0, block)
    nb, b = blocks.nb, blocks.b
    tiles = np.stack([blocks.tiles(x[:, i]) for i in range(f)], axis=-1)  # (S, NB, b, F)
    complete = ~np.isnan(tiles).any(axis=-1)  # (S, NB, b): every field present
    z0 = np.where(complete[..., None], tiles, 0.0)
    n = complete.sum(axis=2).astype(np.float64)  # (S, NB)
    usable = blocks.usable(n) & (n > f)
    n = np.where(usable, n, 0.0)
    sx = np.where(usable[..., None], z0.sum(axis=2), 0.0)  # (S, NB, F)
    sxx = np.matmul(z0.transpose(0, 1, 3, 2), z0)  # (S, NB, F, F): batched, faster than einsum
    sxx[~usable] = 0.0
    cnt = _trailing_sum(usable.astype(np.float64), k)
    tn = _trailing_sum(n, k)
    tsx = _trailing_sum(sx, k)
    tsxx = _trailing_sum(sxx, k)
    ok = (cnt >= min_blocks) & (tn > f)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = tsx / np.maximum(tn, 1.0)[..., None]
        cov = tsxx / np.maximum(tn, 1.0)[..., None, None] - mean[..., :, None] * mean[..., None, :]
    fl = np.broadcast_to(np.asarray(floor, dtype=np.float64), (f,))
    std = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), np.maximum(fl, 1e-9) ** 2))  # (S, NB, F)
    corr = cov / (std[..., :, None] * std[..., None, :])
    corr = np.where(ok[..., None, None], corr, np.eye(f))
    lam, vec = np.linalg.eigh(corr)  # ascending eigenvalues, (S, NB, F) and (S, NB, F, F)
    lam, vec = lam[..., ::-1], vec[..., ::-1]  # leading first
    lam = np.maximum(lam, 1e-6 * f)
    m = np.clip((lam >= lam_min).sum(axis=-1), 1, f - 1)  # components in the model, (S, NB)
    in_model = np.arange(f) < m[..., None]  # (S, NB, F)
    theta1 = np.where(in_model, 0.0, lam).sum(axis=-1)  # (S, NB)
    z = (tiles - mean[:, :, None, :]) / std[:, :, None, :]  # (S, NB, b, F)
    sc = np.matmul(np.nan_to_num(z), vec)  # (S, NB, b, F) component scores
    np.square(sc, out=sc)
    t2 = np.matmul(sc, (in_model / lam)[..., None])[..., 0]  # weighted sums over F as batched products
    q = np.matmul(sc, (~in_model).astype(sc.dtype)[..., None])[..., 0] / theta1[:, :, None]
    valid = complete & ok[:, :, None]

    def back(a: np.ndarray) -> np.ndarray:  # (S, NB, b) -> (S, T)
        return a.reshape(s, nb * b)[:, blocks.lead : blocks.lead + t]
    evaluated = back(valid)
    return np.where(evaluated, back(t2), np.nan), np.where(evaluated, back(q), np.nan), evaluated


def past_scale(q: np.ndarray, g0: int, block: int, k: int = K_BLOCKS, min_blocks: int = MIN_BLOCKS) -> np.ndarray:
    """Each sample's usual Q / theta1 (S, T): the median over the previous ``k`` blocks of each block's
    90th percentile of it, at least 1. Real residuals are heavy-tailed and differ from station to
    station (a bin's fill and distance are one quantity; an air station's pollutants burst); the
    verdict is on Q relative to what this station's own recent past showed, like the Hampel
    scale's tail term (:func:`analytics.stats.hampel`)."""
    blocks = bl.Blocks(q.shape[1], g0, block)
    tl = blocks.tiles(q)
    n = (~np.isnan(tl)).sum(axis=2)
    tl.sort(axis=-1)  # NaN sort last: the n readings lead
    pos = np.maximum((0.9 * (n - 1)).astype(np.int64), 0)
    p90 = np.take_along_axis(tl, pos[..., None], axis=-1)[..., 0]
    p90[~blocks.usable(n)] = np.nan
    usual = bl.trailing(p90, k, min_blocks)
    return blocks.expand(np.fmax(usual, 1.0))


def multivariate(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, suspect: float = SUSPECT_Q,
                 fail: float = FAIL_Q, **kw) -> QcResult:
    """The station test: flags and score Q / theta1 (S, T) for x (S, F, T) (see the module docstring)."""
    _, q, _ = fit_score(x, g0, block, floor, **kw)
    q = q / past_scale(q, g0, block, kw.get("k", K_BLOCKS), kw.get("min_blocks", MIN_BLOCKS))
    all_missing = np.isnan(x).all(axis=1)
    flag = np.empty(q.shape, dtype=np.int8)
    _threshold_flags(flag, q, suspect, fail, all_missing)  # NaN q: 2 (not evaluated) unless all missing (9)
    flag[np.isnan(q) & ~all_missing] = NOT_EVALUATED
    flag[all_missing] = MISSING
    return QcResult(flag, q)


def station_fields(kind) -> list[str]:  # noqa: ANN001 - a catalogue Kind
    """The co-located fields a kind's station model uses: those that vary (expected span > 0) and are
    compared with neighbours (a bin's fill and distance are one quantity that steps at every
    collection: no relationship to watch)."""
    from analytics.detectors import params_for

    return [f.name for f in kind.fields if f.expected_hi > f.expected_lo and params_for(kind, f).drift_enabled]


__all__ = ["FAIL_Q", "STATION", "K_BLOCKS", "MIN_BLOCKS", "SUSPECT_Q", "fit_score", "multivariate", "station_fields"]
