"""Waiting for the event a test needs (a SUBACK, a counter, a sentinel message) instead of a fixed sleep.

A fixed sleep is either too short on a loaded machine (flaky) or too long everywhere (slow). The
helpers here return as soon as the event happened and fail with what was awaited when it did not.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import paho.mqtt.client as paho


def until(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "the condition", every_s: float = 0.02) -> None:
    """Return once ``cond()`` is truthy; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def subscribed(client: paho.Client, topics: str | Sequence[str], qos: int = 1, timeout_s: float = 10.0) -> list:
    """Subscribe a connected (loop running) paho client and block until its SUBACK; the reason codes.

    Messages published after this returns reach the client; after a bare ``subscribe()`` they may not.
    The client's own ``on_subscribe`` is replaced for the duration.
    """
    codes: list = []
    previous = client.on_subscribe

    def on_sub(c: paho.Client, userdata: Any, mid: int, reason_codes: list, props: Any = None) -> None:
        # the SUBACK may beat subscribe()'s return, so the mid is compared once both are known
        codes.append((mid, list(reason_codes)))

    client.on_subscribe = on_sub
    try:
        names = [topics] if isinstance(topics, str) else list(topics)
        rc, mid = client.subscribe([(t, qos) for t in names])
        assert rc == paho.MQTT_ERR_SUCCESS, f"SUBSCRIBE not sent: {rc}"
        until(lambda: any(m == mid for m, _ in codes), timeout_s, f"the SUBACK for {names}")
    finally:
        client.on_subscribe = previous
    return next(rcs for m, rcs in codes if m == mid)
