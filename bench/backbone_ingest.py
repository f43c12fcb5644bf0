"""Ingest scaling on the clustered backbone: 1, 2 and 3 workers of the consumer group, same run.

For each worker count: a fresh 3-node NATS cluster on loopback and a private InfluxDB (both under a
temp dir), ``k`` ingest worker processes (``kotacerdas ingest jetstream``) that create the group's
consumer and are then paused (SIGSTOP), ``--count`` readings published over MQTT QoS 1
(bench/ingest_publisher.py, all PUBACKed = stored on the R3 stream), then the workers are resumed and
timed until InfluxDB holds every point. Printed: drain msg/s per worker count and the ratio to 1
worker; also publish msg/s into the 3-node cluster (R3, one MQTT connection) and the CPU seconds of
the workers, the three nats-servers and influxd during the drain (where the time goes).

    flock /tmp/kc-bench.lock .venv/bin/python bench/backbone_ingest.py --count 30000
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
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import InfluxSettings
from devtools.stack import InfluxProcess, free_port

from benchutil import pipes, print_rows  # bench helper, same folder (python bench/backbone_ingest.py)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROOT = "kcs"


async def _consumer_ready(url: str) -> bool:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream(timeout=3).consumer_info(backbone.MQTT_STREAM, backbone.INGEST_CONSUMER)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        await nc.close()


def _stored(c: InfluxClient) -> int:
    return sum(int(s.values[0][1]) for s in c.series('SELECT count("seq") FROM /.*/') if s.values)


def run(k: int, args: argparse.Namespace, tmp: Path) -> dict:
    cluster = localnats.NatsCluster(tmp / f"nats{k}", n=3).start()
    ix = InfluxProcess(tmp / f"influx{k}", free_port(), rpc_port=free_port()).start()
    procs: list[subprocess.Popen] = []
    try:
        db = "bench"
        env = dict(os.environ, KC_BACKBONE__SERVERS=json.dumps(cluster.urls), KC_MQTT__TOPIC_ROOT=ROOT,
                   KC_INFLUX__URL=ix.url, KC_INFLUX__DATABASE=db, KC_INGEST__HTTP_PORT="0",
                   KC_BACKBONE__FETCH_BATCH=str(args.fetch), KC_LOG_LEVEL="WARNING")
        # a first MQTT connection makes the server create $MQTT_msgs; the workers then create the group
        import paho.mqtt.client as paho

        probe = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="kc-bench-probe")
        deadline = time.monotonic() + 60
        while True:
            try:
                probe.connect("127.0.0.1", cluster.nodes[0].mqtt_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        probe.loop_start()
        procs = [subprocess.Popen([sys.executable, "-m", "kotacerdas", "ingest", "jetstream"], env=env, cwd=REPO,
                                  stdout=open(tmp / f"w{k}-{i}.log", "wb"), stderr=subprocess.STDOUT)
                 for i in range(k)]
        while not asyncio.run(_consumer_ready(cluster.urls[0])):
            if time.monotonic() > deadline:
                raise RuntimeError("consumer group not created: " + (tmp / f"w{k}-0.log").read_text()[-1500:])
            time.sleep(0.3)
        probe.loop_stop()
        probe.disconnect()
        with InfluxClient(InfluxSettings(url=ix.url, database=db)) as c:
            c.create_database()
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        pub = subprocess.Popen(
            [sys.executable, str(HERE / "ingest_publisher.py"), "--port", str(cluster.nodes[1].mqtt_port),
             "--root", ROOT, "--count", str(args.count), "--devices", str(args.devices), "--rate", "1e9",
             "--t0", str(int(time.time() * 1000) - 3_600_000), "--window", "1000"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pub_in, pub_out = pipes(pub)
        assert pub_out.readline().strip() == "ready"
        nats_procs = [psutil.Process(n.pid()) for n in cluster.nodes]
        pcpu0 = sum(sum(b.cpu_times()[:2]) for b in nats_procs)
        pub_in.write("go\n")
        pub_in.flush()
        res = json.loads(pub_out.readline())
        pub.wait()
        nats_publish_cpu = sum(sum(b.cpu_times()[:2]) for b in nats_procs) - pcpu0
        cpu0 = [sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs]
        brokers = [psutil.Process(n.pid()) for n in cluster.nodes] + [psutil.Process(ix.pid())]
        bcpu0 = [sum(b.cpu_times()[:2]) for b in brokers]
        t0 = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGCONT)
        with InfluxClient(InfluxSettings(url=ix.url, database=db)) as c:
            got = 0
            deadline = time.monotonic() + 600
            while got < res["acked"] and time.monotonic() < deadline:
                time.sleep(0.2)
                got = _stored(c)
        secs = time.monotonic() - t0
        cpu = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs) - sum(cpu0)
        bcpu = [sum(b.cpu_times()[:2]) - c0 for b, c0 in zip(brokers, bcpu0)]
        return {"workers": k, "sent": res["acked"], "publish_msg_s": round(res["acked"] / res["seconds"]),
                "nats_publish_cpu_s": round(nats_publish_cpu, 1),
                "stored": got, "drain_s": round(secs, 2), "drain_msg_s": round(got / secs),
                "worker_cpu_s": round(cpu, 1), "nats_cpu_s": round(sum(bcpu[:-1]), 1),
                "influxd_cpu_s": round(bcpu[-1], 1),
                "nats_rss_mib": round(max(b.memory_info().rss for b in brokers[:-1]) / 2**20),
                "worker_rss_mib": round(max(psutil.Process(p.pid).memory_info().rss for p in procs) / 2**20)}
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        ix.stop()
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=30000)
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--fetch", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,3")
    a = ap.parse_args()
    from rich.console import Console

    con = Console(stderr=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kc-scale-") as td:
        for k in (int(x) for x in a.workers.split(",")):
            con.print(f"{k} worker(s): fresh 3-node cluster, {a.count:,} readings ...")
            rows.append(run(k, a, Path(td)))
            con.print(rows[-1])
    print_rows(con, f"ingest consumer group on a 3-node NATS cluster, {a.count:,} readings", rows)
    base = rows[0]["drain_msg_s"]
    for r in rows:
        print(f"{r['workers']} workers: {r['drain_msg_s']} msg/s, ratio to 1 worker {r['drain_msg_s'] / base:.2f}")
    print(json.dumps(rows))
    return 0 if all(r["stored"] == r["sent"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
