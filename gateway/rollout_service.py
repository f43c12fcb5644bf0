"""``kotacerdas gateway rollout``: the shell around :mod:`gateway.rollout`.

Serves one signed release directory (``manifest.json``, ``manifest.sig`` and the files the
manifest lists, as ``kotacerdas firmware release`` writes it) over HTTP at
``/releases/{kind}/{version}/``, sends the ``update`` commands on the devices' ``cmd`` topics,
reads their ``ack`` and ``status`` topics, persists the rollout after every change and exposes
``/rollout`` (state), ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client
from kotacerdas.runtime import HttpServer, ops_router
from kotacerdas.settings import Settings

from gateway.rollout import STATES, DeviceRun, Policy, Rollout

log = logging.getLogger("gateway.rollout")

SIGNATURE_FILE = contract.UPDATE_SIGNATURE  # 64 bytes r||s


class ReleaseError(ValueError):
    pass


def read_release(path: Path) -> dict[str, Any]:
    """kind, version, sha256 and signature (hex) of a release directory; ReleaseError if incomplete.
    The gateway does not verify the signature (it holds no key): the devices do."""
    try:
        manifest = (path / contract.UPDATE_MANIFEST).read_bytes()
        sig = (path / SIGNATURE_FILE).read_bytes()
        doc = json.loads(manifest)
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{path}: not a release directory ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict) or len(sig) != 64:
        raise ReleaseError(f"{path}: manifest without files or signature not 64 bytes")
    for name, meta in doc["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != meta.get("size"):
            raise ReleaseError(f"{path}: {name} missing or not the manifest's size")
    return {"kind": doc.get("kind"), "version": doc.get("fw"), "sha256": hashlib.sha256(manifest).hexdigest(),
            "signature": sig.hex(), "files": sorted(doc["files"])}


def state_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "gateway" / "rollouts" / f"{name}.json"


def save(rollout: Rollout, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rollout.to_json(), indent=1))
    os.replace(tmp, path)


def load(path: Path) -> Rollout | None:
    try:
        return Rollout.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


class RolloutService:
    def __init__(self, settings: Settings, rollout: Rollout, release_dir: Path, path: Path):
        self.s = settings
        self.r = rollout
        self.release_dir = release_dir.resolve()
        self.path = path
        self.lock = threading.Lock()
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.metrics = CollectorRegistry()
        self.m_devices = Gauge("kc_rollout_devices", "Devices of the rollout by state", ["state"],
                               registry=self.metrics)
        self.m_halted = Gauge("kc_rollout_halted", "1 once the rollout halted on failures", registry=self.metrics)
        self.m_commands = Counter("kc_rollout_commands_total", "update commands sent", registry=self.metrics)
        self.m_files = Counter("kc_rollout_files_served_total", "release files served to devices", ["file"],
                               registry=self.metrics)
        self.m_bad = Counter("kc_rollout_rejected_total", "acks/status payloads refused", ["reason"],
                             registry=self.metrics)
        self.client: Any = None
        self.http: HttpServer | None = None
        self.connected = False

    # ---------------------------------------------------------------- HTTP
    def app(self) -> FastAPI:
        app = FastAPI(title="Kota Cerdas rollout", docs_url=None, redoc_url=None)
        app.include_router(ops_router(self.metrics, lambda: {"mqtt": self.connected}))
        prefix = f"/releases/{self.r.kind}/{self.r.version}/"

        @app.get("/rollout")
        def state() -> dict[str, Any]:
            with self.lock:
                return {**self.r.summary(), "devices": [vars(d) for d in self.r.devices]}

        @app.get(prefix + "{name:path}")
        def release_file(name: str) -> FileResponse:
            f = (self.release_dir / name).resolve()
            if not f.is_relative_to(self.release_dir) or not f.is_file():
                raise HTTPException(404, "no such release file")
            self.m_files.labels(file=name if name in (contract.UPDATE_MANIFEST, SIGNATURE_FILE) else "module").inc()
            return FileResponse(f, media_type="application/octet-stream")

        return app

    def base_url(self) -> str:
        assert self.http is not None
        g = self.s.gateway
        base = g.rollout_public_url or f"http://{g.rollout_http_host}:{self.http.port}/"
        return base.rstrip("/") + f"/releases/{self.r.kind}/{self.r.version}/"

    # ---------------------------------------------------------------- MQTT
    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.inbox.put((msg.topic, bytes(msg.payload)))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        root = self.s.mqtt.topic_root
        cities = sorted({d.city for d in self.r.devices})
        for city in cities:
            for ch in (contract.CH_ACK, contract.CH_STATUS):
                client.subscribe(contract.device_subscription(root, ch, city=city, kind=self.r.kind), qos=1)
        self.connected = True

    def start(self) -> "RolloutService":
        g = self.s.gateway
        self.http = HttpServer(self.app(), g.rollout_http_host, g.rollout_http_port, name="rollout-http").start()
        self.r.url = self.base_url()  # a resumed rollout may serve from another address now
        # a persistent session under a name-bound id: acks sent while a rollout process is restarted
        # wait in the broker instead of being lost (the devices would time out as failed)
        self.client = make_client(self.s.mqtt, f"kc-rollout-{self.s.mqtt.topic_root}-{self.r.name}"[:64], clean=False)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a, **k: setattr(self, "connected", False)
        connect(self.client, self.s.mqtt)  # subscribes in _on_connect, again after every reconnect
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
        if self.http is not None:
            self.http.stop()

    def _send(self, d: DeviceRun, now_ms: int) -> None:
        assert d.cmd_id is not None
        topic = contract.cmd_topic(self.s.mqtt.topic_root, d.city, d.kind, d.device)
        self.client.publish(topic, contract.encode_cmd(d.cmd_id, "update", self.r.update_args(), now_ms), qos=1)
        self.m_commands.inc()
        log.info("update command", extra={"device": d.device, "version": self.r.version, "wave": d.wave})

    def _handle(self, topic: str, payload: bytes, now_ms: int) -> None:
        t = contract.parse_device_topic(topic, self.s.mqtt.topic_root)
        if isinstance(t, contract.Rejection):
            self.m_bad.labels(reason=t.reason.value).inc()
            return
        if t.channel == contract.CH_ACK:
            a = contract.decode_ack(payload)
            if isinstance(a, contract.Rejection):
                self.m_bad.labels(reason=a.reason.value).inc()
                return
            self.r.on_ack(t.device, a, now_ms)
        elif t.channel == contract.CH_STATUS and payload:  # an empty retained payload clears the status
            st = contract.decode_status(payload)
            if isinstance(st, contract.Rejection):
                self.m_bad.labels(reason=st.reason.value).inc()
                return
            self.r.on_status(t.device, st, now_ms)

    def step(self, wait_s: float = 0.2) -> bool:
        """Handle what arrived, time out the silent, send the next wave; True once finished."""
        try:
            items = [self.inbox.get(timeout=wait_s)]
        except queue.Empty:
            items = []
        while not self.inbox.empty():
            items.append(self.inbox.get_nowait())
        now = int(time.time() * 1000)
        with self.lock:
            before = self.r.rev
            for topic, payload in items:
                self._handle(topic, payload, now)
            self.r.tick(now)
            for d in self.r.next_wave(now):
                self._send(d, now)
            if self.r.rev != before:
                save(self.r, self.path)
            counts = self.r.counts()
            for s in STATES:
                self.m_devices.labels(state=s).set(counts[s])
            self.m_halted.set(1 if self.r.halted else 0)
            return self.r.finished()

    def run(self, stop: threading.Event, settle_s: float = 1.0) -> Rollout:
        """Until finished (or stopped). The retained births are read for ``settle_s`` before the
        first wave, so devices already on the version are not commanded."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < settle_s and not stop.is_set():
            try:
                topic, payload = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            with self.lock:
                self._handle(topic, payload, int(time.time() * 1000))
        while not stop.is_set() and not self.step():
            pass
        with self.lock:
            save(self.r, self.path)
        return self.r


def new_rollout(name: str, release: dict[str, Any], targets: list[tuple[str, str, str]], policy: Policy) -> Rollout:
    """targets: (device, kind, city); every one must be of the release's kind."""
    wrong = [dev for dev, kind, _ in targets if kind != release["kind"]]
    if wrong:
        raise ReleaseError(f"devices {wrong[:5]} are not of kind {release['kind']!r}")
    devices = [DeviceRun(dev, kind, city) for dev, kind, city in sorted(targets, key=lambda t: (t[2], t[0]))]
    return Rollout(name=name, kind=release["kind"], version=release["version"], url="", sha256=release["sha256"],
                   signature=release["signature"], policy=policy, devices=devices,
                   created_ms=int(time.time() * 1000))
