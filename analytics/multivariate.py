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

The score is Q / theta1 (theta1 = the sum of the residual eigenvalues: Q's expected value when
the model holds, J. E. Jackson and G. S. Mudholkar, "Control procedures for residuals associated
with principal component analysis", Technometrics 21(3), 1979) divided by its usual value: the
median of the previous blocks' 90th percentiles of it (real residuals are autocorrelated and
heavy-tailed, far beyond the theoretical limits, and differ from station to station), so the
threshold is calibrated on each station's own fitted residual distribution. A sample is suspect
(fail) once that score has stayed above ``suspect`` (``fail``) for ``persist`` samples in a row:
a relationship fault lasts, while a burst of one pollutant (a truck idling, 2-8 samples) is
legitimate data (on the simulator's clean data the single-sample flags were all of its alarms).
The verdict names the fields it is about: those whose share of Q is at least 1 / F.

The model is re-fitted every block on the previous blocks' *accepted* samples (:func:`scan`):
samples above ``suspect`` are not learnt, so a persistent relationship fault stays flagged (it
was absorbed after about one block when the model re-fitted on it, and its end then looked like
a new fault); after about ``k - min_blocks`` blocks of it the model re-fits on every sample (a
re-calibrated sensor's new relationship becomes the normal one). That makes a block's verdict
depend on the verdicts before it: a live window equals a batch run once the window reaches back
past the last excluded sample (always on data without relationship faults), not exactly while a
fault that began before the window's start is still being excluded.

A sample with any of the fields missing, or without ``min_blocks`` usable training blocks, is
not evaluated (2) or missing (9 when every field is missing).

Shapes: x (S, F, T) field units; blocks (S, NB, ...); results (S, T).
"""

from __future__ import annotations

import numpy as np

from analytics import baseline as bl
from analytics.qc import FAIL, GOOD, MISSING, NOT_EVALUATED, SUSPECT, QcResult

STATION = "station"  # the `qc` / `qc_episode` field tag of this test's station-level verdicts
K_BLOCKS = 12  # training blocks (12 h with hourly blocks): within the service's 24 h window
MIN_BLOCKS = 6
LAM_MIN = 0.05
SUSPECT_Q = 20.0
FAIL_Q = 40.0
PERSIST = 10  # samples above the threshold in a row before a verdict (10 min on the 1-min grids)


def _block_sums(z0: np.ndarray, keep: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, sum, sum of products) of one block's kept samples: z0 (S, b, F) with 0 where not kept,
    keep (S, b) -> (S,), (S, F), (S, F, F)."""
    zk = np.where(keep[..., None], z0, 0.0)
    return keep.sum(axis=1).astype(np.float64), zk.sum(axis=1), np.matmul(zk.transpose(0, 2, 1), zk)


def _model(n: np.ndarray, sx: np.ndarray, sxx: np.ndarray, fl: np.ndarray, lam_min: float):
    """Mean, std (S, F), eigenvalues (S, F) and eigenvectors (S, F, F) (leading first), the model
    mask (S, F) and the fields that stood still (S, F) from the training sums over the previous
    blocks: n (S,), sx (S, F), sxx (S, F, F)."""
    f = sx.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sx / np.maximum(n, 1.0)[:, None]
        cov = sxx / np.maximum(n, 1.0)[:, None, None] - mean[:, :, None] * mean[:, None, :]
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    std = np.sqrt(np.maximum(var, np.maximum(fl, 1e-9) ** 2))
    corr = cov / (std[:, :, None] * std[:, None, :])
    corr = np.where(np.isfinite(corr), corr, np.eye(f))
    # a field that stood still through the training (moved by less than its resolution: a stuck
    # sensor, still water, a pollutant at 0) holds no relationship to learn, else its first normal
    # wiggle afterwards reads as 1e4 of the usual Q: left out (no variance, so a residual direction
    # of eigenvalue ~0 adding nothing to theta1; :func:`scan` zeroes its z, so nothing to Q)
    still = var < np.maximum(fl, 1e-9) ** 2  # (S, F)
    corr = np.where(still[:, :, None] | still[:, None, :], 0.0, corr)
    lam, vec = np.linalg.eigh(corr)  # ascending
    lam, vec = np.maximum(lam[:, ::-1], 1e-6 * f), vec[:, :, ::-1]
    m = np.clip((lam >= lam_min).sum(axis=-1), 1, f - 1)  # components in the model
    in_model = np.arange(f) < m[:, None]
    return mean, std, lam, vec, in_model, still


def scan(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, k: int = K_BLOCKS,
         min_blocks: int = MIN_BLOCKS, lam_min: float = LAM_MIN, exclude: float | None = SUSPECT_Q
         ) -> dict[str, np.ndarray]:
    """The station model block by block over a window x (S, F, T) whose column 0 is grid index ``g0``.

    Block j's model is fitted on the previous ``k`` blocks' *accepted* samples: complete, and (with
    ``exclude``) not above ``exclude`` in Q / theta1 / usual Q (the verdict's own score), so a
    relationship fault is not learnt as normal and its end is no new fault. When fewer than
    ``min_blocks`` of those blocks have enough accepted samples (half a block) but enough blocks are
    complete, the model is fitted on every complete sample: a relationship that stays broken for
    about ``k - min_blocks`` blocks is the new normal (re-baselined), not an alarm for ever.
    The loop runs over blocks (a window's 24-48), each step vectorised over stations.

    Returns (S, T) arrays "t2", "q" (Q / theta1), "qn" (q / the usual q of the previous blocks),
    "evaluated" (bool), and "share" (S, F, T) float32: each field's part of Q (sums to 1).
    """
    s, f, t = x.shape
    blocks = bl.Blocks(t, g0, block)
    nb, b = blocks.nb, blocks.b
    tiles = np.stack([blocks.tiles(x[:, i]) for i in range(f)], axis=-1)  # (S, NB, b, F)
    complete = ~np.isnan(tiles).any(axis=-1)  # (S, NB, b)
    z0 = np.where(complete[..., None], tiles, 0.0)
    fl = np.broadcast_to(np.asarray(floor, dtype=np.float64), (f,))
    # per block: sums over accepted samples (index 0) and over every complete sample (index 1)
    n_b = np.zeros((2, s, nb))
    sx_b = np.zeros((2, s, nb, f))
    sxx_b = np.zeros((2, s, nb, f, f))
    use_b = np.zeros((2, s, nb), dtype=bool)
    p90_b = np.full((s, nb), np.nan)
    out_t2 = np.full((s, nb, b), np.nan)
    out_q = np.full((s, nb, b), np.nan)
    out_qn = np.full((s, nb, b), np.nan)
    share = np.zeros((s, nb, b, f), dtype=np.float32)
    first_whole = 1 if blocks.lead else 0  # a block cut by the window's start trains nothing
    for j in range(nb):
        lo = max(j - k, 0)
        cnt = use_b[:, :, lo:j].sum(axis=2)  # (2, S)
        use_acc = cnt[0] >= min_blocks
        fitted = use_acc | (cnt[1] >= min_blocks)
        which = np.where(use_acc, 0, 1)  # accepted sums, or every complete sample (re-baseline)
        pick = (which[None, :] == np.arange(2)[:, None])  # (2, S)
        w = (use_b[:, :, lo:j] & pick[:, :, None]).astype(np.float64)
        tn = (n_b[:, :, lo:j] * w).sum(axis=(0, 2))
        tsx = (sx_b[:, :, lo:j] * w[..., None]).sum(axis=(0, 2))
        tsxx = (sxx_b[:, :, lo:j] * w[..., None, None]).sum(axis=(0, 2))
        fitted &= tn > f
        comp = complete[:, j]
        if fitted.any():
            mean, std, lam, vec, in_model, still = _model(tn, tsx, tsxx, fl, lam_min)
            theta1 = np.where(in_model, 0.0, lam).sum(axis=-1)  # (S,)
            z = (tiles[:, j] - mean[:, None, :]) / std[:, None, :]  # (S, b, F)
            z = np.where(still[:, None, :], 0.0, np.nan_to_num(z))
            sc = np.matmul(z, vec)  # component scores (S, b, F)
            sq = np.square(sc)
            t2 = np.matmul(sq, (in_model / lam)[..., None])[..., 0]
            resid = z - np.matmul(sc * in_model[:, None, :], vec.transpose(0, 2, 1))  # off the model, (S, b, F)
            r2 = np.square(resid)
            qq = r2.sum(axis=-1)
            ok = comp & fitted[:, None]
            out_t2[:, j] = np.where(ok, t2, np.nan)
            out_q[:, j] = np.where(ok, qq / theta1[:, None], np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                share[:, j] = np.where(ok[..., None], r2 / np.maximum(qq, 1e-12)[..., None], 0.0)
            # the usual q: median of the previous blocks' 90th percentiles, at least 1
            past = p90_b[:, lo:j]
            n_p90 = (~np.isnan(past)).sum(axis=1)
            usual = np.nanmedian(np.where((n_p90 > 0)[:, None], past, 0.0), axis=1) if j > lo else np.zeros(s)
            usual = np.where(n_p90 >= min_blocks, usual, np.nan)
            out_qn[:, j] = out_q[:, j] / np.fmax(usual, 1.0)[:, None]
            nq = (~np.isnan(out_q[:, j])).sum(axis=1)
            srt = np.sort(out_q[:, j], axis=1)
            pos = np.maximum((0.9 * (nq - 1)).astype(np.int64), 0)
            p90 = np.take_along_axis(srt, pos[:, None], axis=1)[:, 0]
            p90_b[:, j] = np.where(nq * 2 >= b, p90, np.nan)
        if j < first_whole:
            continue
        accepted = comp.copy()
        if exclude is not None:
            with np.errstate(invalid="ignore"):
                accepted &= ~(out_qn[:, j] > exclude)
        for i, keep in enumerate((accepted, comp)):
            n_b[i, :, j], sx_b[i, :, j], sxx_b[i, :, j] = _block_sums(z0[:, j], keep, f)
            use_b[i, :, j] = (n_b[i, :, j] * 2 >= b) & (n_b[i, :, j] > f)

    def back(a: np.ndarray) -> np.ndarray:  # (S, NB, b, ...) -> (S, T, ...)
        return a.reshape((s, nb * b) + a.shape[3:])[:, blocks.lead : blocks.lead + t]
    q = back(out_q)
    return {"t2": back(out_t2), "q": q, "qn": back(out_qn), "evaluated": ~np.isnan(q),
            "share": np.moveaxis(back(share), -1, 1)}


def fit_score(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, k: int = K_BLOCKS,
              min_blocks: int = MIN_BLOCKS, lam_min: float = LAM_MIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T², Q / theta1, evaluated) each (S, T) for a window x (S, F, T) (:func:`scan`)."""
    r = scan(x, g0, block, floor, k, min_blocks, lam_min)
    return r["t2"], r["q"], r["evaluated"]


def persisted(over: np.ndarray, n: int) -> np.ndarray:
    """(S, T) bool: ``over`` has held for the last ``n`` samples (this one included)."""
    if n <= 1:
        return over.copy()
    c = np.cumsum(over, axis=1, dtype=np.int32)
    held = c.copy()
    held[:, n:] -= c[:, :-n]
    out = held >= n
    out[:, : n - 1] = False
    return out


def station_test(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, suspect: float = SUSPECT_Q,
                 fail: float = FAIL_Q, persist: int = PERSIST, **kw) -> tuple[QcResult, np.ndarray]:
    """The station test over x (S, F, T): (flags and score q / usual q (S, T), fields (S, F, T) bool).

    A sample is suspect (fail) when its score has been above ``suspect`` (``fail``) for ``persist``
    samples in a row: a relationship fault lasts (a clogged inlet, a wet board), a one- to few-sample
    excursion of one field is the spike test's or legitimate (a burst of one pollutant). ``fields``:
    where flagged, the fields whose share of Q over the alarm so far is at least 1 / F (what the
    verdict is about, :func:`run_fields`)."""
    r = scan(x, g0, block, floor, exclude=suspect, **kw)
    qn = r["qn"]
    all_missing = np.isnan(x).all(axis=1)
    with np.errstate(invalid="ignore"):
        sus, bad = persisted(qn > suspect, persist), persisted(qn > fail, persist)
    flag = np.where(sus, np.int8(SUSPECT), np.int8(GOOD)).astype(np.int8)
    flag[bad] = FAIL
    flag[np.isnan(qn)] = NOT_EVALUATED
    flag[all_missing] = MISSING
    return QcResult(flag, qn), run_fields(r["share"], sus | bad)


def run_fields(share: np.ndarray, on: np.ndarray) -> np.ndarray:
    """(S, F, T) bool: where ``on`` (S, T), the fields whose mean share (S, F, T) of Q since the start
    of the current run of ``on`` is at least 1 / F. A field's share of one sample wanders around
    1 / F from sample to sample; judged sample by sample, one station alarm split into dozens of
    one-sample alarms on a field (a third of the false runs on the tuning seeds)."""
    s, f, t = share.shape
    starts = on.copy()
    starts[:, 1:] &= ~on[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(t), 0), axis=1)  # (S, T): the run's first sample
    cs = np.cumsum(np.where(on[:, None, :], share, 0.0), axis=-1, dtype=np.float64)
    before = np.take_along_axis(cs, np.broadcast_to((first - 1)[:, None, :], cs.shape).clip(0), axis=-1)
    before = np.where((first > 0)[:, None, :], before, 0.0)
    mean = (cs - before) / (np.arange(t) - first + 1)[:, None, :]
    return (mean >= 1.0 / f) & on[:, None, :]


def multivariate(x: np.ndarray, g0: int, block: int, floor: np.ndarray | float = 0.0, suspect: float = SUSPECT_Q,
                 fail: float = FAIL_Q, **kw) -> QcResult:
    """The station test's flags and score (S, T) for x (S, F, T) (:func:`station_test`)."""
    return station_test(x, g0, block, floor, suspect, fail, **kw)[0]


def station_fields(kind) -> list[str]:  # noqa: ANN001 - a catalogue Kind
    """The co-located fields a kind's station model uses: those that vary (expected span > 0) and are
    compared with neighbours (a bin's fill and distance are one quantity that steps at every
    collection: no relationship to watch)."""
    from analytics.detectors import params_for

    return [f.name for f in kind.fields if f.expected_hi > f.expected_lo and params_for(kind, f).drift_enabled]


__all__ = ["FAIL_Q", "PERSIST", "STATION", "K_BLOCKS", "MIN_BLOCKS", "SUSPECT_Q", "fit_score", "multivariate", "persisted",
           "run_fields", "scan", "station_fields", "station_test"]
