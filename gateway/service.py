"""``kotacerdas gateway run``: the thin I/O shell around the gateway's pure core.

Flow: device topics (QoS 1, persistent session, manual acks) -> batch worker ->
one SQLite transaction per batch (dedup memory + outbox) -> PUBACK to the devices'
broker -> forwarder drains the outbox to the upstream broker in order.

A device message is acknowledged only after its outcome (normalised message or dead
letter) is durably queued, so a crash at any point loses nothing: unacknowledged
messages are redelivered by the broker and the dedup memory turns repeats into no-ops.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter as TallyCounter
from collections import deque
import time
from typing import Any

import paho.mqtt.client as paho
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kotacerdas import contract, device_config
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Limits, Reason, Rejection
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings

from gateway import adapters
from gateway.core import StatusMessage, dedup_key, normalise_telemetry, parse_ack, parse_status
from gateway.forwarder import Forwarder
from gateway.lifecycle import DeviceState, Lifecycle
from gateway.registry import Device, Registry
from gateway.store import Outgoing, Store

log = logging.getLogger("gateway")

STAGE = "gateway"
BATCH_MAX = 500
BATCH_WAIT_S = 0.02
PRUNE_EVERY_S = 600.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("kc_gateway_received_total", "Device messages received", ["channel"], registry=r)
        self.accepted = Counter("kc_gateway_accepted_total", "Telemetry readings accepted and queued", registry=r)
        self.rejected = Counter("kc_gateway_rejected_total", "Messages refused, by reason", ["reason"], registry=r)
        self.forwarded = Counter("kc_gateway_forwarded_total", "Messages acknowledged by the upstream broker", registry=r)
        self.queue_depth = Gauge("kc_gateway_queue_depth", "Messages on disk waiting for the upstream broker", registry=r)
        self.devices_online = Gauge("kc_gateway_devices_online", "Devices currently online", registry=r)
        self.devices_stale = Gauge("kc_gateway_devices_stale", "Devices silent for too many intervals", registry=r)
        self.batch_failures = Counter("kc_gateway_batch_failures_total", "Batches that failed to commit (retried)",
                                      registry=r)
        self.upstream_refused = Counter("kc_gateway_upstream_refused_total",
                                        "Messages the upstream broker acknowledged with a failure code", registry=r)
        # the ledger (``GET /ledger``): every received message is stored, rejected by reason or ignored
        self.stored = Counter("kc_gateway_stored_total", "Device messages accepted (a reading, a status or an ack)",
                              ["channel"], registry=r)
        self.ignored = Counter("kc_gateway_ignored_total", "Empty status payloads (a retained status cleared)",
                               registry=r)
        self.batch_seconds = Histogram("kc_gateway_batch_seconds", "Time to validate and commit one batch", registry=r)
        # pre-create every reason so dashboards see zeros rather than missing series
        for reason in Reason:
            self.rejected.labels(reason.value)
        for ch in ("telemetry", "status", "ack", "tasmota", "esphome", "other"):
            self.received.labels(ch)
        for ch in ("telemetry", "status", "ack"):
            self.stored.labels(ch)


class Gateway:
    def __init__(self, settings: Settings):
        self.s = settings
        g = settings.gateway
        self.root = settings.mqtt.topic_root
        self.catalogue = load_catalogue()
        self.limits = Limits.from_settings(settings.contract)
        self.registry = Registry(g.registry_path, self.catalogue)
        self.store = Store(g.queue_path, durable_fsync=g.durable_fsync)
        self.metrics = Metrics()
        self.metrics.queue_depth.set_function(lambda: self.store.depth)
        self.client_id = g.client_id or f"kc-gateway-{self.root}"
        self._devices: dict[str, Device] = {}
        self._reg_version = -1
        self._dev_lock = threading.Lock()
        self.lifecycle = Lifecycle(g.stale_after_intervals, self._interval_s)
        self._inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self.inbound_connected = False
        self._subscribed = threading.Event()
        self.client: paho.Client | None = None
        self.forwarder = Forwarder(
            self.store, g.upstream or settings.mqtt, f"{self.client_id}-up",
            on_forwarded=self.metrics.forwarded.inc, on_refused=self.metrics.upstream_refused.inc,
        )
        self._worker = threading.Thread(target=self._work, name="gateway-worker", daemon=True)
        self._lock_lifecycle = threading.Lock()
        self._tally: TallyCounter = TallyCounter()
        self.acks: dict[str, deque] = {}  # device -> its latest command answers (for the API)

    # ------------------------------------------------------------ registry cache

    def reload_devices(self, force: bool = False) -> None:
        """Reload the registry when anyone (CLI, API, another process) changed it."""
        # PRAGMA data_version is a cheap read, so check every batch: a decommission takes effect at once
        v = self.registry.version()
        if force or v != self._reg_version:
            devices = {d.device: d for d in self.registry.all()}
            with self._dev_lock:
                self._devices = devices
                self._reg_version = v

    def lookup(self, device_id: str) -> Device | None:
        with self._dev_lock:
            d = self._devices.get(device_id)
        return d

    def _lookup_or_register(self, device_id: str, kind: str, city: str) -> Device | None:
        d = self.lookup(device_id)
        if d is None and self.s.gateway.auto_register and kind in self.catalogue:
            try:
                d, _ = self.registry.register(device_id, kind, city, with_credentials=False)
            except ValueError:
                return None
            with self._dev_lock:
                self._devices[device_id] = d
            log.info("device auto-registered", extra={"device": device_id, "kind": kind, "city": city})
        return d

    def _interval_s(self, device: str, kind: str) -> float:
        d = self.lookup(device)
        if d is not None and isinstance(d.config.get("interval_s"), (int, float)) and d.config["interval_s"] > 0:
            return float(d.config["interval_s"])
        return float(self.catalogue[kind].report_interval_s) if kind in self.catalogue else 60.0

    # ------------------------------------------------------------ processing

    def _dead(self, rej: Rejection, topic: str, payload: bytes, t: int) -> Outgoing:
        self._tally[("rejected", rej.reason.value)] += 1
        log.info("rejected", extra={"reason": rej.reason.value, "detail": rej.detail[:200], "topic": topic[:200]})
        return Outgoing(contract.deadletter_topic(self.root, STAGE, rej.reason),
                        contract.deadletter_payload(STAGE, rej, topic, payload, t), qos=1)

    def _status_out(self, s: DeviceState) -> Outgoing:
        return Outgoing(s.topic(self.root), s.payload(), qos=1, retain=True)

    def process_batch(self, msgs: list[paho.MQTTMessage]) -> None:
        """Validate, dedup and queue a batch in one transaction (then the caller acks)."""
        self.reload_devices()
        self._tally = TallyCounter()  # counted only once the batch is committed (a retried batch counts once)
        t = now_ms()
        status_changes: dict[str, DeviceState] = {}
        accepted: list[tuple[int, Outgoing]] = []
        items, adapted_dead = self._adapt([(m.topic, bytes(m.payload), bool(m.retain)) for m in msgs], t)
        replayed = {m.topic for m in msgs if m.retain}  # retained copies sent at (re)subscription
        with self.store.transaction() as txn:

            def dead(rej: Rejection, origins: list[tuple[str, bytes]]) -> None:
                # one dead letter per message the device sent, naming its original topic and payload
                for o_topic, o_payload in origins:
                    txn.queue(self._dead(rej, o_topic, o_payload, t))

            for origins, rej in adapted_dead:
                dead(rej, origins)
            for topic, payload, origins in items:
                channel = topic.rsplit("/", 1)[-1]
                if channel == "ack":
                    a = parse_ack(topic, payload, root=self.root, limits=self.limits, lookup=self.lookup)
                    if isinstance(a, Rejection):
                        dead(a, origins)
                    else:
                        self._tally[("stored", "ack")] += len(origins)
                        with self._lock_lifecycle:
                            self.acks.setdefault(a["device"], deque(maxlen=50)).append({**a, "rx": t})
                        log.info("command acknowledged", extra=a)
                    continue
                if channel == "status":
                    self._process_status(txn, topic, payload, t, status_changes, fresh=topic not in replayed,
                                         origins=origins)
                    continue
                parts = topic.split("/")

                def lookup(dev_id: str, parts: list[str] = parts) -> Device | None:
                    kind, city = (parts[3], parts[2]) if len(parts) == 6 else ("", "")
                    return self._lookup_or_register(dev_id, kind, city)

                r = normalise_telemetry(topic, payload, t, root=self.root, limits=self.limits,
                                        catalogue=self.catalogue, lookup=lookup)
                if isinstance(r, Rejection):
                    dead(r, origins)
                    continue
                if not txn.first_time(*dedup_key(r)):
                    dead(Rejection(Reason.DUPLICATE, f"seq {r.seq} at ts {r.ts_ms} already seen"), origins)
                    continue
                accepted.append((r.ts_ms, Outgoing(contract.normalized_topic(self.root, r.city, r.kind, r.device),
                                                   contract.encode_normalized(r), qos=1)))
                self._tally[("accepted", "")] += 1
                self._tally[("stored", "telemetry")] += len(origins)
                with self._lock_lifecycle:
                    ch = self.lifecycle.on_reading(r.device, r.kind, r.city, r.district, r.ts_ms, t, r.battery, r.fw)
                if ch is not None:
                    status_changes[ch.device] = ch
            # a device's backlog replayed out of order leaves in device-time order (stable within a batch)
            accepted.sort(key=lambda x: x[0])
            for _, out in accepted:
                txn.queue(out)
            for s in status_changes.values():
                txn.queue(self._status_out(s))
        for (what, label), n in self._tally.items():
            if what == "received":
                self.metrics.received.labels(label).inc(n)
            elif what == "rejected":
                self.metrics.rejected.labels(label).inc(n)
            elif what == "stored":
                self.metrics.stored.labels(label).inc(n)
            elif what == "ignored":
                self.metrics.ignored.inc(n)
            else:
                self.metrics.accepted.inc(n)
        self.forwarder.wake.set()

    def _adapt(self, raw: list[tuple[str, bytes, bool]], t: int
               ) -> tuple[list[tuple[str, bytes, list[tuple[str, bytes]]]],
                          list[tuple[list[tuple[str, bytes]], Rejection]]]:
        """Count what arrived and translate Tasmota/ESPHome messages into our contract.

        Every item keeps its origins (the messages the device sent) for dead letters and the ledger.
        """
        prefix = f"{self.root}/"
        native: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        dead: list[tuple[list[tuple[str, bytes]], Rejection]] = []
        esphome: list[tuple[str, bytes, bool]] = []
        g = self.s.gateway
        for topic, payload, retained in raw:
            if topic.startswith(prefix):
                ch = topic.rsplit("/", 1)[-1]
                ch = ch if ch in ("status", "ack") else "telemetry"
                self._tally[("received", ch)] += 1
                native.append((topic, payload, [(topic, payload)]))
                continue
            res = None
            if "tasmota" in g.adapters:
                res = adapters.tasmota_sensor(topic, payload, root=self.root, prefix=g.tasmota_prefix,
                                              catalogue=self.catalogue, lookup=self.lookup, rx_ms=t,
                                              tz_offset_s=g.adapter_tz_offset_s)
                for other in (adapters.tasmota_lwt, adapters.tasmota_state):
                    if res is None:
                        res = other(topic, payload, root=self.root, prefix=g.tasmota_prefix, lookup=self.lookup,
                                    rx_ms=t)
            if res is not None:
                self._tally[("received", "tasmota")] += 1
                if isinstance(res, Rejection):
                    dead.append(([(topic, payload)], res))
                else:
                    native.append((res.topic, res.payload, res.origins))
            elif "esphome" in g.adapters:
                self._tally[("received", "esphome")] += 1
                esphome.append((topic, payload, retained))
            else:
                self._tally[("received", "other")] += 1
                dead.append(([(topic, payload)], Rejection(Reason.BAD_TOPIC, "no adapter takes this topic")))
        if esphome:
            for origins, res in adapters.esphome_batch(esphome, root=self.root, prefix=g.esphome_prefix,
                                                       catalogue=self.catalogue, lookup=self.lookup, rx_ms=t):
                if isinstance(res, Rejection):
                    dead.append((origins, res))
                else:
                    native.append((res.topic, res.payload, res.origins))
        return native, dead

    def _process_status(self, txn: Any, topic: str, payload: bytes, t: int,
                        changes: dict[str, DeviceState], fresh: bool = True,
                        origins: list[tuple[str, bytes]] | None = None) -> None:
        origins = origins or [(topic, payload)]
        parts = topic.split("/")

        def lookup(dev_id: str) -> Device | None:
            return self._lookup_or_register(dev_id, parts[3], parts[2]) if len(parts) == 6 else self.lookup(dev_id)

        st = parse_status(topic, payload, root=self.root, limits=self.limits, catalogue=self.catalogue, lookup=lookup)
        if st is None:
            self._tally[("ignored", "")] += len(origins)  # an empty payload clears a retained status
            return
        if isinstance(st, Rejection):
            for o_topic, o_payload in origins:
                txn.queue(self._dead(st, o_topic, o_payload, t))
            return
        self._tally[("stored", "status")] += len(origins)
        assert isinstance(st, StatusMessage)
        dev = self.lookup(st.device)
        with self._lock_lifecycle:
            ch = self.lifecycle.on_status(st.device, st.kind, st.city, dev.district if dev else "unknown",
                                          st.state, t, st.fw, fresh)
        if ch is not None:
            changes[ch.device] = ch
            log.info("device state", extra={"device": st.device, "state": st.state})

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.put(msg)

    def _work(self) -> None:
        last_sweep = last_refresh = 0.0
        last_prune = time.monotonic()
        while not self._stop.is_set():
            batch: list[paho.MQTTMessage] = []
            try:
                batch.append(self._inbox.get(timeout=0.2))
                deadline = time.monotonic() + BATCH_WAIT_S
                while len(batch) < BATCH_MAX:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    batch.append(self._inbox.get(timeout=left))
            except queue.Empty:
                pass
            if batch:
                # MQTT redelivers unacked messages only on reconnect, so a failed batch (e.g. disk full,
                # database locked) is retried here until it commits: never acked before it is durable
                delay = 0.5
                while True:
                    try:
                        with self.metrics.batch_seconds.time():
                            self.process_batch(batch)
                        break
                    except Exception:  # noqa: BLE001
                        log.exception("batch failed; not acknowledged, retrying", extra={"size": len(batch)})
                        self.metrics.batch_failures.inc()
                        if self._stop.wait(delay):
                            return
                        delay = min(delay * 2, 10.0)
                c = self.client
                for m in batch:
                    if m.qos > 0 and c is not None:
                        c.ack(m.mid, m.qos)
            mono = time.monotonic()
            if mono - last_sweep >= 1.0:
                last_sweep = mono
                self._sweep(mono - last_refresh >= self.s.gateway.status_refresh_s)
                if mono - last_refresh >= self.s.gateway.status_refresh_s:
                    last_refresh = mono
            if mono - last_prune >= PRUNE_EVERY_S:
                last_prune = mono
                self.store.forget_before(now_ms() - self.limits.max_age_ms - self.limits.max_future_ms)

    def _restore_states(self) -> None:
        states = []
        for dev_id, state, stale, last_seen, battery, fw in self.registry.load_states():
            d = self.lookup(dev_id)
            if d is not None:
                states.append(DeviceState(dev_id, d.kind, d.city, d.district, state, stale, last_seen, battery, fw))
        with self._lock_lifecycle:
            self.lifecycle.restore(states)

    def _sweep(self, refresh: bool) -> None:
        with self._lock_lifecycle:
            out = {s.device: s for s in self.lifecycle.sweep(now_ms())}
            if refresh:
                for s in self.lifecycle.take_dirty():
                    out.setdefault(s.device, s)
            states = list(self.lifecycle.devices.values())
            unsaved = [(s.device, s.state, s.stale, s.last_seen, s.battery, s.fw) for s in self.lifecycle.take_unsaved()]
        if unsaved:
            self.registry.save_states(unsaved)
        if out:
            self.store.enqueue(self._status_out(s) for s in out.values())
            self.forwarder.wake.set()
        self.metrics.devices_online.set(sum(1 for s in states if s.state == "online"))
        self.metrics.devices_stale.set(sum(1 for s in states if s.stale))

    def device_state(self, device: str) -> dict | None:
        with self._lock_lifecycle:
            s = self.lifecycle.devices.get(device)
            return s.to_dict() if s else None

    # ------------------------------------------------------------ commands to devices

    def publish_to_device(self, device: Device, channel: str, payload: bytes, retain: bool) -> None:
        """Config (retained) and commands go through the same durable outbox as everything else."""
        topic = contract.device_topic(self.root, device.city, device.kind, device.device, channel)
        self.store.enqueue([Outgoing(topic, payload, qos=1, retain=retain)])
        self.forwarder.wake.set()

    def config_payload(self, config: dict) -> bytes:
        """Only what the firmware takes; adapter settings (tasmota_map, ...) stay here."""
        return json.dumps({"v": 1, **device_config.device_part(config)}, separators=(",", ":")).encode()

    def _republish_configs(self) -> None:
        """The registry is the source of truth: re-assert every device's retained config at start
        (a broker that lost its retained store, or a config set from the CLI while we were down)."""
        with self._dev_lock:
            devices = [d for d in self._devices.values() if d.active and device_config.device_part(d.config)]
        if devices:
            self.store.enqueue(
                Outgoing(contract.config_topic(self.root, d.city, d.kind, d.device), self.config_payload(d.config),
                         qos=1, retain=True) for d in devices)

    # ------------------------------------------------------------ lifecycle

    def ready(self) -> dict[str, bool]:
        return {"devices_broker": self.inbound_connected and self._subscribed.is_set(),
                "upstream_broker": self.forwarder.connected}

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            return
        self.inbound_connected = True
        # subscribing again on every (re)connect is harmless with a persistent session
        subs = [(contract.device_subscription(self.root, "telemetry"), 1),
                (contract.device_subscription(self.root, "status"), 1),
                (contract.device_subscription(self.root, "ack"), 1)]
        g = self.s.gateway
        if "tasmota" in g.adapters:
            subs += [(f"{g.tasmota_prefix}tele/+/{leaf}", 1) for leaf in ("SENSOR", "LWT", "STATE")]
        if "esphome" in g.adapters:
            subs += [(f"{g.esphome_prefix}+/sensor/+/state", 1), (f"{g.esphome_prefix}+/binary_sensor/+/state", 1),
                     (f"{g.esphome_prefix}+/status", 1)]
        self._subscribed.clear()
        client.subscribe(subs)
        log.info("subscribed", extra={"root": self.root, "session_present": bool(getattr(flags, "session_present", False))})

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, props: Any = None) -> None:
        failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            log.error("subscription refused by the broker (ACL?)", extra={"codes": ",".join(failed)})
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.inbound_connected = False
        if not self._stop.is_set():
            log.warning("devices broker disconnected", extra={"rc": str(rc)})

    def start(self) -> "Gateway":
        self.reload_devices(force=True)
        self._restore_states()
        self._republish_configs()
        self.store.forget_before(now_ms() - self.limits.max_age_ms - self.limits.max_future_ms)
        self.forwarder.start()
        self._worker.start()
        c = make_client(self.s.mqtt, self.client_id, v5=True, clean=False, manual_ack=True)
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.reconnect_delay_set(1, 5)
        self.client = c
        deadline = time.monotonic() + 60
        while True:
            try:
                connect(c, self.s.mqtt)
                break
            except (OSError, TimeoutError, ConnectionError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("devices broker not reachable; retrying", extra={"error": str(exc)[:200]})
                time.sleep(1.0)
        # a first-time session only receives what is published after the SUBACK: wait for it
        if not self._subscribed.wait(10):
            log.warning("no SUBACK from the devices broker yet")
        log.info("gateway started", extra={"client_id": self.client_id, "devices": len(self._devices),
                                           "queued": self.store.depth})
        return self

    def stop(self) -> None:
        self._stop.set()
        # let the worker finish (commit + ack) its current batch before the connection goes; whatever
        # is still in the inbox is unacknowledged and stays with the broker (persistent session)
        self._worker.join(timeout=10)
        self._sweep(refresh=False)  # persist the latest lifecycle view
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self.forwarder.stop()
        self.store.close()
        self.registry.close()
        log.info("gateway stopped")
