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

Local nodes for tests, benches and trying it by hand (``kotacerdas backbone up|down|status``) are
started by :mod:`devtools.backbone`; production runs one node per machine with the same config.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kotacerdas import contract

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


def platform_filter(root: str) -> str:
    """Everything the platform itself publishes under ``root`` (normalised readings, dead letters,
    devstatus, alerts): the ingest group's filter (nats-server 2.9 allows one filter per consumer)."""
    return MQTT_SUBJECT_PREFIX + mqtt_topic_to_subject(contract.normalized_topic(root, "x", "x", "x")).rsplit(".", 4)[0] + ".>"


def device_telemetry_filter(root: str) -> str:
    """Devices' raw telemetry under ``root``: the gateway group's filter."""
    return MQTT_SUBJECT_PREFIX + mqtt_topic_to_subject(contract.device_subscription(root, "telemetry"))


def subject_for_topic(topic: str) -> str:
    """Where a JetStream publish must go for MQTT subscribers and groups to see ``topic``."""
    return MQTT_SUBJECT_PREFIX + mqtt_topic_to_subject(topic)


# header nats-server puts on MQTT-published messages; MQTT subscribers need it to deliver a message
MQTT_PUB_HEADER = {"Nmqtt-Pub": "1"}


class GroupConsumer:
    """One member of a consumer group: a durable pull consumer on ``$MQTT_msgs`` shared by every
    process with the same ``durable`` name. ``handle(msgs)`` must ack/NAK each message itself, and
    only after its effect is durable; an un-acked message goes to another member after ``ack_wait_s``.
    """

    def __init__(self, servers: list[str], durable: str, filter_subject: str, *, ack_wait_s: float,
                 max_ack_pending: int, fetch_batch: int, name: str, reconnect_wait_s: float):
        self.servers = servers
        self.durable = durable
        self.filter_subject = filter_subject
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.fetch_batch = fetch_batch
        self.name = name
        self.reconnect_wait_s = reconnect_wait_s
        self.nc: Any = None  # nats.aio.client.Client once run() connected
        self.js: Any = None
        self.bound = False
        self._stop: Any = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    @property
    def connected(self) -> bool:
        return bool(self.nc and self.nc.is_connected and self.bound)

    async def run(self, handle) -> None:  # noqa: ANN001 - async (list[nats Msg]) -> None
        import asyncio
        import logging

        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        log = logging.getLogger(self.name)
        self._stop = stop = asyncio.Event()

        async def disconnected() -> None:
            log.warning("backbone disconnected; reconnecting")

        async def reconnected() -> None:
            log.info("backbone reconnected")

        async def error(exc: Exception) -> None:  # nats-py prints a traceback per failed reconnect otherwise
            log.warning("backbone connection error", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})

        self.nc = nc = await nats.connect(
            servers=self.servers, max_reconnect_attempts=-1, reconnect_time_wait=self.reconnect_wait_s,
            disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error, name=self.name,
        )
        self.js = js = nc.jetstream(timeout=5.0)
        cfg = ConsumerConfig(
            durable_name=self.durable, filter_subject=self.filter_subject, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait_s, max_ack_pending=self.max_ack_pending,
            max_deliver=-1,
        )
        await ensure_consumer(js, cfg, stop)
        sub = await js.pull_subscribe_bind(self.durable, stream=MQTT_STREAM)
        self.bound = True
        log.info("consuming", extra={"consumer": self.durable, "filter": self.filter_subject})
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self.fetch_batch, timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                except Exception as exc:  # noqa: BLE001 - node lost / leader election: the client reconnects
                    log.warning("fetch failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
                    await asyncio.sleep(0.25)
                    continue
                await handle(msgs)
        finally:
            self.bound = False
            # nats-py's drain() waits for the pull subscription's queue to be marked done, which fetch
            # does not do for every entry: drain then sat out its 30 s drain_timeout on SIGTERM (seen in
            # the JetStream tests' teardown). Everything fetched is handled and acked by now, and what the
            # server had in flight comes back after ack_wait, so drop the subscription and drain the rest.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if nc.is_connected:
                await nc.drain()
            else:
                await nc.close()


async def ensure_consumer(js, cfg, stop=None, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    """Create the group's durable consumer once ``$MQTT_msgs`` exists (nats-server creates it when the
    first MQTT client connects); an existing consumer with the same config is left as it is."""
    import asyncio
    import logging
    import time

    from kotacerdas.backoff import Backoff

    # every worker of a group starts at once and polls the same servers: jittered, not in lockstep
    backoff = Backoff(0.25, 2.0)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await js.add_consumer(MQTT_STREAM, cfg)
            return
        except Exception as exc:  # noqa: BLE001 - stream not there yet, or no JetStream leader yet
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise RuntimeError(f"could not create consumer {cfg.durable_name}: {exc}") from exc
            logging.getLogger("backbone").info("waiting for the backbone's MQTT stream",
                                               extra={"error": str(exc)[:120]})
            await asyncio.sleep(backoff.delay())


def serve_member(run, stop, health) -> int:  # noqa: ANN001
    """Run a group member's ``run()`` coroutine until SIGTERM/SIGINT call ``stop``; ``health`` is a
    started :class:`kotacerdas.observability.HealthServer`, stopped on the way out."""
    import asyncio
    import signal

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await run()

    try:
        asyncio.run(go())
    finally:
        health.stop()
    return 0
