"""The platform's one retry backoff: capped exponential with full jitter.

AWS Architecture Blog, "Exponential Backoff And Jitter" (2015): ``sleep = uniform(0, min(cap,
base * 2**attempt))``. Spreading the retries of many clients over the whole window is what keeps a
broker or database that just came back from being hit by every client in the same instant; a fixed
doubling ladder synchronises them instead. The random source is injectable, so tests seed it.

Every CPython retry loop uses this (services' reconnects, batch retries, webhook and Grafana calls,
the alert outbox). The firmware keeps its own copy (``firmware/device/kc_backoff.py``): it runs on
MicroPython and cannot import this package. No heavy imports here: the MQTT wire client uses it.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "full_jitter"]

_MAX_EXPONENT = 32  # 2**32 * any sane base is far past every cap; bounds the float


def full_jitter(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """The delay before retry number ``attempt`` (0 = after the first failure), in seconds."""
    ceiling = min(cap_s, base_s * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    return (rng or random).uniform(0.0, ceiling)


class Backoff:
    """Full-jitter exponential backoff: ``delay()`` after each failure, ``reset()`` after a success."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 5.0, *, rng: random.Random | None = None):
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    @property
    def ceiling_s(self) -> float:
        """The upper end of the next delay."""
        return min(self.cap_s, self.base_s * 2 ** self.attempt)

    def delay(self) -> float:
        d = full_jitter(self.attempt, self.base_s, self.cap_s, self._rng)
        self.attempt = min(self.attempt + 1, _MAX_EXPONENT)
        return d

    def reset(self) -> None:
        self.attempt = 0
