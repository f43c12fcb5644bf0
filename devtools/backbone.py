"""A local NATS JetStream cluster on loopback (tests, benches, ``kotacerdas backbone up|down|status``).

What the backbone is and how services use it: :mod:`kotacerdas.backbone`. This module only starts
and stops private nats-server processes, so it lives with the other developer tools.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devtools.stack import StackError, _Daemon, _which, port_open
from kotacerdas.settings import Settings, load_settings

__all__ = ["NatsCluster", "NatsNode", "main", "remove_state"]


@dataclass
class NatsNode(_Daemon):
    """One nats-server with JetStream and MQTT; ``routes`` are the cluster ports of its peers."""

    mqtt_port: int = 0
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)
    server_name: str = "kc-n1"
    cluster_name: str = "kc"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "nats.conf"

    def _write_config(self) -> None:
        routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.routes)
        cluster = (
            f'cluster {{\n  name: "{self.cluster_name}"\n  listen: "{self.host}:{self.cluster_port}"\n'
            f"  routes: [{routes}]\n}}\n" if self.routes else ""
        )
        # max_ack_pending of MQTT's own consumers is irrelevant here (ingest has its own
        # consumer); stream_replicas defaults to min(3, cluster size): every MQTT stream R3.
        self.config_path.write_text(
            f'server_name: "{self.server_name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.workdir / "js"}"\n}}\n'
            f'mqtt {{\n  listen: "{self.host}:{self.mqtt_port}"\n}}\n'
            + cluster
        )

    def _command(self) -> list[str]:
        return [_which("nats-server") or "nats-server", "-c", str(self.config_path)]

    def ready(self) -> bool:
        # /healthz needs the monitoring port; a TCP answer on client and MQTT ports is enough
        # for start(); JetStream readiness is awaited by the caller (meta leader elected).
        return port_open(self.host, self.port) and port_open(self.host, self.mqtt_port)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            sk = socket.socket()
            sk.bind(("127.0.0.1", 0))
            socks.append(sk)
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()


class NatsCluster:
    """``n`` nodes on free loopback ports under ``workdir`` (one sub-directory each)."""

    def __init__(self, workdir: Path, n: int = 3, host: str = "127.0.0.1"):
        if not _which("nats-server"):
            raise StackError("nats-server not installed: run scripts/bootstrap.sh (apt package nats-server)")
        self.workdir = Path(workdir)
        self.n = n
        self.host = host
        self.nodes: list[NatsNode] = []
        self._assign_ports()

    def _assign_ports(self) -> None:
        n = self.n
        ports = _free_ports(3 * n)
        cports = ports[2 * n:]
        self.nodes = [
            NatsNode(
                "nats-server", self.workdir / f"n{i + 1}", self.host, ports[i],
                mqtt_port=ports[n + i], cluster_port=cports[i],
                routes=[p for j, p in enumerate(cports) if j != i] if n > 1 else [],
                server_name=f"kc-n{i + 1}",
            )
            for i in range(n)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout_s: float = 30.0, attempts: int = 3) -> "NatsCluster":
        """Start every node; a port taken between choosing and binding it (a shared machine's
        other processes) means new ports for the whole cluster, up to ``attempts`` times."""
        for attempt in range(attempts):
            try:
                for node in self.nodes:
                    node.start(timeout_s)
                return self
            except StackError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self._assign_ports()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_state(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- `kotacerdas backbone up|down|status`


def _state_file(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve() / "backbone" / "cluster.json"


def _load(settings: Settings) -> NatsCluster | None:
    f = _state_file(settings)
    if not f.exists():
        return None
    doc = json.loads(f.read_text())
    c = NatsCluster.__new__(NatsCluster)
    c.workdir, c.n, c.host = f.parent, len(doc["nodes"]), doc["host"]
    c.nodes = [NatsNode("nats-server", Path(d["dir"]), doc["host"], d["port"], mqtt_port=d["mqtt_port"],
                        cluster_port=d["cluster_port"], routes=d["routes"], server_name=d["name"])
               for d in doc["nodes"]]
    return c


def main(argv: list[str] | None = None) -> int:
    """A local 3-node cluster under ``<state_dir>/backbone`` for trying the clustered pipeline by hand."""
    import argparse

    ap = argparse.ArgumentParser(prog="kotacerdas backbone", description=main.__doc__)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args(argv)
    settings = load_settings()
    c = _load(settings)
    if args.action == "up":
        if c is None or not all(n.pid() for n in c.nodes):
            if c is not None:
                c.stop()
            c = NatsCluster(_state_file(settings).parent, n=args.nodes).start()
            _state_file(settings).write_text(json.dumps({"host": c.host, "nodes": [
                {"dir": str(n.workdir), "port": n.port, "mqtt_port": n.mqtt_port, "cluster_port": n.cluster_port,
                 "routes": n.routes, "name": n.server_name} for n in c.nodes]}, indent=1))
    elif args.action == "down":
        if c is not None:
            c.stop()
        return 0
    if c is None:
        print("no local backbone (kotacerdas backbone up)", file=sys.stderr)
        return 1
    for n in c.nodes:
        print(json.dumps({"node": n.server_name, "pid": n.pid(), "nats": n.url,
                          "mqtt": f"{n.host}:{n.mqtt_port}"}))
    print(f"export KC_BACKBONE__SERVERS='{json.dumps(c.urls)}'")
    return 0 if all(n.pid() for n in c.nodes) else 1
