"""The local stack: Mosquitto and InfluxDB on loopback with the project's own config.

``kotacerdas stack up|down|status``. Installs the Debian packages when missing
(needs root and apt), writes configs and data under ``<state_dir>/stack`` and
starts both daemons detached. Idempotent: a running, answering daemon is left alone.

:class:`MosquittoProcess` and :class:`InfluxProcess` are also what tests use to
start private instances (restart, auth/ACL and fault tests) on free ports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlparse

import httpx

from kotacerdas import brokerconf
from kotacerdas.settings import Settings, load_settings

APT_PACKAGES = ("influxdb", "mosquitto", "mosquitto-clients")


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def ensure_installed(binaries: dict[str, str] | None = None) -> None:
    """Install the Debian packages that provide missing binaries, or refuse with the reason."""
    binaries = binaries or {"influxd": "influxdb", "mosquitto": "mosquitto", "mosquitto_pub": "mosquitto-clients"}
    missing = sorted({pkg for exe, pkg in binaries.items() if not _which(exe)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(
            f"missing {', '.join(missing)} and not running as root: install them with "
            f"`sudo apt-get install -y {' '.join(missing)}` and run again"
        )
    if not shutil.which("apt-get"):
        raise StackError(f"missing {', '.join(missing)} and no apt-get on this machine: install them by hand")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing {' '.join(missing)} with apt-get ...", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    still = [exe for exe in binaries if not _which(exe)]
    if still:
        raise StackError(f"apt-get finished but {', '.join(still)} still not found")


def _which(exe: str) -> str | None:
    return shutil.which(exe) or next(
        (str(p) for p in (Path("/usr/sbin") / exe, Path("/usr/bin") / exe) if p.exists()), None
    )


@dataclass
class _Daemon:
    name: str
    workdir: Path
    host: str
    port: int
    reuse_running: bool = False

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def answering(self) -> bool:
        return port_open(self.host, self.port)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _write_config(self) -> None:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return self.answering()

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start unless already running and answering; wait until ready."""
        if self.pid() and self.ready():
            return self
        if self.answering():
            if self.reuse_running and self.ready():
                # Same protocol answering on our port (e.g. the stack of another
                # checkout of this project): use it rather than fight over the port.
                print(f"{self.name}: reusing the one already answering on {self.host}:{self.port}", file=sys.stderr)
                return self
            raise StackError(f"{self.host}:{self.port} is taken by another process, not a {self.name}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = open(self.logfile, "ab")
        proc = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir, env=self._env(),
        )
        log.close()
        self._proc = proc
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise StackError(f"{self.name} exited with {proc.returncode}:\n{tail}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise StackError(f"{self.name} did not become ready on {self.host}:{self.port} in {timeout_s} s")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = getattr(self, "_proc", None)
            if proc is not None:
                proc.poll()
            if not _pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        proc = getattr(self, "_proc", None)
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        # wait for the port to be released so a restart on it can bind
        deadline = time.monotonic() + 5
        while self.answering() and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: for crash tests."""
        self.stop(signal.SIGKILL)


class MosquittoProcess(_Daemon):
    """A Mosquitto with the project's settings. ``extra_config`` appends lines (auth, ACL, TLS)."""

    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1", extra_config: str = "", persistence: bool = True):
        super().__init__("mosquitto", Path(workdir), host, port)
        self.extra_config = extra_config
        self.persistence = persistence

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def _write_config(self) -> None:
        # queue, in-flight window and persistence: kotacerdas/brokerconf.py says why (the
        # operator's provisioned broker uses the same lines)
        # set_tcp_nodelay stays at Mosquitto's default (false): with it on, every PUBACK and
        # PUBLISH is its own TCP segment, 29 vs 19 us of broker CPU per QoS 1 message here.
        lines = [
            f"pid_file {self.workdir / 'mosquitto.run.pid'}",
            *(brokerconf.persistence_lines(self.workdir) if self.persistence else ["persistence false"]),
            *brokerconf.SESSION_LINES,
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # stay root so the daemon can write our project-local dirs
        if "listener" not in self.extra_config:
            lines += [f"listener {self.port} {self.host}", "allow_anonymous true"]
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")

    def ready(self) -> bool:
        """An MQTT 3.1.1 CONNECT answered by a CONNACK: the port speaks MQTT, not just TCP."""
        connect = bytes([0x10, 16, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 4]) + b"kc-p"
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(connect)
                head = sock.recv(4)
                sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
            # anonymous refused (rc 5) is still a broker answering
            return len(head) == 4 and head[0] == 0x20
        except OSError:
            return False

    def _command(self) -> list[str]:
        return [_which("mosquitto") or "mosquitto", "-c", str(self.config_path)]


class InfluxProcess(_Daemon):
    """An InfluxDB 1.x daemon with data under ``workdir``; HTTP on ``port``, RPC on ``rpc_port``."""

    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1", rpc_port: int | None = None):
        super().__init__("influxd", Path(workdir), host, port)
        self.rpc_port = rpc_port or (port + 2 if port + 2 < 65536 else free_port())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "influxdb.conf"

    def _write_config(self) -> None:
        d = self.workdir
        self.config_path.write_text(
            f"""reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
  max-series-per-database = 0
  max-values-per-tag = 0
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"
[subscriber]
  enabled = false
[logging]
  level = "warn"
"""
        )

    def _env(self) -> dict[str, str]:
        # GOGC=400: collect garbage at 5x the live heap instead of 2x. Measured with 10,000-line
        # writes of 12-field points on 2 cores (docs/benchmarks.md, "Ingest"): about a fifth
        # less influxd CPU per line, for more memory. A GOGC already in the environment wins.
        return {"GOGC": "400"} | dict(os.environ)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    def _command(self) -> list[str]:
        return [_which("influxd") or "influxd", "-config", str(self.config_path)]


# ---------------------------------------------------------------- the project's stack


def _stack(settings: Settings) -> tuple[MosquittoProcess, InfluxProcess]:
    base = Path(settings.state_dir).resolve() / "stack"
    u = urlparse(settings.influx.url)
    mq = MosquittoProcess(base / "mosquitto", settings.mqtt.port, host=settings.mqtt.host)
    ix = InfluxProcess(base / "influxdb", u.port or 8086, host=u.hostname or "127.0.0.1")
    mq.reuse_running = ix.reuse_running = True
    return mq, ix


def up(settings: Settings) -> None:
    for host in (settings.mqtt.host, urlparse(settings.influx.url).hostname):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise StackError(f"the local stack runs on loopback only; settings point at {host}")
    ensure_installed()
    for d in _stack(settings):
        d.start()
    from kotacerdas.influx import InfluxClient

    with InfluxClient(settings.influx) as c:
        c.create_database()


def down(settings: Settings) -> None:
    for d in _stack(settings):
        d.stop()


def status(settings: Settings) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for d in _stack(settings):
        rows.append({"service": d.name, "pid": d.pid(), "address": f"{d.host}:{d.port}", "ready": d.ready(), "dir": str(d.workdir)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas stack", description="Local Mosquitto + InfluxDB on loopback")
    ap.add_argument("action", choices=["up", "down", "status"])
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        if args.action == "up":
            up(settings)
        elif args.action == "down":
            down(settings)
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"stack {args.action} failed: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Kota Cerdas local stack")
    for col in ("service", "pid", "address", "ready", "dir"):
        t.add_column(col)
    rows = status(settings)
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("service", "pid", "address", "ready", "dir")))
    Console(stderr=True).print(t)
    if args.action == "up" and not all(r["ready"] for r in rows):
        return 1
    return 0
