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

import paho.mqtt.client as paho

from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import MqttSettings

from gateway.store import Store

log = logging.getLogger("gateway.forwarder")


class Forwarder:
    def __init__(
        self,
        store: Store,
        upstream: MqttSettings,
        client_id: str,
        *,
        window: int = 200,
        ack_timeout_s: float = 10.0,
        on_forwarded: Callable[[int], None] = lambda n: None,
        on_refused: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.upstream = upstream
        self.client_id = client_id
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.on_forwarded = on_forwarded
        self.on_refused = on_refused
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._client: paho.Client | None = None
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
        self._drop_client()

    def _drop_client(self) -> None:
        c, self._client = self._client, None
        self.connected = False
        if c is not None:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing to save
                pass

    def _ensure_client(self) -> bool:
        if self._client is not None and self._client.is_connected():
            self.connected = True
            return True
        self._drop_client()
        c = make_client(self.upstream, self.client_id, v5=True, clean=True)
        try:
            connect(c, self.upstream, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001 - upstream down: retry later, messages wait on disk
            log.warning("upstream not reachable", extra={"error": str(exc)[:200], "queued": self.store.depth})
            try:
                c.loop_stop()
            except Exception:  # noqa: BLE001
                pass
            return False
        log.info("upstream connected", extra={"host": self.upstream.host, "port": self.upstream.port})
        c.on_publish = self._on_publish
        self._client = c
        self.connected = True
        return True

    def _on_publish(self, client, userdata, mid, reason_code, props=None) -> None:  # noqa: ANN001
        # a v5 PUBACK may carry "not authorized" etc.: the message is gone, so say so loudly
        if getattr(reason_code, "is_failure", False):
            self.on_refused()
            log.error("upstream refused a message (ACL?)", extra={"mid": mid, "reason": str(reason_code)})

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            # connect even when idle, so readiness tells the truth before the first message
            if not self._ensure_client():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            c = self._client
            assert c is not None
            rows = self.store.peek(limit=self.window)
            if not rows:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            infos = [c.publish(r.topic, r.payload, qos=r.qos, retain=r.retain) for r in rows]
            deadline = time.monotonic() + self.ack_timeout_s
            ok = True
            for info in infos:
                while not info.is_published():
                    if info.rc != 0 or not c.is_connected() or time.monotonic() > deadline or self._stop.is_set():
                        ok = False
                        break
                    time.sleep(0.002)
                if not ok:
                    break
            if ok:
                self.store.delete(r.id for r in rows)
                self.on_forwarded(len(rows))
            else:
                log.warning("upstream lost mid-window; will resend", extra={"window": len(rows)})
                self._drop_client()
