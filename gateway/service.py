"""``kotacerdas gateway run``: the thin I/O shell around the gateway's pure core.

Flow: device topics (QoS 1, persistent session, manual acks) -> batch worker ->
one SQLite transaction per batch (dedup memory + outbox) -> PUBACK to the devices'
broker -> forwarder drains the outbox to the upstream broker in order.

A device message is acknowledged only after its outcome (normalised message or dead
letter) is durably queued, so a crash at any point loses nothing: unacknowledged
messages are redelivered by the broker and the dedup memory turns repeats into no-ops.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter as TallyCounter
from collections import deque
import time
from typing import Any

import orjson
import paho.mqtt.client as paho
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kotacerdas import contract, device_config
from kotacerdas.backoff import Backoff
from kotacerdas.catalogue import load_catalogue
from kotacerdas.contract import Limits, Reason, Rejection, normalized_doc
from kotacerdas.mqttwire import RECONNECT_BASE_S, RECONNECT_CAP_S, WireClient
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings

from gateway import adapters
from gateway.core import StatusMessage, check_registry, parse_ack, parse_status
from gateway.forwarder import Forwarder
from gateway.lifecycle import DeviceState, Lifecycle
from gateway.registry import Device, Registry
from gateway.store import Outgoing, Store

log = logging.getLogger("gateway")

STAGE = "gateway"
PRUNE_EVERY_S = 600.0
V1 = f"v{contract.VERSION}"
DEVICE_INPUT = frozenset({contract.CH_TELEMETRY, contract.CH_STATUS, contract.CH_ACK})
ECHOED = frozenset({contract.CH_CONFIG, contract.CH_CMD})  # device channels the gateway itself publishes


# one message on its way through a batch: (topic, payload, RETAIN flag, origins); origins is None
# for a device's own message, else the vendor messages an adapted one was made from
Item = tuple[str, bytes, int, "list[tuple[str, bytes]] | None"]


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=8).digest()


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
        self.ignored = Counter("kc_gateway_ignored_total",
                               "Device messages neither stored nor rejected: an empty status payload (a retained "
                               "status cleared), a retained copy already handled (kc_gateway_retained_replays_total)",
                               registry=r)
        self.batch_seconds = Histogram("kc_gateway_batch_seconds", "Time to validate and commit one batch", registry=r)
        self.retained_replays = Counter(
            "kc_gateway_retained_replays_total",
            "Retained copies replayed by the broker at (re)subscription and already handled: counted, not "
            "stored or dead-lettered again", ["channel"], registry=r)
        self.inbound_reconnects = Counter(
            "kc_gateway_inbound_reconnects_total",
            "Connections to the devices' broker after the first one (it went away and came back)", registry=r)
        self.echo = Counter("kc_gateway_echo_total",
                            "The gateway's own outputs (config, cmd, dead letters) seen on its wide subscription "
                            "and skipped; not device messages, so not in the ledger", registry=r)
        self.inbox_depth = Gauge("kc_gateway_inbox_depth", "Messages read from the broker, not yet committed",
                                 registry=r)
        self.backpressure = Counter("kc_gateway_backpressure_seconds_total",
                                    "Time reading from the devices' broker was paused (inbox or outbox full)",
                                    registry=r)
        # pre-create every reason so dashboards see zeros rather than missing series
        for reason in Reason:
            self.rejected.labels(reason.value)
        for ch in (*sorted(DEVICE_INPUT), "tasmota", "esphome", "other"):
            self.received.labels(ch)
        for ch in (contract.CH_TELEMETRY, "tasmota", "esphome"):
            self.retained_replays.labels(ch)
        for ch in sorted(DEVICE_INPUT):
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
        self.metrics.inbox_depth.set_function(lambda: len(self._inbox))
        self.client_id = g.client_id or f"kc-gateway-{self.root}"
        self._devices: dict[str, Device] = {}
        self._reg_version = -1
        self._dev_lock = threading.Lock()
        self.lifecycle = Lifecycle(g.stale_after_intervals, self._interval_s)
        self.validator = contract.TelemetryValidator(root=self.root, limits=self.limits, catalogue=self.catalogue)
        # Inbound: (topic, payload, packet id, qos, retain, connection generation), bounded
        self._inbox: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._norm_topics: dict[tuple[str, str, str], str] = {}
        self._routes: dict[str, str] = {}
        self._stop = threading.Event()
        self.inbound_connected = False
        self._inbound_connects = 0
        # paho path only: its network thread reconnects, we choose each wait (the wire client has its own)
        self.inbound_backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        self._subscribed = threading.Event()
        self.client: WireClient | paho.Client | None = None
        self.forwarder = Forwarder(
            self.store, g.upstream or settings.mqtt, f"{self.client_id}-up",
            on_forwarded=self.metrics.forwarded.inc, on_refused=self.metrics.upstream_refused.inc,
            window=g.forward_window, window_bytes=g.forward_window_bytes, client=g.mqtt_client,
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

    def process_batch(self, msgs: list) -> None:
        """Validate, dedup and queue a batch in one transaction (then the caller acks).

        ``msgs`` are :data:`Inbound` tuples (paho messages are accepted too, for tests)."""
        if msgs and not isinstance(msgs[0], tuple):
            msgs = [(m.topic, bytes(m.payload), m.mid, m.qos, int(m.retain), 0) for m in msgs]
        self.reload_devices()
        self._tally = TallyCounter()  # counted only once the batch is committed (a retried batch counts once)
        t = now_ms()
        status_changes: dict[str, DeviceState] = {}
        dead: list[Outgoing] = []
        with self.store.transaction() as txn:
            native, replayed = self._route(txn, msgs, t, dead)
            telemetry: list[Item] = []
            for item in native:
                topic, payload, _, origins = item
                channel = topic[topic.rfind("/") + 1:]
                if channel == contract.CH_TELEMETRY:
                    telemetry.append(item)
                elif channel == contract.CH_STATUS:
                    self._process_status(dead, topic, payload, t, status_changes, fresh=topic not in replayed,
                                         origins=origins)
                else:
                    self._process_ack(dead, topic, payload, t, origins)
            accepted = self._telemetry(txn, telemetry, t, dead, status_changes)
            txn.queue_many(dead)
            txn.queue_rows(accepted)
            txn.queue_many([self._status_out(s) for s in status_changes.values()])
        for (what, label), n in self._tally.items():
            if what == "received":
                self.metrics.received.labels(label).inc(n)
            elif what == "rejected":
                self.metrics.rejected.labels(label).inc(n)
            elif what == "replayed":
                self.metrics.retained_replays.labels(label).inc(n)
            elif what == "stored":
                self.metrics.stored.labels(label).inc(n)
            elif what == "ignored":
                self.metrics.ignored.inc(n)
            elif what == "echo":
                self.metrics.echo.inc(n)
            else:
                self.metrics.accepted.inc(n)
        self.forwarder.wake.set()

    def _dead_all(self, rej: Rejection, topic: str, payload: bytes, origins: list | None, t: int,
                  dead: list[Outgoing]) -> None:
        """One dead letter per message the device sent (an adapted reading may come from several)."""
        for o_topic, o_payload in origins or [(topic, payload)]:
            dead.append(self._dead(rej, o_topic, o_payload, t))

    def _route(self, txn: Any, msgs: list, t: int, dead: list[Outgoing]) -> tuple[list[Item], set[str]]:
        """Sort a batch by where it came from: our own device topics (wide subscription: anything
        under the root that is not a device channel is dead-lettered), the gateway's own outputs
        echoed back (ignored), Tasmota/ESPHome (adapted), and retained copies already handled."""
        native: list[Item] = []
        foreign: list[tuple[str, bytes, int]] = []
        replayed: set[str] = set()
        tally = self._tally
        routes = self._routes
        if len(routes) > 200_000:
            routes.clear()
        counts: dict[str, int] = {}
        for m in msgs:
            topic, payload, retain = m[0], m[1], m[4]
            route = routes.get(topic)
            if route is None:
                route = routes[topic] = self._route_of(topic)
            if route in DEVICE_INPUT:
                counts[route] = counts.get(route, 0) + 1
                if retain:
                    replayed.add(topic)
                native.append((topic, payload, retain, None))
            elif route == "foreign":
                foreign.append((topic, payload, retain))
            elif route == "echo":
                tally[("echo", "")] += 1  # our own config/cmd/dead letters: not device input, not in the ledger
            else:
                tally[("received", "other")] += 1
                rej = contract.parse_device_topic(topic, self.root)
                if not isinstance(rej, Rejection):
                    rej = Rejection(Reason.BAD_TOPIC, f"channel {topic.rsplit('/', 1)[-1][:32]!r} is not sent by devices")
                dead.append(self._dead(rej, topic, payload, t))
        for ch, n in counts.items():
            tally[("received", ch)] += n
        # retained telemetry replayed at (re)subscription: handled once, then only counted
        again = txn.retained_known([(tp, _digest(p)) for tp, p, r, _ in native if r and tp.endswith("/telemetry")])
        if again:
            kept = []
            for item in native:
                if item[2] and (item[0], _digest(item[1])) in again:
                    tally[("replayed", contract.CH_TELEMETRY)] += 1
                    tally[("ignored", "")] += 1
                else:
                    kept.append(item)
            native = kept
        if foreign:
            native += self._adapt(txn, foreign, t, dead)
        return native, replayed

    def _route_of(self, topic: str) -> str:
        """A device input channel, "foreign" (another prefix: adapters), "echo" (our own) or "other"."""
        if not topic.startswith(f"{self.root}/"):
            return "foreign"
        parts = topic.split("/")
        if len(parts) > 2 and parts[2] == contract.PLATFORM or (len(parts) == 6 and parts[5] in ECHOED):
            return "echo"
        ch = parts[5] if len(parts) == 6 and parts[1] == V1 else ""
        return ch if ch in DEVICE_INPUT else "other"

    def _telemetry(self, txn: Any, items: list[Item], t: int, dead: list[Outgoing],
                   status_changes: dict[str, DeviceState]) -> list[tuple[str, bytes, int, int]]:
        """Batched: one decode and cached topic parse per message, one dedup statement per batch."""
        results = self.validator.validate_many([(tp, p) for tp, p, _, _ in items], t)
        cands: list[tuple[dict, Item]] = []
        first_seq: dict[tuple[str, int], int] = {}
        repeats: list[tuple[dict, Item]] = []
        devices = self._devices
        for item, r in zip(items, results):
            if isinstance(r, Rejection):
                self._dead_all(r, item[0], item[1], item[3], t, dead)
                continue
            dev = devices.get(r.device)
            # the usual case (known, active, same kind and city) without building a rejection
            if dev is None or not dev.active or dev.kind != r.kind or dev.city != r.city:
                if dev is None:
                    dev = self._lookup_or_register(r.device, r.kind, r.city)
                rej = check_registry(dev, r.device, r.kind, r.city)
                if rej is not None or dev is None:  # (Rejection is falsy: no `rej or ...` here)
                    why = rej if rej is not None else Rejection(Reason.UNKNOWN_DEVICE, r.device)
                    self._dead_all(why, item[0], item[1], item[3], t, dead)
                    continue
            doc = normalized_doc(r, district=dev.district, department=dev.department, lat=dev.lat, lon=dev.lon,
                                 rx_ms=t)
            key = (r.device, r.ts_ms)
            if key in first_seq:
                repeats.append((doc, item))
            else:
                first_seq[key] = r.seq
                cands.append((doc, item))
        known = txn.claim([(d["device"], d["ts"], d["seq"]) for d, _ in cands])
        if known:
            accepted = []
            stored = 0
            seen_before = []
            for c in cands:
                if (c[0]["device"], c[0]["ts"]) in known:
                    seen_before.append(c)
                else:
                    accepted.append(c[0])
                    stored += len(c[1][3]) if c[1][3] else 1
            repeats = seen_before + repeats
        else:  # the usual batch: every candidate is new
            accepted = [d for d, _ in cands]
            stored = sum(len(item[3]) if item[3] else 1 for _, item in cands)
        for d, (topic, payload, retain, origins) in repeats:
            key = (d["device"], d["ts"])
            held = known.get(key, first_seq[key])
            if held == d["seq"] and retain:
                self._tally[("replayed", contract.CH_TELEMETRY)] += 1  # a retained copy of a reading we stored
                self._tally[("ignored", "")] += 1
            elif held == d["seq"]:
                self._dead_all(Rejection(Reason.DUPLICATE, f"seq {d['seq']} at ts {d['ts']} already seen"),
                               topic, payload, origins, t, dead)
            else:
                self._dead_all(Rejection(Reason.TIMESTAMP_CONFLICT, f"ts {d['ts']} already holds seq {held} of "
                                         f"this device, not seq {d['seq']}"), topic, payload, origins, t, dead)
        self._tally[("accepted", "")] += len(accepted)
        self._tally[("stored", contract.CH_TELEMETRY)] += stored
        # one lifecycle update per device and batch (all share the receive time t)
        latest: dict[str, dict] = {}
        bat: dict[str, float] = {}
        fw: dict[str, str] = {}
        for d in accepted:
            latest[d["device"]] = d
            if d["bat"] is not None:
                bat[d["device"]] = d["bat"]
            if d["fw"] is not None:
                fw[d["device"]] = d["fw"]
        with self._lock_lifecycle:
            on_reading = self.lifecycle.on_reading
            for dev_id, d in latest.items():
                ch = on_reading(dev_id, d["kind"], d["city"], d["district"], d["ts"], t, bat.get(dev_id), fw.get(dev_id))
                if ch is not None:
                    status_changes[dev_id] = ch
        # a device's backlog replayed out of order leaves in device-time order (stable within a batch)
        accepted.sort(key=lambda d: d["ts"])
        if self.s.gateway.forward_batch > 1:
            return self._batch_rows(accepted)
        dumps, topics = orjson.dumps, self._norm_topics
        if len(topics) > 200_000:
            topics.clear()
        out = []
        for d in accepted:
            where = (d["city"], d["kind"], d["device"])
            norm_topic = topics.get(where)
            if norm_topic is None:
                norm_topic = topics[where] = contract.normalized_topic(self.root, *where)
            out.append((norm_topic, dumps(d), 1, 0))  # outbox row: topic, payload, qos, retain
        return out

    def _batch_rows(self, accepted: list[dict]) -> list[tuple[str, bytes, int, int]]:
        """Outbox rows of up to ``forward_batch`` readings and ``forward_batch_bytes`` of payload,
        one city and kind each; a device's readings keep their order (one device has one city and
        kind, so it is in one group)."""
        groups: dict[tuple[str, str], list[dict]] = {}
        for d in accepted:
            g = groups.get((d["city"], d["kind"]))
            if g is None:
                g = groups[(d["city"], d["kind"])] = []
            g.append(d)
        size, limit = self.s.gateway.forward_batch, self.s.gateway.forward_batch_bytes
        encode = contract.encode_normalized_batch
        out = []
        for (city, kind), docs in groups.items():
            topic = contract.normalized_batch_topic(self.root, city, kind)
            i, n = 0, size
            while i < len(docs):
                chunk = docs[i:i + n]
                payload = encode(chunk)
                if len(payload) > limit and len(chunk) > 1:
                    # too big for the broker: fewer readings (their sizes are alike), kept for the group
                    n = max(1, len(chunk) * limit * 9 // (len(payload) * 10))
                    continue
                out.append((topic, payload, 1, 0))
                i += len(chunk)
        return out

    def _process_ack(self, dead: list[Outgoing], topic: str, payload: bytes, t: int, origins: list | None) -> None:
        a = parse_ack(topic, payload, root=self.root, limits=self.limits, lookup=self.lookup)
        if isinstance(a, Rejection):
            self._dead_all(a, topic, payload, origins, t, dead)
            return
        self._tally[("stored", contract.CH_ACK)] += len(origins) if origins else 1
        with self._lock_lifecycle:
            self.acks.setdefault(a["device"], deque(maxlen=50)).append({**a, "rx": t})
        log.info("command acknowledged", extra=a)

    def _adapt(self, txn: Any, raw: list[tuple[str, bytes, int]], t: int, dead: list[Outgoing]) -> list[Item]:
        """Count what arrived and translate Tasmota/ESPHome messages into our contract.

        Every item keeps its origins (the messages the device sent) for dead letters and the ledger.
        Retained copies the broker replays at every (re)subscription are handled once: ESPHome
        states (retained by default) are remembered by (topic, digest), also when they arrive live,
        and so is a retained Tasmota SENSOR; a replay of one already handled is counted, not
        stored or dead-lettered again."""
        g = self.s.gateway
        esph = "esphome" in g.adapters
        remember = [(tp, _digest(p)) for tp, p, r in raw
                    if (r and tp.endswith("/SENSOR")) or (esph and tp.startswith(g.esphome_prefix) and "sensor/" in tp)]
        again = txn.retained_known(remember) if remember else set()
        native: list[Item] = []
        esphome: list[tuple[str, bytes, bool]] = []
        for topic, payload, retain in raw:
            if retain and again and (topic, _digest(payload)) in again:
                ch = "tasmota" if topic.endswith("/SENSOR") else "esphome"
                self._tally[("received", ch)] += 1  # received and ignored: the ledger stays balanced
                self._tally[("replayed", ch)] += 1
                self._tally[("ignored", "")] += 1
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
                    dead.append(self._dead(res, topic, payload, t))
                else:
                    native.append((res.topic, res.payload, 0, res.origins))
            elif esph:
                self._tally[("received", "esphome")] += 1
                esphome.append((topic, payload, bool(retain)))
            else:
                self._tally[("received", "other")] += 1
                dead.append(self._dead(Rejection(Reason.BAD_TOPIC, "no adapter takes this topic"), topic, payload, t))
        if esphome:
            for origins, res in adapters.esphome_batch(esphome, root=self.root, prefix=g.esphome_prefix,
                                                       catalogue=self.catalogue, lookup=self.lookup, rx_ms=t):
                if isinstance(res, Rejection):
                    self._dead_all(res, "", b"", origins, t, dead)
                else:
                    native.append((res.topic, res.payload, 0, res.origins))
        return native

    def _process_status(self, dead: list[Outgoing], topic: str, payload: bytes, t: int,
                        changes: dict[str, DeviceState], fresh: bool = True, origins: list | None = None) -> None:
        n_origins = len(origins) if origins else 1
        parts = topic.split("/")

        def lookup(dev_id: str) -> Device | None:
            return self._lookup_or_register(dev_id, parts[3], parts[2]) if len(parts) == 6 else self.lookup(dev_id)

        st = parse_status(topic, payload, root=self.root, limits=self.limits, catalogue=self.catalogue, lookup=lookup)
        if st is None:
            self._tally[("ignored", "")] += n_origins  # an empty payload clears a retained status
            return
        if isinstance(st, Rejection):
            self._dead_all(st, topic, payload, origins, t, dead)
            return
        self._tally[("stored", contract.CH_STATUS)] += n_origins
        assert isinstance(st, StatusMessage)
        dev = self.lookup(st.device)
        with self._lock_lifecycle:
            ch = self.lifecycle.on_status(st.device, st.kind, st.city, dev.district if dev else "unknown",
                                          st.state, t, st.fw, fresh)
        if ch is not None:
            changes[ch.device] = ch
            log.info("device state", extra={"device": st.device, "state": st.state})

    # ------------------------------------------------------------ inbox (bounded: backpressure to the broker)

    def _on_messages(self, gen: int, msgs: list) -> None:
        """Reader thread (wire client): one call per socket read. Blocks while the inbox is full,
        so nothing more is read: the surplus waits at the broker (persistent session), not in RAM."""
        cap = self.s.gateway.max_buffered
        with self._cond:
            i = 0
            while i < len(msgs) and not self._stop.is_set():
                if len(self._inbox) >= cap:
                    t0 = time.monotonic()
                    self._cond.wait(0.5)
                    self.metrics.backpressure.inc(time.monotonic() - t0)
                    continue
                take = msgs[i:i + cap - len(self._inbox)]
                i += len(take)
                self._inbox.extend([(*m, gen) for m in take])
                self._cond.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # paho (TLS): its network thread blocks here the same way when the inbox is full
        self._on_messages(0, [(msg.topic, bytes(msg.payload), msg.mid, msg.qos, int(msg.retain))])

    def _take(self, timeout_s: float) -> list:
        with self._cond:
            if not self._inbox and not self._stop.is_set():
                self._cond.wait(timeout_s)
            # a trickle (devices paced below capacity) would otherwise make a batch, a commit, an
            # upstream window and an ingest message of a few readings each: wait a moment for more
            cap, linger = self.s.gateway.batch_max, self.s.gateway.batch_linger_s
            if self._inbox and len(self._inbox) < cap and linger > 0:
                end = time.monotonic() + linger
                while len(self._inbox) < cap and not self._stop.is_set():
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(len(self._inbox), self.s.gateway.batch_max)
            batch = [self._inbox.popleft() for _ in range(n)]
            if n:
                self._cond.notify_all()
        return batch

    def _ack(self, batch: list) -> None:
        c = self.client
        if c is None:
            return
        if isinstance(c, WireClient):
            by_gen: dict[int, list[int]] = {}
            for m in batch:
                if m[3]:
                    by_gen.setdefault(m[5], []).append(m[2])
            for gen, mids in by_gen.items():
                c.ack(gen, mids)  # one write; ids of an older connection are dropped (redelivered)
        else:
            for m in batch:
                if m[3]:
                    c.ack(m[2], m[3])

    def _work(self) -> None:
        last_sweep = last_refresh = last_save = 0.0
        last_prune = time.monotonic()
        max_outbox = self.s.gateway.max_outbox
        while not self._stop.is_set():
            if self.store.depth >= max_outbox:
                # upstream far behind: stop taking input (the devices' broker keeps it) until it drains
                self.metrics.backpressure.inc(0.2)
                self.forwarder.wake.set()
                self._stop.wait(0.2)
                batch = []
            else:
                batch = self._take(0.2)
            if batch:
                # MQTT redelivers unacked messages only on reconnect, so a failed batch (e.g. disk full,
                # database locked) is retried here until it commits: never acked before it is durable
                backoff = Backoff(0.5, 10.0)
                while True:
                    try:
                        with self.metrics.batch_seconds.time():
                            self.process_batch(batch)
                        break
                    except Exception:  # noqa: BLE001
                        log.exception("batch failed; not acknowledged, retrying", extra={"size": len(batch)})
                        self.metrics.batch_failures.inc()
                        if self._stop.wait(backoff.delay()):
                            return
                self._ack(batch)
            mono = time.monotonic()
            if mono - last_sweep >= 1.0:
                last_sweep = mono
                save = mono - last_save >= self.s.gateway.lifecycle_save_s
                self._sweep(mono - last_refresh >= self.s.gateway.status_refresh_s, save=save)
                if mono - last_refresh >= self.s.gateway.status_refresh_s:
                    last_refresh = mono
                if save:
                    last_save = mono
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

    def _sweep(self, refresh: bool, save: bool = True) -> None:
        with self._lock_lifecycle:
            out = {s.device: s for s in self.lifecycle.sweep(now_ms())}
            if refresh:
                for s in self.lifecycle.take_dirty():
                    out.setdefault(s.device, s)
            states = list(self.lifecycle.devices.values())
            # a few thousand devices heard every second cost a registry write each: batched every
            # lifecycle_save_s instead (what a crash can lose is documented on the setting)
            unsaved = ([(s.device, s.state, s.stale, s.last_seen, s.battery, s.fw)
                        for s in self.lifecycle.take_unsaved()] if save else [])
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
        return contract.encode_config(device_config.device_part(config))

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

    def _subscriptions(self) -> list[tuple[str, int]]:
        # wide enough that a device on a wrong version, level count or channel is counted and
        # dead-lettered rather than silently unmatched (contract.gateway_subscriptions)
        subs = [(t, 1) for t in contract.gateway_subscriptions(self.root)]
        g = self.s.gateway
        if "tasmota" in g.adapters:
            subs += [(f"{g.tasmota_prefix}tele/+/{leaf}", 1) for leaf in ("SENSOR", "LWT", "STATE")]
        if "esphome" in g.adapters:
            subs += [(f"{g.esphome_prefix}+/sensor/+/state", 1), (f"{g.esphome_prefix}+/binary_sensor/+/state", 1),
                     (f"{g.esphome_prefix}+/status", 1)]
        return subs

    # paho (TLS to the devices' broker) callbacks
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            return
        self._connected(bool(getattr(flags, "session_present", False)))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, props: Any = None) -> None:
        failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            log.error("subscription refused by the broker (ACL?)", extra={"codes": ",".join(failed)})
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self._next_reconnect_wait(client)
        self._disconnected(str(rc))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._next_reconnect_wait(client)

    def _next_reconnect_wait(self, client: paho.Client) -> None:
        """paho's network thread waits ``min_delay`` before its next attempt (setting it restarts paho's
        own doubling ladder): one full-jitter draw of the platform's backoff per attempt, so gateways
        that lost the same broker do not come back in step."""
        wait = self.inbound_backoff.delay()
        client.reconnect_delay_set(wait, wait)  # type: ignore[arg-type]  # typed int, used as a float

    # wire client callbacks
    def _connected(self, session_present: bool) -> None:
        self.inbound_connected = True
        self.inbound_backoff.reset()
        self._inbound_connects += 1
        if self._inbound_connects > 1:
            self.metrics.inbound_reconnects.inc()
            log.info("devices broker reconnected", extra={"session_present": session_present})
        # subscribing again on every (re)connect is harmless with a persistent session
        self._subscribed.clear()
        self.client.subscribe(self._subscriptions())  # type: ignore[union-attr]
        log.info("subscribed", extra={"root": self.root, "session_present": session_present})

    def _wire_subscribed(self, codes: list[int]) -> None:
        if 0x80 in codes:
            log.error("subscription refused by the broker (ACL?)", extra={"codes": ",".join(map(str, codes))})
        self._subscribed.set()

    def _disconnected(self, why: str) -> None:
        self.inbound_connected = False
        if not self._stop.is_set():
            log.warning("devices broker disconnected", extra={"rc": why[:200]})

    def start(self) -> "Gateway":
        self.reload_devices(force=True)
        self._restore_states()
        self._republish_configs()
        self.store.forget_before(now_ms() - self.limits.max_age_ms - self.limits.max_future_ms)
        self.forwarder.start()
        self._worker.start()
        wire = self.s.gateway.mqtt_client == "wire" and not self.s.mqtt.tls_ca
        deadline = time.monotonic() + 60
        if wire:
            # MQTT 3.1.1 persistent session (clean_session=0): RETAIN=1 marks a replay at subscription
            self.client = WireClient(self.s.mqtt, self.client_id, clean=False, on_connect=self._connected,
                                     on_disconnect=self._disconnected, on_messages=self._on_messages,
                                     on_subscribed=self._wire_subscribed, retain_flag=True, name="gateway-mqtt")
        else:
            c = make_client(self.s.mqtt, self.client_id, v5=True, clean=False, manual_ack=True)
            c.on_message = self._on_message
            c.on_connect = self._on_connect
            c.on_disconnect = self._on_disconnect
            c.on_subscribe = self._on_subscribe
            # paho's thread reconnects on this TLS / MQTT 5 path, waiting what _next_reconnect_wait
            # draws from kotacerdas.backoff (as the wire client does), not paho's unjittered ladder
            c.on_connect_fail = self._on_connect_fail
            self.client = c
        while True:
            try:
                if isinstance(self.client, WireClient):
                    self.client.start()
                else:
                    connect(self.client, self.s.mqtt)
                break
            except (OSError, TimeoutError, ConnectionError) as exc:
                if time.monotonic() > deadline:
                    raise
                wait = self.inbound_backoff.delay()
                log.warning("devices broker not reachable; retrying",
                            extra={"error": str(exc)[:200], "retry_in_s": round(wait, 3)})
                time.sleep(wait)
        # a first-time session only receives what is published after the SUBACK: wait for it
        if not self._subscribed.wait(10):
            log.warning("no SUBACK from the devices broker yet")
        log.info("gateway started", extra={"client_id": self.client_id, "devices": len(self._devices),
                                           "queued": self.store.depth})
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # let the worker finish (commit + ack) its current batch before the connection goes; whatever
        # is still in the inbox is unacknowledged and stays with the broker (persistent session)
        if self._worker.is_alive():
            self._worker.join(timeout=10)
        self._sweep(refresh=False)  # persist the latest lifecycle view
        if isinstance(self.client, WireClient):
            self.client.stop()
        elif self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self.forwarder.stop()
        self.store.close()
        self.registry.close()
        log.info("gateway stopped")
