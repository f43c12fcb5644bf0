"""Virtual device: the real firmware main loop under CPython with fake hardware.

The on-device modules (``firmware/device``) and the fakes (``firmware/fakes``) are
MicroPython sources; here they run unchanged with CPython's ``socket`` against the
real broker. Deep sleep and reset are emulated by re-creating the node (a "boot")
with the fake RTC memory and the flash ring file kept, exactly what survives on a board.
"""

from __future__ import annotations

import json
import logging
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kotacerdas.settings import Settings

FIRMWARE_DIR = Path(__file__).resolve().parent
DEVICE_DIR = FIRMWARE_DIR / "device"
FAKES_DIR = FIRMWARE_DIR / "fakes"

log = logging.getLogger("kc.firmware.virtual")


def device_path() -> None:
    """Make the MicroPython modules importable (flat names, as on the board)."""
    for p in (str(DEVICE_DIR), str(FAKES_DIR)):
        if p not in sys.path:
            sys.path.insert(0, p)


def _ticks() -> int:
    return int(time.monotonic() * 1000)


def make_board_class() -> type:
    device_path()
    import kc_fakes  # type: ignore[import-not-found]

    class VirtualBoard(kc_fakes.FakeBoard):  # type: ignore[misc, name-defined]
        def __init__(self, kind: str, storage: Path, seed: int, t0: float):
            super().__init__(kind, lambda: time.time() - t0, seed)
            self.storage = storage
            self.wifi_up = True

        def ticks_ms(self) -> int:
            return _ticks()

        def ticks_diff(self, a: int, b: int) -> int:
            return a - b

        def ticks_add(self, a: int, d: int) -> int:
            return a + d

        def sleep_ms(self, ms: int) -> None:
            time.sleep(ms / 1000)

        def now_ms(self) -> int:
            return int(time.time() * 1000)

        def log(self, msg: str) -> None:
            log.info(msg)

        def wifi_connect(self, ssid: str, password: str) -> None:
            pass

        def wifi_connected(self) -> bool:
            return self.wifi_up

        def rssi(self) -> int:
            return -60 - int(time.time()) % 7

        def ntp_sync(self, host: str) -> bool:
            return True

        def socket_factory(self) -> None:
            return None  # kc_mqtt opens the socket (and TLS) itself, as on the board

        def storage_dir(self) -> str:
            return str(self.storage)

        def deepsleep(self, ms: int) -> None:
            raise kc_fakes.DeepSleep(ms)

        def reset(self) -> None:
            raise kc_fakes.Reset()

    return VirtualBoard


@dataclass
class VirtualResult:
    device: str
    kind: str
    readings: int = 0
    delivered: int = 0
    buffered: int = 0
    dropped: int = 0
    boots: int = 0
    last_seq: int = 0
    link_errors: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def device_config(settings: Settings, kind: str, device: str, city: str, interval_s: float | None,
                  storage: Path | None = None) -> dict[str, Any]:
    device_path()
    import kc_config  # type: ignore[import-not-found]

    m = settings.mqtt
    doc: dict[str, Any] = {
        "kind": kind, "device": device, "city": city, "root": m.topic_root,
        "mqtt": {
            "host": m.host, "port": m.port, "user": m.username,
            "password": m.password.get_secret_value() if m.password else None,
            "tls": bool(m.tls_ca), "keepalive": m.keepalive_s,
        },
        "fw": "1.0.0-virtual",
    }
    if interval_s is not None:
        doc["interval_s"] = interval_s
    if m.tls_ca and storage is not None:
        # the board keeps its broker CA as DER in flash (config mqtt.tls_ca)
        der = ssl.PEM_cert_to_DER_cert(Path(m.tls_ca).read_text())
        (storage / "ca.der").write_bytes(der)
        doc["mqtt"]["tls_ca"] = str(storage / "ca.der")
    return kc_config.validate_device(doc)


class VirtualDevice:
    def __init__(self, settings: Settings, kind: str, device: str, city: str | None = None,
                 interval_s: float | None = None, state_dir: Path | None = None, seed: int = 1,
                 config_overrides: dict[str, Any] | None = None):
        self.storage = Path(state_dir or settings.state_dir / "firmware" / f"{kind}-{device}")
        self.storage.mkdir(parents=True, exist_ok=True)
        self.cfg = device_config(settings, kind, device, city or settings.city, interval_s, self.storage)
        if config_overrides:
            self.cfg.update(config_overrides)
        board_cls = make_board_class()
        self.board = board_cls(kind, self.storage, seed, time.time())
        self.node: Any = None
        self.stopping = False
        self.result = VirtualResult(device=device, kind=kind)

    def boot(self) -> Any:
        from kc_node import Node  # type: ignore[import-not-found]

        if self.node is not None:
            self.node.ring.close()
        self.node = Node(self.board, self.cfg)
        self.result.boots += 1
        if self.stopping:
            self.node.stop = True
        return self.node

    def stop(self) -> None:
        self.stopping = True
        if self.node is not None:
            self.node.stop = True

    def run(self, duration_s: float | None = None, count: int | None = None) -> VirtualResult:
        import kc_fakes  # type: ignore[import-not-found]

        deadline = None if duration_s is None else time.monotonic() + duration_s
        readings = 0
        node = self.boot()
        try:
            while not self.stopping:
                left_ms = None if deadline is None else int((deadline - time.monotonic()) * 1000)
                if left_ms is not None and left_ms <= 0:
                    break
                try:
                    node.run(duration_ms=left_ms, max_readings=None if count is None else count - readings)
                    readings += node.stats["readings"]
                    self._accumulate(node)
                    break
                except kc_fakes.DeepSleep as sl:
                    readings += node.stats["readings"]
                    self._accumulate(node)
                    wait = sl.ms / 1000
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    self._sleep(wait)
                    node = self.boot()
                except kc_fakes.Reset:
                    readings += node.stats["readings"]
                    self._accumulate(node)
                    node = self.boot()
        finally:
            self._finish(node)
        return self.result

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.2, end - time.monotonic()))

    def _accumulate(self, node: Any) -> None:
        r = self.result
        for k, v in node.stats.items():
            r.stats[k] = r.stats.get(k, 0) + v
        r.readings = r.stats.get("readings", 0)
        r.delivered = r.stats.get("delivered", 0)
        r.link_errors = r.stats.get("link_errors", 0)

    def _finish(self, node: Any) -> None:
        r = self.result
        r.buffered = len(node.ring)
        r.dropped = node.ring.dropped
        r.last_seq = node.seq
        try:
            node.shutdown()
        except OSError:
            pass


def run_cli(settings: Settings, kind: str, device: str, city: str | None, interval_s: float | None,
            duration_s: float | None, count: int | None, state_dir: Path | None, seed: int,
            backoff_cap_s: float | None = None) -> int:
    overrides = None if backoff_cap_s is None else {"backoff_cap_ms": int(backoff_cap_s * 1000)}
    vd = VirtualDevice(settings, kind, device, city, interval_s, state_dir, seed, overrides)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        vd.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("virtual %s device %s starting (broker %s:%s, root %s)", kind, device,
             settings.mqtt.host, settings.mqtt.port, settings.mqtt.topic_root)
    done = threading.Event()

    def progress() -> None:  # a long-running command reports progress (JSON log line every 10 s)
        while not done.wait(10):
            n = vd.node
            if n is not None:
                log.info("progress", extra={"readings": vd.result.readings + n.stats["readings"],
                                            "buffered": len(n.ring), "dropped": n.ring.dropped,
                                            "connected": n.client.connected(), "seq": n.seq})

    threading.Thread(target=progress, daemon=True).start()
    try:
        res = vd.run(duration_s, count)
    finally:
        done.set()
    print(json.dumps(res.as_dict()), flush=True)
    return 0
