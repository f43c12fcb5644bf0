"""Backbone choice: NATS JetStream (MQTT built in) vs RabbitMQ 3.10 (MQTT plugin), same run.

Both brokers get the same job: devices publish MQTT QoS 1 (bench/ingest_publisher.py, a
PUBACK-counting raw-socket publisher), and a consumer group of ``--workers`` processes reads
them with explicit acks:
- NATS: one durable pull consumer on the replicated ``$MQTT_msgs`` stream (kotacerdas/backbone.py
  says why that stream), fetch 2000, ack each message;
- RabbitMQ: one quorum queue bound to ``amq.topic`` (where the MQTT plugin publishes), AMQP
  consumers with prefetch 2000, ``basic.ack(multiple=True)`` every 500.

Each broker is a private single node on free loopback ports under a temp dir (never the system
services). Printed per broker: seconds to start, publish msg/s (PUBACKed), end-to-end msg/s
(first publish to last ack), delivered vs sent, duplicates, broker RSS and CPU seconds; then the
NATS/RabbitMQ ratios.

    flock /tmp/kc-bench.lock .venv/bin/python bench/backbone_choice.py --count 40000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from devtools import backbone as localnats
from kotacerdas import backbone
from devtools.stack import free_port, port_open

from benchutil import pipes, print_rows  # bench helper, same folder (python bench/backbone_choice.py)

HERE = Path(__file__).resolve().parent
ROOT = "kcb"
RABBIT_QUEUE = "kc-ingest"


# ---------------------------------------------------------------- consumers (subprocesses)


async def _consume_nats(url: str, expect: int, out: Path) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(backbone.INGEST_CONSUMER, stream=backbone.MQTT_STREAM)
    seen: list[str] = []
    idle_since = time.monotonic()
    last = 0.0
    while time.monotonic() - idle_since < 3.0:
        try:
            msgs = await sub.fetch(2000, timeout=1.0)
        except asyncio.TimeoutError:
            continue
        idle_since = time.monotonic()
        last = time.time()
        for m in msgs:
            d = json.loads(m.data)
            seen.append(f"{d['device']}:{d['seq']}")
            await m.ack()
    await nc.close()
    out.write_text(json.dumps({"seen": seen, "last": last}))


def _consume_rabbit(port: int, expect: int, out: Path) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    seen: list[str] = []
    pending = 0
    last_tag = None
    last = 0.0
    idle = 0
    for method, _props, body in ch.consume(RABBIT_QUEUE, inactivity_timeout=0.5):
        if method is None:
            if last_tag is not None and pending:
                ch.basic_ack(last_tag, multiple=True)
                pending = 0
            idle += 1
            if idle >= 6:
                break
            continue
        idle = 0
        last = time.time()
        d = json.loads(body)
        seen.append(f"{d['device']}:{d['seq']}")
        last_tag = method.delivery_tag
        pending += 1
        if pending >= 500:
            ch.basic_ack(last_tag, multiple=True)
            pending = 0
    if last_tag is not None and pending:
        ch.basic_ack(last_tag, multiple=True)
    conn.close()
    out.write_text(json.dumps({"seen": seen, "last": last}))


# ---------------------------------------------------------------- brokers


class Rabbit:
    """A private RabbitMQ node (own node name, ports, cookie, data) with the MQTT plugin."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.amqp, self.mqtt, self.dist = free_port(), free_port(), free_port()
        self.node = f"kcbench{os.getpid()}@localhost"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "rabbit.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
        )
        (d / "plugins").write_text("[rabbitmq_mqtt].\n")
        cookie = d / ".erlang.cookie"
        cookie.write_text("KCBENCHCOOKIE")
        cookie.chmod(0o600)
        env = dict(os.environ, HOME=str(d), RABBITMQ_NODENAME=self.node, RABBITMQ_DIST_PORT=str(self.dist),
                   RABBITMQ_MNESIA_BASE=str(d / "mnesia"), RABBITMQ_LOG_BASE=str(d / "log"),
                   RABBITMQ_CONFIG_FILE=str(d / "rabbit"), RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "plugins"),
                   RABBITMQ_PID_FILE=str(d / "pid"))
        self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env, start_new_session=True,
                                     stdout=open(d / "out.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (port_open("127.0.0.1", self.mqtt) and port_open("127.0.0.1", self.amqp)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rabbitmq did not start: " + (d / "out.log").read_text()[-1500:])
            time.sleep(0.2)

    def setup_group(self) -> None:
        import pika

        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.amqp))
        ch = conn.channel()
        ch.queue_declare(RABBIT_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        # the MQTT plugin publishes topic a/b/c to amq.topic with routing key a.b.c
        ch.queue_bind(RABBIT_QUEUE, "amq.topic", routing_key=f"{ROOT}.#")
        conn.close()

    def pid(self) -> int:
        # rabbitmq-server is a shell script; the VM (beam.smp) is its descendant
        assert self.proc is not None, "start() first"
        p = psutil.Process(self.proc.pid)
        beams = [c for c in p.children(recursive=True) if "beam" in c.name()]
        return beams[0].pid if beams else p.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class Nats:
    def __init__(self, workdir: Path):
        self.cluster = localnats.NatsCluster(workdir, n=1)
        self.node = self.cluster.nodes[0]
        self.mqtt = self.node.mqtt_port

    def start(self) -> None:
        self.cluster.start()

    def setup_group(self) -> None:
        async def go() -> None:
            import nats
            import paho.mqtt.client as paho
            from nats.js.api import AckPolicy, ConsumerConfig

            # MQTT's streams exist once the first MQTT client has connected
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="kc-bench-setup")
            c.connect("127.0.0.1", self.mqtt)
            c.loop_start()
            nc = await nats.connect(self.node.url)
            js = nc.jetstream()
            for _ in range(100):
                try:
                    await js.stream_info(backbone.MQTT_STREAM)
                    break
                except Exception:  # noqa: BLE001 - the stream is not created yet: poll again
                    await asyncio.sleep(0.1)
            await js.add_consumer(backbone.MQTT_STREAM, ConsumerConfig(
                durable_name=backbone.INGEST_CONSUMER, filter_subject=backbone.normalized_filter(ROOT),
                ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=20000))
            await nc.close()
            c.loop_stop()
            c.disconnect()

        asyncio.run(go())

    def pid(self) -> int:
        return self.node.pid() or 0

    def stop(self) -> None:
        self.cluster.stop()


# ---------------------------------------------------------------- one run


def run_one(name: str, broker, args: argparse.Namespace, tmp: Path) -> dict:
    t0 = time.monotonic()
    broker.start()
    broker.setup_group()
    startup = time.monotonic() - t0
    bp = psutil.Process(broker.pid())
    cpu0 = sum(bp.cpu_times()[:2])
    t0_ms = int(time.time() * 1000) - 3_600_000
    pub = subprocess.Popen(
        [sys.executable, str(HERE / "ingest_publisher.py"), "--port", str(broker.mqtt), "--root", ROOT,
         "--count", str(args.count), "--devices", str(args.devices), "--rate", "1e9", "--t0", str(t0_ms),
         "--window", str(args.window)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    pub_in, pub_out = pipes(pub)
    assert pub_out.readline().strip() == "ready"
    outs = [tmp / f"{name}-w{i}.json" for i in range(args.workers)]
    target = broker.node.url if name == "nats" else str(broker.amqp)
    workers = [subprocess.Popen([sys.executable, __file__, "--consume", name, "--target", target,
                                 "--count", str(args.count), "--out", str(o)]) for o in outs]
    time.sleep(1.0)  # consumers connected
    start = time.time()
    pub_in.write("go\n")
    pub_in.flush()
    res = json.loads(pub_out.readline())
    pub.wait()
    for w in workers:
        w.wait()
    seen: list[str] = []
    last = 0.0
    for o in outs:
        got = json.loads(o.read_text())
        seen += got["seen"]
        last = max(last, got["last"])
    e2e = max(1e-3, last - start)  # first publish to the last message a consumer received
    rss = bp.memory_info().rss
    cpu = sum(bp.cpu_times()[:2]) - cpu0
    broker.stop()
    return {
        "broker": name, "startup_s": round(startup, 2), "sent": res["acked"],
        "publish_msg_s": round(res["acked"] / res["seconds"]), "delivered": len(seen),
        "duplicates": len(seen) - len(set(seen)), "e2e_msg_s": round(len(set(seen)) / e2e),
        "broker_rss_mib": round(rss / 2**20), "broker_cpu_s": round(cpu, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=40000)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--consume", choices=["nats", "rabbit"], help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.consume == "nats":
        asyncio.run(_consume_nats(a.target, a.count, a.out))
        return 0
    if a.consume == "rabbit":
        _consume_rabbit(int(a.target), a.count, a.out)
        return 0
    from rich.console import Console

    con = Console(stderr=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kc-backbone-") as td:
        tmp = Path(td)
        for name, cls in (("nats", Nats), ("rabbit", Rabbit)):
            con.print(f"[bold]{name}[/]: start, publish {a.count:,} QoS 1 messages, {a.workers} consumers ...")
            b = cls(tmp / name)
            try:
                rows.append(run_one(name, b, a, tmp))
            finally:
                b.stop()
    print_rows(con, f"backbone choice: {a.count:,} msgs, {a.workers} consumers, single node each", rows)
    n, r = rows
    for k in ("startup_s", "publish_msg_s", "e2e_msg_s", "broker_rss_mib", "broker_cpu_s"):
        print(f"ratio nats/rabbit {k}: {n[k] / max(r[k], 1e-9):.2f}")
    print(json.dumps(rows))
    ok = all(x["delivered"] - x["duplicates"] == x["sent"] for x in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
