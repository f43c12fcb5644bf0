"""Store-and-forward: the upstream broker goes away, messages wait on disk, and drain in order.

The devices' broker is the shared one; the upstream is a private Mosquitto we stop and
restart. The gateway also runs as a real process that we kill -9 with a full queue.
"""

from __future__ import annotations

import os
from collections import Counter
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client, wait_published
from devtools.stack import free_port

from gateway.registry import Registry
from gateway.service import Gateway
from tests.conftest import mqtt_for
from tests.gateway.helpers import Collector, devices, drained, good_fields, normalized, unbatched, wait_for


def publish_readings(settings, device: str, kind: str, n: int, start_seq: int = 0) -> None:
    c = make_client(settings.mqtt)
    connect(c, settings.mqtt)
    t = contract.telemetry_topic(settings.mqtt.topic_root, "depok", kind, device)
    base = int(time.time() * 1000) - 100_000
    wait_published([c.publish(t, contract.encode_telemetry(base + i * 10, i, good_fields(kind)), qos=1)
                    for i in range(start_seq, start_seq + n)])
    c.disconnect()
    c.loop_stop()


def test_upstream_outage_queues_on_disk_and_drains_in_order(settings, private_broker):
    root = settings.mqtt.topic_root
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    up = private_broker()
    settings.gateway.upstream = mqtt_for(up, root)
    col = Collector(settings.gateway.upstream, f"{root}/v1/_platform/norm/#", client_id=f"col-{uuid.uuid4().hex[:8]}")
    gw = Gateway(settings).start()
    try:
        publish_readings(settings, "air-0", "air", 50)
        assert wait_for(lambda: len(normalized(col, root)) == 50 and gw.store.depth == 0)
        up.stop()
        assert wait_for(lambda: not gw.forwarder.connected, timeout=10)
        publish_readings(settings, "air-0", "air", 100, start_seq=50)
        assert wait_for(lambda: queued_readings(gw) == 100, timeout=20), queued_readings(gw)  # on disk, waiting
        assert gw.ready()["upstream_broker"] is False
        up.start()
        assert wait_for(lambda: len(normalized(col, root)) >= 150, timeout=30)
        drained(col, settings.mqtt, root)  # a resend would have arrived before the sentinel
        seqs = [n["seq"] for n in normalized(col, root)]
        assert seqs == list(range(150))  # all of them, once, in order
        # the sentinel's window (it and its devstatus row) leaves the outbox once all its PUBACKs are in
        assert wait_for(lambda: gw.store.depth == 0, timeout=10), gw.store.depth
    finally:
        gw.stop()
        col.close()


FORWARD_WINDOW = 100


def queued_readings(gw: Gateway) -> int:
    """Readings waiting in the outbox (a row holds one, or a batch of them)."""
    rows = gw.store.peek(limit=1_000_000)
    return len(unbatched([(r.topic, r.payload) for r in rows if "/_platform/norm/" in r.topic]))


def _env(settings, tmp_path: Path, up, http_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
        "KC_GATEWAY__REGISTRY_PATH": str(settings.gateway.registry_path),
        "KC_GATEWAY__QUEUE_PATH": str(settings.gateway.queue_path),
        "KC_GATEWAY__HTTP_PORT": str(http_port),
        "KC_GATEWAY__UPSTREAM__HOST": up.host, "KC_GATEWAY__UPSTREAM__PORT": str(up.port),
        "KC_STATE_DIR": str(tmp_path / "state"),
        # a small forward window bounds what a crash may resend (rows leave the outbox only after
        # every PUBACK of their window): the duplicate bound below is this many rows, in readings
        "KC_GATEWAY__FORWARD_WINDOW": str(FORWARD_WINDOW),
        "KC_GATEWAY__FORWARD_BATCH": str(settings.gateway.forward_batch),
    })
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    p = subprocess.Popen([sys.executable, "-m", "kotacerdas", "gateway", "run"], env=env, stdout=f,
                         stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['KC_GATEWAY__HTTP_PORT']}/healthz"
    assert wait_for(lambda: _ok(url) or p.poll() is not None, timeout=60)
    assert p.poll() is None, log.read_text()[-3000:]
    return p


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _metric(port: int, name: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return -1


def test_kill_9_with_a_full_queue_loses_nothing(settings, private_broker, tmp_path):
    """Process crash (SIGKILL) twice: with the queue full, and in the middle of a stream."""
    root = settings.mqtt.topic_root
    settings.gateway.registry_path.parent.mkdir(parents=True, exist_ok=True)
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    up = private_broker()
    upm = mqtt_for(up, root)
    col = Collector(upm, f"{root}/v1/_platform/norm/#", client_id=f"col-{uuid.uuid4().hex[:8]}")
    port = free_port()
    env = _env(settings, tmp_path, up, port)
    log = tmp_path / "gateway.log"
    gw = _start(env, log)
    try:
        up.stop()
        publish_readings(settings, "water-0", "water", 300)
        # accepted is counted once the batch is committed to the outbox (the upstream is down: all queued)
        assert wait_for(lambda: _metric(port, "kc_gateway_accepted_total") >= 300, timeout=30), log.read_text()[-2000:]
        gw.send_signal(signal.SIGKILL)
        gw.wait(10)
        up.start()
        gw = _start(env, log)
        assert wait_for(lambda: len(normalized(col, root)) >= 300, timeout=60), len(normalized(col, root))

        # second crash: mid-stream, while readings arrive and are forwarded
        c = make_client(settings.mqtt)
        connect(c, settings.mqtt)
        t = contract.telemetry_topic(root, "depok", "air", "air-1")
        base = int(time.time() * 1000) - 50_000
        infos = [c.publish(t, contract.encode_telemetry(base + i, i, good_fields("air")), qos=1) for i in range(500)]
        assert wait_for(lambda: len([n for n in normalized(col, root) if n["device"] == "air-1"]) >= 50, timeout=30)
        gw.send_signal(signal.SIGKILL)
        gw.wait(10)
        wait_published(infos)
        c.disconnect()
        c.loop_stop()
        gw = _start(env, log)
        assert wait_for(lambda: len({n["seq"] for n in normalized(col, root) if n["device"] == "air-1"}) == 500,
                        timeout=60)
        drained(col, settings.mqtt, root, timeout=60)  # a late resend would have arrived before the sentinel
        norm = normalized(col, root)
        water = [n["seq"] for n in norm if n["device"] == "water-0"]
        assert water == list(range(300))  # exactly once and in order across the outage and the crash
        air = [n["seq"] for n in norm if n["device"] == "air-1"]
        assert set(air) == set(range(500))  # nothing lost
        # at-least-once upstream: only the window whose PUBACKs the crash swallowed may repeat, i.e. at
        # most FORWARD_WINDOW outbox rows of up to forward_batch readings each, every reading at most once
        assert len(air) - 500 <= FORWARD_WINDOW * settings.gateway.forward_batch, len(air)
        assert max(Counter(air).values()) <= 2, Counter(air).most_common(3)
        assert air == sorted(air) or len(air) > 500  # order holds unless a window was resent
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            assert gw.wait(20) == 0
        finally:
            if gw.poll() is None:
                gw.kill()
        col.close()


def test_long_outage_with_a_restart_drains_thousands_in_per_device_order(settings, private_broker):
    """3,000 readings from 6 devices queue on disk across an upstream outage and a gateway restart."""
    root = settings.mqtt.topic_root
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    up = private_broker()
    settings.gateway.upstream = mqtt_for(up, root)
    col = Collector(settings.gateway.upstream, f"{root}/v1/_platform/norm/#", client_id=f"col-{uuid.uuid4().hex[:8]}")
    up.stop()
    gw = Gateway(settings).start()
    try:
        for d in devices():
            publish_readings(settings, d["device"], d["kind"], 250)
        assert wait_for(lambda: queued_readings(gw) >= 1500, timeout=60), queued_readings(gw)
    finally:
        gw.stop()  # graceful stop mid-outage: the queue stays on disk
    gw = Gateway(settings).start()
    try:
        for d in devices():
            publish_readings(settings, d["device"], d["kind"], 250, start_seq=250)
        assert wait_for(lambda: queued_readings(gw) >= 3000, timeout=60), queued_readings(gw)
        up.start()
        assert wait_for(lambda: len(normalized(col, root)) >= 3000, timeout=120), len(normalized(col, root))
        drained(col, settings.mqtt, root, timeout=60)
        norm = normalized(col, root)
        assert len(norm) == 3000
        for d in devices():
            assert [n["seq"] for n in norm if n["device"] == d["device"]] == list(range(500)), d["device"]
    finally:
        gw.stop()
        col.close()
