"""Durable on-disk spool of line-protocol batches (each a JSON array of lines) that InfluxDB could not take yet.

One file per batch (``<seq>.lp``), written to a temporary name, fsynced, renamed and
the directory fsynced: once :meth:`Spool.put` returns, the batch survives a crash
or power loss, so the MQTT messages behind it may be acknowledged. Replay is
oldest first; a batch is deleted only after InfluxDB accepted it, so a crash between
the two replays it once more, which is harmless because points are idempotent.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Spool:
    def __init__(self, path: Path, max_bytes: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for tmp in self.path.glob("*.tmp"):  # half-written by a crash: never acknowledged, drop it
            tmp.unlink(missing_ok=True)
        files = self._files()
        self._next = (int(files[-1].stem) + 1) if files else 1
        self._bytes = sum(f.stat().st_size for f in files)

    def _files(self) -> list[Path]:
        return sorted(self.path.glob("*.lp"), key=lambda p: int(p.stem))

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._files())

    def has_room(self, n: int) -> bool:
        return self._bytes + n <= self.max_bytes

    def put(self, body: bytes) -> Path:
        with self._lock:
            seq = self._next
            self._next += 1
        final = self.path / f"{seq:012d}.lp"
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        with self._lock:
            self._bytes += len(body)
        return final

    def oldest(self) -> tuple[Path, bytes] | None:
        files = self._files()
        if not files:
            return None
        return files[0], files[0].read_bytes()

    def remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        path.unlink(missing_ok=True)
        with self._lock:
            self._bytes -= size
