"""Bounded backlog and backpressure (issue 14): offered far more than it can take at once, the
gateway holds at most ``gateway.max_buffered`` messages in memory, pauses reading (counted), leaves
the surplus with the broker's persistent session, and loses nothing: every reading comes out
exactly once. The real shared Mosquitto, the gateway in-process, batches upstream (default)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from kotacerdas import contract
from kotacerdas.mqtt import wait_published

from gateway.service import Gateway
from tests.gateway.helpers import devices, good_fields, normalized, wait_for
from tests.gateway.test_service import metric

N_PER_DEVICE = 3000
CAP = 300


def test_more_than_the_gateway_can_take_is_held_by_the_broker_nothing_lost(registered, publisher, collector):
    s = registered
    s.gateway.max_buffered = CAP
    s.gateway.batch_max = 100  # several commits per inbox-full: the reader must wait on the worker
    root = s.mqtt.topic_root
    fleet = devices()
    n = N_PER_DEVICE * len(fleet)
    Gateway(s).start().stop()  # the persistent session and its subscription exist from now on
    now = int(time.time() * 1000)
    msgs = [(contract.telemetry_topic(root, d["city"], d["kind"], d["device"]),
             contract.encode_telemetry(now - 900_000 + i * 100, i, good_fields(d["kind"])))
            for i in range(N_PER_DEVICE) for d in fleet]
    half = n // 2
    # the first half waits at the broker while the gateway is away: on start it is offered all of it at once
    wait_published([publisher.publish(t, p, qos=1) for t, p in msgs[:half]])
    gw = Gateway(s).start()
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(gw._inbox))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # the second half while it works through the first
        wait_published([publisher.publish(t, p, qos=1) for t, p in msgs[half:]])
        assert wait_for(lambda: metric(gw, "kc_gateway_accepted_total") >= n, timeout=50), \
            metric(gw, "kc_gateway_accepted_total")
        assert wait_for(lambda: len(normalized(collector, root)) >= n, timeout=20), len(normalized(collector, root))
        done.set()
        watcher.join(2)
        # the bound held, and it was reached: reading paused (counted), the broker kept the rest
        assert CAP * 0.9 <= peak[0] <= CAP, peak[0]
        assert metric(gw, "kc_gateway_backpressure_seconds_total") > 0
        # nothing lost, nothing doubled
        got = Counter((d["device"], d["seq"]) for d in normalized(collector, root))
        assert len(got) == n and max(got.values()) == 1
        assert metric(gw, "kc_gateway_accepted_total") == n
    finally:
        done.set()
        gw.stop()
