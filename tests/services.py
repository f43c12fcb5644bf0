"""The real services as subprocesses, for tests that run the pipeline as an operator would.

Everything goes through the ``kotacerdas`` CLI with settings from environment variables:
no part's code is imported here. Used by the end-to-end, dashboards and reliability tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.stack import free_port

REPO = Path(__file__).resolve().parents[1]


def kc(*argv: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kotacerdas", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def service_env(tmp: Path, *, mqtt_port: int, influx_url: str, database: str, root: str,
                upstream_port: int | None = None, **extra: str) -> dict[str, str]:
    """Environment of one pipeline: private ports, paths under ``tmp``, HTTP on free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
    env.update({
        "KC_MQTT__HOST": "127.0.0.1", "KC_MQTT__PORT": str(mqtt_port), "KC_MQTT__TOPIC_ROOT": root,
        "KC_INFLUX__URL": influx_url, "KC_INFLUX__DATABASE": database, "KC_STATE_DIR": str(tmp / "state"),
        "KC_GATEWAY__REGISTRY_PATH": str(tmp / "gw/registry.sqlite"),
        "KC_GATEWAY__QUEUE_PATH": str(tmp / "gw/queue.sqlite"),
        "KC_INGEST__SPOOL_PATH": str(tmp / "ingest/spool"),
        "KC_INGEST__CLIENT_ID": f"ingest-{root}",
        "KC_GATEWAY__HTTP_PORT": str(free_port()), "KC_INGEST__HTTP_PORT": str(free_port()),
        "KC_ANALYTICS__HTTP_PORT": str(free_port()), "KC_LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
    })
    if upstream_port is not None:
        env.update({"KC_GATEWAY__UPSTREAM__HOST": "127.0.0.1", "KC_GATEWAY__UPSTREAM__PORT": str(upstream_port),
                    "KC_GATEWAY__UPSTREAM__TOPIC_ROOT": root})
    env.update(extra)
    return env


class Service:
    """One ``kotacerdas <part> run`` subprocess with its log, health wait, SIGKILL and restart."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path, port_var: str | None):
        self.name, self.argv, self.env, self.logdir, self.port_var = name, argv, env, logdir, port_var
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.pids: list[int] = []

    def start(self, timeout_s: float = 60.0, wait: bool = True) -> "Service":
        """Start the process; with ``wait``, return once it is ready (see :meth:`wait_ready`)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "kotacerdas", *self.argv], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                     start_new_session=True)
        log.close()
        self.pids.append(self.proc.pid)
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> "Service":
        """Until /readyz answers 200 (no-op without ``port_var``). Starting several services and then
        waiting for each lets their imports (seconds of CPU each) run side by side."""
        assert self.proc is not None, f"{self.name} was not started"
        if self.port_var:
            # /readyz, not /healthz: a service is healthy as soon as its HTTP server runs, but ready
            # only once it is subscribed (a message published before that would have no subscriber)
            url = f"http://127.0.0.1:{self.env[self.port_var]}/readyz"
            deadline = time.monotonic() + timeout_s
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {timeout_s} s:\n{self.log()[-3000:]}")
                time.sleep(0.1)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as on a crash or OOM kill."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if not self.alive:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_bytes(self) -> int:
        """RSS of the service process and its children (psutil)."""
        import psutil

        if not self.alive:
            return 0
        try:
            p = psutil.Process(self.proc.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return 0


def start_all(*services: Service, timeout_s: float = 60.0) -> tuple[Service, ...]:
    """Start every service at once, then wait until each is ready (in the order given).

    Their imports (seconds of CPU each) overlap. Only for services that see no traffic before all of
    them are ready: a gateway becoming ready before ingest is subscribed must have nothing to forward.
    """
    for s in services:
        s.start(wait=False)
    for s in services:
        s.wait_ready(timeout_s)
    return services


def start_pipeline(scenario: Path, env: dict[str, str], tmp: Path) -> tuple[list["Service"], Path]:
    """The scenario's devices registered with the gateway, then ``gateway run`` and ``ingest run`` started
    and ready: (the services, to stop in reverse order; the devices file)."""
    devices = tmp / "devices.json"
    for argv in (["simulate", "devices", str(scenario), "-o", str(devices)],
                 ["gateway", "registry", "import", str(devices)]):
        r = kc(*argv, env=env)
        assert r.returncode == 0, f"kotacerdas {' '.join(argv)} -> {r.returncode}\n{r.stderr[-3000:]}"
    procs = [Service("gateway", ["gateway", "run"], env, tmp, "KC_GATEWAY__HTTP_PORT"),
             Service("ingest", ["ingest", "run"], env, tmp, "KC_INGEST__HTTP_PORT")]
    try:
        start_all(*procs)  # nothing is published before both are ready
    except BaseException:
        for p in reversed(procs):
            p.stop()
        raise
    return procs, devices


class DeadLetters:
    """Counts dead letters by reason (the last topic level) as the platform publishes them."""

    def __init__(self, mqtt, subscription: str):  # noqa: ANN001 - kotacerdas.settings.MqttSettings
        from collections import Counter
        import threading

        from kotacerdas.mqtt import connect, make_client

        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._client = make_client(mqtt)
        self._client.on_message = self._on_message
        connect(self._client, mqtt)
        self._client.subscribe(subscription, qos=1)

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001 - paho callback
        with self._lock:
            self._counts[msg.topic.rsplit("/", 1)[1]] += 1

    def counts(self) -> dict[str, int]:
        """A snapshot: reason -> messages."""
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        return sum(self.counts().values())

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
