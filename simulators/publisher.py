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
from pydantic import SecretStr
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
    # refusals the broker reported, by reason (counted in errors too)
    refused: Counter = field(default_factory=Counter)
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
            "refused": dict(self.refused),
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


def _device_of(topic: str) -> str | None:
    """The device segment of a contract topic (``root/v1/city/kind/device/channel``)."""
    parts = topic.split("/")
    return parts[4] if len(parts) == 6 else None


def _connect_by_hand(c: paho.Client, mqtt: MqttSettings, timeout_s: float = 10.0) -> None:
    """CONNECT and wait for the CONNACK driving the socket here: no loop thread to start and stop
    (stopping one costs up to 1 s, its select timeout: a second per device of a per-device fleet)."""
    result: dict = {}
    c.on_connect = lambda client, userdata, flags, rc, props=None: result.setdefault("rc", rc)
    c.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
    deadline = time.monotonic() + timeout_s
    while "rc" not in result:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no CONNACK from {mqtt.host}:{mqtt.port} in {timeout_s} s")
        if c.loop(timeout=0.05) not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN) and "rc" not in result:
            raise ConnectionError(f"connection to {mqtt.host}:{mqtt.port} lost before CONNACK")
    if getattr(result["rc"], "is_failure", False):
        raise ConnectionError(f"MQTT connect refused: {result['rc']}")


class MqttSink:
    """MQTT connections publishing everything, plus short-lived connections for last-will faults.

    One shared connection, or with ``credentials`` ({device: password}, as written by
    ``kotacerdas gateway registry import --credentials-out``) one connection per device under
    its own account, as the secured broker's ACL requires (each device may write only its own
    topics). What the broker refuses is counted, not assumed delivered: an MQTT 5 PUBACK with
    a failure reason code (e.g. 135 "Not authorized" from the ACL) and a refused CONNECT.

    The network loop runs in the publishing thread (``service``), not in paho's
    background thread: publish() then writes straight to the socket, without a
    wake-up byte and a thread hand-over per message. Measured on this machine that
    is ~3x more QoS 1 messages/s (bench/simulators_publish.py).
    """

    def __init__(self, mqtt: MqttSettings, qos: int, client_id: str | None = None, *, threaded: bool = False,
                 credentials: dict[str, str] | None = None):
        self.mqtt = mqtt
        self.qos = qos
        self.lock = threading.Lock()
        self.acked = 0
        self.disconnects = 0
        self.closing = False
        self.threaded = threaded  # paho's own loop thread: kept only as the benchmark's comparison
        self.credentials = credentials
        # refusals by reason: "puback: Not authorized", "connect: ..." (the latter counted at publish time)
        self.puback_refused: Counter = Counter()
        self.connect_refused: Counter = Counter()
        self._failed: dict[str, str] = {}
        self._clients: dict[str | None, paho.Client] = {}
        self._last_reconnect: dict[str | None, float] = {}
        self.client: paho.Client | None = None
        if credentials is None:
            self.client = self._open(mqtt, client_id or f"kc-sim-{uuid.uuid4().hex[:8]}", None)

    def _open(self, mqtt: MqttSettings, client_id: str, key: str | None) -> paho.Client:
        c = make_client(mqtt, client_id)
        c.max_inflight_messages_set(2000)
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect
        if self.threaded:
            connect(c, mqtt)
        else:
            _connect_by_hand(c, mqtt)  # from here on, service() drives the socket
        self._clients[key] = c
        return c

    def _device_settings(self, device: str) -> MqttSettings | None:
        if self.credentials is None:
            return self.mqtt
        pw = self.credentials.get(device)
        if pw is None:
            return None
        return self.mqtt.model_copy(update={"username": device, "password": SecretStr(pw)})

    def _client_for(self, device: str | None) -> paho.Client | None:
        """The connection a device's message goes out on; None when its CONNECT was refused."""
        if self.client is not None:
            return self.client
        if device is None:
            self.connect_refused["connect: message without a device"] += 1
            return None
        c = self._clients.get(device)
        if c is not None:
            return c
        why = self._failed.get(device)
        if why is None:
            mqtt = self._device_settings(device)
            if mqtt is None:
                why = "no credentials for the device"
            else:
                try:
                    return self._open(mqtt, f"kc-sim-{device}-{uuid.uuid4().hex[:6]}", device)
                except (ConnectionError, TimeoutError, OSError) as exc:
                    why = str(exc)[:80]
            self._failed[device] = why
            log.error("device connection refused", extra={"device": device, "error": why})
        self.connect_refused[f"connect: {why}"] += 1
        return None

    def service(self, timeout: float = 0.0) -> None:
        """Read acknowledgements, write queued packets, keep the connections alive (and reconnect)."""
        if self.threaded:
            if timeout:
                time.sleep(timeout)
            return
        clients = list(self._clients.items())
        per = timeout if len(clients) == 1 else 0.0
        for key, c in clients:
            rc = c.loop(timeout=per)
            if rc != paho.MQTT_ERR_SUCCESS and not self.closing:
                now = time.monotonic()
                if now - self._last_reconnect.get(key, 0.0) > 1.0:
                    self._last_reconnect[key] = now
                    try:
                        c.reconnect()
                    except OSError as exc:
                        log.warning("reconnect failed", extra={"error": str(exc)})
                elif per:
                    time.sleep(min(per, 0.1))
        if timeout and len(clients) != 1:
            time.sleep(min(timeout, 0.01))

    def _on_publish(self, client, userdata, mid, rc=None, props=None) -> None:  # noqa: ANN001
        with self.lock:
            self.acked += 1
            # MQTT 5: the broker says why it did not take the message (an ACL denial is 135)
            if rc is not None and getattr(rc, "is_failure", False):
                self.puback_refused[f"puback: {rc}"] += 1

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:  # noqa: ANN001
        if self.closing:
            return
        self.disconnects += 1
        log.warning("disconnected from broker", extra={"rc": str(rc)})

    def publish(self, m: Msg) -> bool:
        if m.cls == LWT:
            return self._last_will(m)
        client = self._client_for(m.device or _device_of(m.topic))
        if client is None:
            return False
        qos = 1 if m.retain else self.qos
        info = client.publish(m.topic, m.payload, qos=qos, retain=m.retain)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            return True
        # while disconnected paho keeps QoS 1 messages and sends them after the reconnect: not lost
        # (if they are never acknowledged, drain() counts them as errors); QoS 0 ones are gone
        return info.rc == paho.MQTT_ERR_NO_CONN and qos > 0

    def _last_will(self, m: Msg) -> bool:
        """A device that vanishes without DISCONNECT: the broker publishes its will (retained offline status)."""
        device = m.device or _device_of(m.topic)
        mqtt = self._device_settings(device) if device else self.mqtt
        if mqtt is None:
            self.connect_refused["connect: no credentials for the device"] += 1
            return False
        try:
            c = make_client(mqtt, f"kc-sim-lwt-{m.device}-{uuid.uuid4().hex[:6]}")
            c.will_set(m.topic, m.payload, qos=1, retain=True)
            # driven by hand rather than connect()'s loop thread: stopping that thread costs up to 1 s
            # (its select timeout), which would stall the whole fleet's publishing
            c.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
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
            self.connect_refused[f"connect: {str(exc)[:80]}"] += 1
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
        for c in self._clients.values():
            c.disconnect()
            if self.threaded:
                c.loop_stop()
            else:
                c.loop(timeout=0.05)


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
        refused = sum(sink.puback_refused.values())
        if refused:
            log.error("publishes refused by the broker", extra={"refused": refused,
                                                                "reasons": dict(sink.puback_refused)})
        stats.errors += missing + refused
        stats.refused = sink.puback_refused + sink.connect_refused
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
