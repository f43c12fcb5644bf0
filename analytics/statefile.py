"""Per-series detector state on disk: one ``.npz`` per (kind, field), written atomically.

Shared by the stateful charts, the episode tracker and the seasonal baselines: each keeps arrays
whose first axis is the series (a device list saved beside them), a few integers of metadata
(the first is the layout version: a file of another layout is ignored and the detector warms up
again), and grows rows for devices it has not seen.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Protocol, TypeVar

import numpy as np


def save(path: Path, devices: list[str], meta: list[int], arrays: dict[str, np.ndarray]) -> None:
    """Write to a temp file and rename over ``path``: a crash mid-write leaves the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            payload: dict[str, Any] = {"devices": np.array(devices, dtype=str),
                                       "meta": np.array(meta, dtype=np.int64), **arrays}
            np.savez(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, names: tuple[str, ...]) -> tuple[list[str], list[int], dict[str, np.ndarray]] | None:
    """(devices, meta, arrays) or None when the file is missing, unreadable or lacks an array."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return ([str(d) for d in z["devices"].tolist()], [int(v) for v in z["meta"].tolist()],
                    {n: z[n].copy() for n in names})
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return None


def restore(path: Path, names: tuple[str, ...], header: list[int], make):  # noqa: ANN001, ANN201
    """The state saved at ``path`` as ``make(devices)`` with its arrays ``names`` set and its
    ``g_next`` (the meta value right after ``header``, -1 = None), plus the meta values after that;
    None when the file is missing or was saved with another ``header`` (layout version, sizes)."""
    got = load(path, names)
    if got is None or got[1][:len(header)] != header:
        return None
    devices, meta, arrays = got
    st = make(devices)
    for n, v in arrays.items():
        setattr(st, n, v)
    g = meta[len(header)]
    st.g_next = None if g < 0 else g
    return st, meta[len(header) + 1:]


S = TypeVar("S", bound="Saveable")


class Saveable(Protocol):
    """What :class:`Store` needs of a state: it writes itself to a path."""

    def save(self, path: Path) -> None: ...


class Store(Generic[S]):
    """The states of one service, one file per (kind, field) under ``root``, kept in memory after
    the first ``get``. ``load(path, params)`` returns the saved state or None (none, or another
    layout); ``fresh(params)`` makes an empty one; ``key(params)`` is what the cached state must have
    been made with (a pass with other parameters, e.g. another block length, reloads)."""

    def __init__(self, root: Path, load: Callable[[Path, Any], S | None], fresh: Callable[[Any], S],
                 key: Callable[[Any], Hashable] = lambda params: None):
        self.root = Path(root)
        self._load, self._fresh, self._key = load, fresh, key
        self._cache: dict[tuple[str, str], tuple[Hashable, S]] = {}

    def path(self, kind: str, field: str) -> Path:
        return self.root / f"{kind}.{field}.npz"

    def get(self, kind: str, field: str, params: Any = None) -> S:
        k = self._key(params)
        hit = self._cache.get((kind, field))
        if hit is None or hit[0] != k:
            st = self._load(self.path(kind, field), params) or self._fresh(params)
            hit = self._cache[(kind, field)] = (k, st)
        return hit[1]

    def save(self, kind: str, field: str) -> None:
        hit = self._cache.get((kind, field))
        if hit is not None:
            hit[1].save(self.path(kind, field))


def rows_for(state, devices: list[str], names: tuple[str, ...], fresh) -> np.ndarray:  # noqa: ANN001
    """Row of each of ``devices`` in ``state`` (an object with ``devices`` and the arrays ``names``);
    unknown devices are appended, their rows taken from ``fresh(n)`` (an object of n new rows)."""
    index = {d: i for i, d in enumerate(state.devices)}
    new = [d for d in dict.fromkeys(devices) if d not in index]
    if new:
        add = fresh(len(new))
        for name in names:
            setattr(state, name, np.concatenate([getattr(state, name), getattr(add, name)]))
        for d in new:
            index[d] = len(state.devices)
            state.devices.append(d)
    return np.array([index[d] for d in devices], dtype=np.int64)
