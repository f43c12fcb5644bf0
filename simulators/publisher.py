"""Publishing a message stream: over MQTT (paced, with progress) or into a dry-run file.

The stream is produced lazily (chunk by chunk), so a city-sized run keeps only a
chunk of messages in memory. Pacing targets a fixed message rate: message i is due
at ``t0 + i / rate``; the loop sleeps only when it is ahead of schedule.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterable

import paho.mqtt.client as paho
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import MqttSettings

from simulators.engine import BAD, GOOD, LWT, Msg

log = logging.getLogger("simulators.publisher")


@dataclass
class Stats:
    sent: int = 0
    sent_by_kind: Counter = field(default_factory=Counter)
    good_by_kind: Counter = field(default_factory=Counter)
    bad_by_type: Counter = field(default_factory=Counter)
    status_sent: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def count(self, m: Msg) -> None:
        if m.cls == GOOD or m.cls == BAD:
            self.sent += 1
            self.sent_by_kind[m.kind] += 1
            if m.cls == GOOD:
                self.good_by_kind[m.kind] += 1
            else:
                self.bad_by_type[m.bad_type] += 1
        else:
            self.status_sent += 1

    def summary(self) -> dict:
        d = self.duration_s
        return {
            "sent": self.sent,
            "sent_by_kind": dict(self.sent_by_kind),
            "good_by_kind": dict(self.good_by_kind),
            "bad_by_type": dict(self.bad_by_type),
            "errors": self.errors,
            "status_sent": self.status_sent,
            "duration_s": round(d, 3),
            "rate": round(self.sent / d, 1) if d > 0 else 0.0,
        }


class Pacer:
    """Releases message i at ``t0 + i / rate`` (rate None or <= 0: as fast as possible).

    ``idle(seconds)`` is how it waits: the MQTT sink services its socket meanwhile
    (reads acknowledgements) instead of sleeping.
    """

    def __init__(self, rate: float | None, idle=time.sleep):
        self.rate = rate if rate and rate > 0 else None
        self.idle = idle
        self.t0 = time.monotonic()
        self.i = 0

    def wait(self) -> None:
        if self.rate is not None:
            due = self.t0 + self.i / self.rate
            ahead = due - time.monotonic()
            while ahead > 0.001:
                self.idle(ahead)
                ahead = due - time.monotonic()
        self.i += 1


class ProgressView:
    """rich progress bar with sent, rate and errors; refreshed a few times a second, not per message."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} msg/s"), TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False,
        )
        self.task = self.progress.add_task(label, total=max(total, 1), rate=0.0, errors=0)
        self.last = 0.0

    def __enter__(self) -> "ProgressView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, stats: Stats, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last > 0.25):
            self.last = now
            d = stats.duration_s
            self.progress.update(self.task, completed=stats.sent, rate=stats.sent / d if d > 0 else 0.0,
                                 errors=stats.errors)
            if stats.finished is not None:  # the total was an estimate (dropouts, offline windows)
                self.progress.update(self.task, total=max(stats.sent, 1))


class MqttSink:
    """One paho connection publishing everything, plus short-lived connections for last-will faults.

    The network loop runs in the publishing thread (``service``), not in paho's
    background thread: publish() then writes straight to the socket, without a
    wake-up byte and a thread hand-over per message. Measured on this machine that
    is ~3x more QoS 1 messages/s (bench/simulators_publish.py).
    """

    def __init__(self, mqtt: MqttSettings, qos: int, client_id: str | None = None, *, threaded: bool = False):
        self.mqtt = mqtt
        self.qos = qos
        self.client = make_client(mqtt, client_id or f"kc-sim-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(2000)
        self.lock = threading.Lock()
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.disconnects = 0
        self.closing = False
        self.client.on_disconnect = self._on_disconnect
        connect(self.client, mqtt)
        self.threaded = threaded  # paho's own loop thread: kept only as the benchmark's comparison
        if not threaded:
            self.client.loop_stop()  # from here on, service() drives the socket
        self.last_reconnect = 0.0

    def service(self, timeout: float = 0.0) -> None:
        """Read acknowledgements, write queued packets, keep the connection alive (and reconnect)."""
        if self.threaded:
            if timeout:
                time.sleep(timeout)
            return
        rc = self.client.loop(timeout=timeout)
        if rc != paho.MQTT_ERR_SUCCESS and not self.closing:
            now = time.monotonic()
            if now - self.last_reconnect > 1.0:
                self.last_reconnect = now
                try:
                    self.client.reconnect()
                except OSError as exc:
                    log.warning("reconnect failed", extra={"error": str(exc)})
            elif timeout:
                time.sleep(min(timeout, 0.1))

    def _on_publish(self, client, userdata, mid, rc=None, props=None) -> None:  # noqa: ANN001
        with self.lock:
            self.acked += 1

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        if self.closing:
            return
        self.disconnects += 1
        log.warning("disconnected from broker", extra={"rc": str(rc)})

    def publish(self, m: Msg) -> bool:
        if m.cls == LWT:
            return self._last_will(m)
        qos = 1 if m.retain else self.qos
        info = self.client.publish(m.topic, m.payload, qos=qos, retain=m.retain)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            return True
        # while disconnected paho keeps QoS 1 messages and sends them after the reconnect: not lost
        # (if they are never acknowledged, drain() counts them as errors); QoS 0 ones are gone
        return info.rc == paho.MQTT_ERR_NO_CONN and qos > 0

    def _last_will(self, m: Msg) -> bool:
        """A device that vanishes without DISCONNECT: the broker publishes its will (retained offline status)."""
        try:
            c = make_client(self.mqtt, f"kc-sim-lwt-{m.device}-{uuid.uuid4().hex[:6]}")
            c.will_set(m.topic, m.payload, qos=1, retain=True)
            # driven by hand rather than connect()'s loop thread: stopping that thread costs up to 1 s
            # (its select timeout), which would stall the whole fleet's publishing
            c.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
            deadline = time.monotonic() + 10.0
            while not c.is_connected():
                if time.monotonic() > deadline:
                    raise TimeoutError("no CONNACK for the last-will connection")
                c.loop(timeout=0.05)
            sock = c.socket()
            if sock is not None:
                sock.close()  # no DISCONNECT packet: that is what makes the broker fire the will
            return True
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.error("last-will connection failed", extra={"device": m.device, "error": str(exc)})
            return False

    def drain(self, published: int, timeout_s: float = 30.0) -> int:
        """Wait for in-flight QoS 1 acknowledgements; returns how many never came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.acked >= published:
                    return 0
            self.service(0.02)
        with self.lock:
            return max(0, published - self.acked)

    def close(self) -> None:
        self.closing = True
        self.client.disconnect()
        if self.threaded:
            self.client.loop_stop()
        else:
            self.client.loop(timeout=0.05)


def publish_stream(
    msgs: Iterable[Msg], sink: MqttSink, rate: float | None, total: int, *, progress: bool = True,
    stop: threading.Event | None = None,
) -> Stats:
    stats = Stats()
    pacer = Pacer(rate, idle=lambda left: sink.service(min(left, 0.05)))
    n_out = 0
    published = 0  # messages handed to paho (on_publish fires for QoS 0 too, once written)
    with ProgressView(total, progress, "simulating") as view:
        for m in msgs:
            if stop is not None and stop.is_set():
                break
            # statuses are not paced: births come in a burst at start like a fleet power-up
            if m.cls in (GOOD, BAD):
                pacer.wait()
            ok = sink.publish(m)
            n_out += 1
            if n_out % 100 == 0:
                sink.service(0)
            if ok:
                stats.count(m)
                if m.cls != LWT:
                    published += 1
            else:
                stats.errors += 1
            view.update(stats)
        missing = sink.drain(published)
        if missing:
            log.error("publishes not acknowledged", extra={"missing": missing})
        stats.errors += missing
        stats.finished = time.monotonic()
        view.update(stats, force=True)
    return stats


def dry_run_line(m: Msg) -> str:
    """``{"t": publish ms, "topic": str, "payload": str}`` (``payload_b64`` when not UTF-8)."""
    doc: dict = {"t": m.t, "topic": m.topic}
    try:
        doc["payload"] = m.payload.decode("utf-8")
    except UnicodeDecodeError:
        doc["payload_b64"] = base64.b64encode(m.payload).decode()
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def write_stream(msgs: Iterable[Msg], fh: IO[str], total: int, *, progress: bool = True) -> Stats:
    stats = Stats()
    with ProgressView(total, progress, "dry run") as view:
        for m in msgs:
            fh.write(dry_run_line(m) + "\n")
            stats.count(m)
            view.update(stats)
        stats.finished = time.monotonic()
        view.update(stats, force=True)
    return stats
