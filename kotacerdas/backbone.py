"""The clustered backbone: NATS JetStream with its built-in MQTT listener.

Why NATS and not RabbitMQ: measured in ``bench/backbone_choice.py`` and written down in
docs/scale.md ("Choice of backbone").

How data flows. A device (or the gateway) publishes MQTT QoS 1 to any node. nats-server
2.9 stores every QoS 1 PUBLISH in the replicated ``$MQTT_msgs`` stream (subject
``$MQTT.msgs.<topic with / as .>``) *before* it sends the PUBACK (server/mqtt.go,
``mqttProcessPub``: ``processInboundClientMsg`` then ``jsa.storeMsg``), so a PUBACK means
"stored on a majority of the stream's replicas". That stream has interest retention: a
message stays until every consumer whose filter matches it has acknowledged it. Ingest
workers share ONE durable pull consumer on it (a consumer group): each fetch hands a
message to one worker; the worker acks only after InfluxDB stored the point; a worker that
dies leaves its messages un-acked and JetStream redelivers them to the others after
``ack_wait``. A second stream fed by plain subject capture would not do: that copy is
made asynchronously, after or without the PUBACK, so a node crash could lose it.

:class:`NatsNode` / :class:`NatsCluster` start private nodes on loopback (tests, benches,
``kotacerdas backbone up``); production runs one node per machine with the same config.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kotacerdas import contract
from kotacerdas.stack import StackError, _Daemon, _which, free_port

MQTT_STREAM = "$MQTT_msgs"
MQTT_SUBJECT_PREFIX = "$MQTT.msgs."
INGEST_CONSUMER = "kc-ingest"


def mqtt_topic_to_subject(topic: str) -> str:
    """NATS maps MQTT ``a/b/c`` to ``a.b.c`` (and ``+``/``#`` to ``*``/``>``)."""
    return topic.replace("/", ".").replace("+", "*").replace("#", ">")


def normalized_filter(root: str) -> str:
    """Subject filter of the ingest consumer: every normalised reading under ``root``."""
    return MQTT_SUBJECT_PREFIX + mqtt_topic_to_subject(contract.normalized_subscription(root))


def subject_to_mqtt_topic(subject: str) -> str:
    return subject.removeprefix(MQTT_SUBJECT_PREFIX).replace(".", "/")


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
        from kotacerdas.stack import port_open

        return port_open(self.host, self.port) and port_open(self.host, self.mqtt_port)


class NatsCluster:
    """``n`` nodes on free loopback ports under ``workdir`` (one sub-directory each)."""

    def __init__(self, workdir: Path, n: int = 3, host: str = "127.0.0.1"):
        if not _which("nats-server"):
            raise StackError("nats-server not installed: run scripts/bootstrap.sh (apt package nats-server)")
        cports = [free_port() for _ in range(n)]
        self.nodes = [
            NatsNode(
                "nats-server", Path(workdir) / f"n{i + 1}", host, free_port(),
                mqtt_port=free_port(), cluster_port=cports[i],
                routes=[p for j, p in enumerate(cports) if j != i] if n > 1 else [],
                server_name=f"kc-n{i + 1}",
            )
            for i in range(n)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout_s: float = 30.0) -> "NatsCluster":
        for n in self.nodes:
            n.start(timeout_s)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def remove_state(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)

