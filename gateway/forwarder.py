"""Store-and-forward: drain the disk queue to the upstream broker, in order, at least once.

A window of queued rows is published with QoS 1; rows are deleted only after every
PUBACK of the window arrived. If the upstream goes away mid-window, the client object
is thrown away (so paho does not resend its own in-memory copies as well) and the
same window is sent again on a fresh connection: order is kept and nothing is lost;
a message whose PUBACK was lost may arrive twice (consumers are idempotent on
device+time: an InfluxDB point with the same series and time is overwritten).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kotacerdas.backoff import Backoff
from kotacerdas.contract import split_normalized_batch
from kotacerdas.mqtt import connect, make_client, max_packet_size
from kotacerdas.mqttwire import WireClient, publish_overhead
from kotacerdas.settings import MqttSettings

from gateway.store import Store

log = logging.getLogger("gateway.forwarder")


class _WireLink:
    """The upstream over the batching wire client (MQTT 5 for PUBACK reason codes): a window of
    PUBLISHes goes out as one write; PUBACKs are collected by the client's reader thread."""

    def __init__(self, settings: MqttSettings, client_id: str, on_refused: Callable[[], None]):
        self._cond = threading.Condition()
        self._acked: set[int] = set()
        self._on_refused = on_refused
        self.c = WireClient(settings, client_id, clean=True, protocol=5, on_puback=self._puback,
                            name="gateway-upstream")
        self.c.start(timeout_s=5.0)

    def _puback(self, acks: list[tuple[int, int]]) -> None:
        for mid, reason in acks:
            if reason >= 0x80:  # e.g. 0x87 not authorized: the message is gone, so say so loudly
                self._on_refused()
                log.error("upstream refused a message (ACL?)", extra={"mid": mid, "reason": hex(reason)})
        with self._cond:
            self._acked.update([mid for mid, _ in acks])
            self._cond.notify_all()

    def connected(self) -> bool:
        return self.c.is_connected()

    def max_packet(self) -> int | None:
        return self.c.max_packet_size

    def send(self, rows: list[tuple], deadline: float, stop: threading.Event) -> bool:
        with self._cond:
            self._acked.clear()
        gen, mids = self.c.publish_many([(r[1], r[2], r[4]) for r in rows])
        want = set(mids)
        with self._cond:
            while not want <= self._acked:
                if self.c.generation != gen or not self.c.is_connected() or stop.is_set():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.c.stop(timeout_s=2.0)


class _PahoLink:
    """The upstream over paho (TLS): one publish call per row."""

    def __init__(self, settings: MqttSettings, client_id: str, on_refused: Callable[[], None]):
        self._on_refused = on_refused
        self.c = make_client(settings, client_id, v5=True, clean=True)
        try:
            connect(self.c, settings, timeout_s=5.0)
        except BaseException:
            self.close()
            raise
        self.c.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, props=None) -> None:  # noqa: ANN001
        if getattr(reason_code, "is_failure", False):
            self._on_refused()
            log.error("upstream refused a message (ACL?)", extra={"mid": mid, "reason": str(reason_code)})

    def connected(self) -> bool:
        return self.c.is_connected()

    def max_packet(self) -> int | None:
        return max_packet_size(self.c)

    def send(self, rows: list[tuple], deadline: float, stop: threading.Event) -> bool:
        infos = [self.c.publish(r[1], r[2], qos=r[3], retain=bool(r[4])) for r in rows]
        for info in infos:
            while not info.is_published():
                if info.rc != 0 or not self.c.is_connected() or time.monotonic() > deadline or stop.is_set():
                    return False
                time.sleep(0.002)
        return True

    def close(self) -> None:
        try:
            self.c.disconnect()
            self.c.loop_stop()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing to save
            pass


class Forwarder:
    def __init__(
        self,
        store: Store,
        upstream: MqttSettings,
        client_id: str,
        *,
        window: int = 5000,
        window_bytes: int = 0,
        ack_timeout_s: float = 10.0,
        on_forwarded: Callable[[int], None] = lambda n: None,
        on_refused: Callable[[], None] = lambda: None,
        client: str = "wire",
    ):
        self.store = store
        self.upstream = upstream
        self.client_id = client_id
        self.window = window
        self.window_bytes = window_bytes
        self.ack_timeout_s = ack_timeout_s
        self.on_forwarded = on_forwarded
        self.on_refused = on_refused
        self.wire = client == "wire" and not upstream.tls_ca
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._link: _WireLink | _PahoLink | None = None
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="gateway-forwarder", daemon=True)

    def start(self) -> "Forwarder":
        self._thread.start()
        return self

    def stop(self, drain_s: float = 5.0) -> None:
        """Give the queue a moment to drain, then stop; what is left stays on disk for next time."""
        deadline = time.monotonic() + drain_s
        while self.store.depth and self.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout=self.ack_timeout_s + 5)
        self._drop_link()

    def _drop_link(self) -> None:
        link, self._link = self._link, None
        self.connected = False
        if link is not None:
            link.close()

    def _ensure_link(self) -> bool:
        if self._link is not None and self._link.connected():
            self.connected = True
            return True
        # a fresh connection (and client) per outage: nothing of the old one is resent behind our back
        self._drop_link()
        try:
            self._link = (_WireLink if self.wire else _PahoLink)(self.upstream, self.client_id, self.on_refused)
        except Exception as exc:  # noqa: BLE001 - upstream down: retry later, messages wait on disk
            log.warning("upstream not reachable", extra={"error": str(exc)[:200], "queued": self.store.depth})
            return False
        log.info("upstream connected", extra={"host": self.upstream.host, "port": self.upstream.port})
        self.connected = True
        return True

    def _fit(self, rows: list[tuple], max_packet: int | None) -> list[tuple]:
        """The window with every row the upstream would refuse as too big (the MQTT 5 maximum packet
        size from its CONNACK: it drops the connection, and the same row would be resent forever)
        cut into batches that fit, in order, under the row's id (deleted once all are acknowledged).
        A single reading still too big can never go: counted as refused, logged, left out."""
        if not max_packet:
            return rows
        proto = 5  # both links speak MQTT 5 upstream
        out: list[tuple] = []
        for r in rows:
            room = max_packet - publish_overhead(r[1], proto)
            if len(r[2]) <= room:
                out.append(r)
                continue
            pieces = split_normalized_batch(r[2], room)
            fit = [p for p in pieces if len(p) <= room]
            if len(fit) < len(pieces):
                self.on_refused()
                log.error("a message is bigger than the upstream accepts; not forwarded",
                          extra={"topic": r[1], "bytes": max(len(p) for p in pieces), "max_packet": max_packet})
            out.extend((r[0], r[1], p, *r[3:]) for p in fit)
        return out

    def _run(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while not self._stop.is_set():
            # connect even when idle, so readiness tells the truth before the first message
            if not self._ensure_link():
                self._stop.wait(backoff.delay())
                continue
            backoff.reset()
            link = self._link
            assert link is not None
            rows = self.store.peek_rows(limit=self.window, max_bytes=self.window_bytes)
            if not rows:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            first, last = rows[0][0], rows[-1][0]
            rows = self._fit(rows, link.max_packet())
            try:
                ok = not rows or link.send(rows, time.monotonic() + self.ack_timeout_s, self._stop)
            except OSError:
                ok = False
            if ok:
                self.store.delete_through(first, last)
                self.on_forwarded(len(rows))
            else:
                log.warning("upstream lost mid-window; will resend", extra={"window": len(rows)})
                self._drop_link()
