"""The whole pipeline through the gateway: devices -> MQTT -> gateway -> MQTT -> ingest -> InfluxDB.

Same run, same machine, private broker and private InfluxDB:
- **broker baseline**: ``mosquitto_pub -l`` -> Mosquitto -> ``mosquitto_sub`` (the C clients, QoS 1),
  the same payloads; ``mosquitto_pub -l`` silently stops past ~65k lines per process, so it is fed
  in chunks of 50,000 lines, one process each;
- **database baseline**: raw InfluxDB ``/write`` of pre-built line protocol, 5,000 lines a request;
- **pipeline**: publisher processes (raw-socket MQTT 3.1.1, QoS 1, every PUBACK counted) send
  device telemetry of registered devices; ``kotacerdas gateway run`` and ``kotacerdas ingest run``
  run as their own processes. Timed from the first publish until InfluxDB holds every point.

Measured: end-to-end msg/s, device-to-queryable latency (p50/p99/max: message k was published at
start + k/rate and is queryable once the stored count passes k; resolution = --poll), loss
(stored == published == gateway accepted; progress from ingest's written counter, the final
count from InfluxDB), and CPU microseconds per message of each process
(less noisy than msg/s on a shared machine). ``--rate`` paces the publishers (latency runs, e.g.
5000); unpaced (0) measures the pipeline's capacity. ``--gateway-src DIR`` runs the gateway from
another source tree (e.g. an export of an older commit) for before/after figures. ``--forward-batch N``
sets ``gateway.forward_batch`` (readings per upstream message); ``--trace`` prints each stage's counters
once a second (where a backlog sits); ``--warmup`` stores one earlier reading per device before the
clock starts, so the run measures a city in its steady state rather than its first minute (3,000
devices seen for the first time, 6,000 new InfluxDB series).

Usage: flock /tmp/kc-bench.lock .venv/bin/python bench/pipeline_throughput.py [--count 200000]
       [--rate 0] [--devices 3000] [--publishers 2] [--baseline-count 200000] [--gateway-src DIR]
       [--forward-batch 1] [--trace] [--warmup]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from tqdm import tqdm

from devtools import stack
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.lineprotocol import format_line
from kotacerdas.mqttwire import publish_packet
from kotacerdas.settings import InfluxSettings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchutil import wait_ready  # noqa: E402  (bench helper, same folder)
from ingest_publisher import run as publish_packets  # noqa: E402  (bench helper, same folder)

CAT = load_catalogue()
KINDS = list(CAT)
CITY = "depok"
REPO = HERE.parent


def device_of(j: int, devices: int) -> tuple[str, str, int]:
    kind = KINDS[j % len(KINDS)]
    slot = j // len(KINDS)
    per_kind = max(1, devices // len(KINDS))
    dev, seq = slot % per_kind, slot // per_kind
    return kind.name, f"{kind.name[:3]}-{dev:05d}", seq


def message(j: int, devices: int, t0_ms: int, root: str) -> tuple[str, bytes]:
    """Message j -> (device topic, telemetry payload); (device, ts) unique, devices report in turn."""
    kind, device, seq = device_of(j, devices)
    dev = int(device[-5:])
    fields = {f.name: f.quantise(f.typical) for f in CAT[kind].fields}
    payload = contract.encode_telemetry(t0_ms + seq * 1000 + dev % 997, seq, fields, battery=3.9, fw="1.2.0",
                                        rssi=-60)
    return contract.telemetry_topic(root, CITY, kind, device), payload


def publisher_main(a: list[str]) -> None:
    port, root, start, step, count, devices, rate, t0 = a
    packets = [publish_packet(*message(j, int(devices), int(t0), root), 1, k % 65535 + 1)
               for k, j in enumerate(range(int(start), int(count), int(step)))]
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(publish_packets("127.0.0.1", int(port), packets, float(rate) or 1e9, 2000)), flush=True)


def cpu_seconds(pid: int | None) -> float:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    try:
        return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        return 0.0


def count_points(ic: InfluxClient) -> int:
    meas = ",".join(f'"{k.measurement}"' for k in CAT)
    return sum(int(s.values[0][1]) for s in ic.series(f'SELECT count("seq") FROM {meas}'))


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


# ---------------------------------------------------------------- baselines


def broker_baseline(port: int, n: int, workdir: Path) -> dict:
    """mosquitto_pub -l (QoS 1) -> mosquitto_sub (QoS 1), the same payloads."""
    root = f"bb{uuid.uuid4().hex[:6]}"
    lines = [message(j, 3000, 0, root)[1].decode() for j in range(min(n, 3000))]
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", f"{root}/#", "-C", str(n),
                            "-W", "120"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # SUBACK
    chunk = 50_000
    t0 = time.monotonic()
    for i in range(0, n, chunk):
        k = min(chunk, n - i)
        data = ("\n".join(lines[(i + x) % len(lines)] for x in range(k)) + "\n").encode()
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", f"{root}/x", "-l"], input=data, check=True)
    assert sub.stdout is not None
    got = sum(1 for _ in sub.stdout)
    dt = time.monotonic() - t0
    sub.wait(10)
    return {"messages": n, "received": got, "rate": got / dt}


def influx_baseline(url: str, n: int) -> dict:
    db = f"bench_raw_{uuid.uuid4().hex[:6]}"
    ic = InfluxClient(InfluxSettings(url=url, database=db))
    ic.create_database()
    t0_ms = int(time.time() * 1000) - 86_400_000
    body = []
    for j in range(n):
        kind, device, seq = device_of(j, 3000)
        k = CAT[kind]
        fields = {f.name: f.quantise(f.typical) for f in k.fields} | {"battery": 3.9, "seq": seq, "rssi": -60}
        line = format_line(k.measurement, {"device": device, "city": CITY, "district": "beji", "kind": kind},
                           fields, (t0_ms + seq * 1000 + int(device[-5:]) % 997) * 1_000_000)
        assert line is not None  # typical values are always storable
        body.append(line)
    batches = ["\n".join(body[i:i + 5000]).encode() for i in range(0, n, 5000)]
    with httpx.Client(base_url=url, timeout=60) as http:
        t = time.monotonic()
        for b in batches:
            http.post("/write", params={"db": db}, content=b).raise_for_status()
        dt = time.monotonic() - t
    ic.drop_database(db)
    ic.close()
    return {"points": n, "rate": n / dt}


# ---------------------------------------------------------------- the pipeline


def warm_up(args, port: int, root: str, t0_ms: int, in_port: int) -> int:
    """One earlier reading per device, stored before the clock starts: the steady state of a running
    city (devices known and online, their InfluxDB series existing), not its first minute.
    Returns ingest's written count then (devstatus points included)."""
    p = subprocess.Popen([sys.executable, __file__, "_pub", str(port), root, "0", "1", str(args.devices),
                          str(args.devices), "0", str(t0_ms - 10_000_000)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("warm-up publisher failed")
    p.stdin.write("go\n")
    p.stdin.flush()
    p.stdout.readline()
    p.wait(30)
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline:
        written = int(metric(in_port, "kc_ingest_written_total"))
        if written >= 2 * args.devices:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # let the gateway's first lifecycle save and devstatus pass
    return int(metric(in_port, "kc_ingest_written_total"))


def run_pipeline(args, port: int, url: str, workdir: Path, pids: dict[str, int]) -> dict:
    root = f"bp{uuid.uuid4().hex[:8]}"
    db = f"bench_pipe_{uuid.uuid4().hex[:6]}"
    n = args.count
    ic = InfluxClient(InfluxSettings(url=url, database=db))
    reg_path = workdir / "registry.sqlite"
    env = dict(os.environ, KC_MQTT__HOST="127.0.0.1", KC_MQTT__PORT=str(port), KC_MQTT__TOPIC_ROOT=root,
               KC_LOG_LEVEL="WARNING", KC_STATE_DIR=str(workdir / "state"))
    devs = [{"device": device_of(j, args.devices)[1], "kind": device_of(j, args.devices)[0], "city": CITY,
             "district": "beji"} for j in range(args.devices)]
    reg = subprocess.run([sys.executable, "-c", "import json,sys; from gateway.registry import Registry; "
                          "r = Registry(sys.argv[1]); r.import_devices(json.load(sys.stdin)); r.close()",
                          str(reg_path)], input=json.dumps(devs).encode(), cwd=args.gateway_src or REPO,
                         env=dict(env, PYTHONPATH=str(args.gateway_src or REPO)), check=True)
    assert reg.returncode == 0
    gw_port, in_port = stack.free_port(), stack.free_port()
    gw_env = dict(env, PYTHONPATH=str(args.gateway_src or REPO), KC_GATEWAY__REGISTRY_PATH=str(reg_path),
                  KC_GATEWAY__QUEUE_PATH=str(workdir / "queue.sqlite"), KC_GATEWAY__HTTP_PORT=str(gw_port),
                  KC_GATEWAY__CLIENT_ID=f"bench-gw-{root}",
                  KC_GATEWAY__STATUS_REFRESH_S="1000000",  # devstatus only on a change: one per device
                  KC_GATEWAY__FORWARD_BATCH=str(args.forward_batch))
    in_env = dict(env, KC_INFLUX__URL=url, KC_INFLUX__DATABASE=db, KC_INGEST__SPOOL_PATH=str(workdir / "spool"),
                  KC_INGEST__CLIENT_ID=f"bench-in-{root}", KC_INGEST__HTTP_PORT=str(in_port))
    logs = {k: open(workdir / f"{k}.log", "wb") for k in ("gateway", "ingest")}
    procs = {
        "ingest": subprocess.Popen([sys.executable, "-m", "kotacerdas", "ingest", "run"], env=in_env, cwd=REPO,
                                   stdout=logs["ingest"], stderr=subprocess.STDOUT),
        "gateway": subprocess.Popen([sys.executable, "-m", "kotacerdas", "gateway", "run"], env=gw_env,
                                    cwd=args.gateway_src or REPO, stdout=logs["gateway"], stderr=subprocess.STDOUT),
    }
    try:
        wait_ready(in_port, procs["ingest"], workdir / "ingest.log")
        wait_ready(gw_port, procs["gateway"], workdir / "gateway.log")
        t0_ms = int(time.time() * 1000) - 86_400_000
        # points ingest writes that are not the measured messages: one devstatus per device (its first
        # reading: online), and with --warmup the warm-up readings
        extra = args.devices
        if args.warmup:
            extra = warm_up(args, port, root, t0_ms, in_port)
        pubs = [subprocess.Popen([sys.executable, __file__, "_pub", str(port), root, str(p), str(args.publishers),
                                  str(n), str(args.devices), str(args.rate / args.publishers), str(t0_ms)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for p in range(args.publishers)]
        for p in pubs:
            if p.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError("publisher failed")
        watch = dict(pids, gateway=procs["gateway"].pid, ingest=procs["ingest"].pid)
        cpu0 = {k: cpu_seconds(v) for k, v in watch.items()}
        samples: list[tuple[float, int]] = []
        trace: list[tuple[float, float, float, float, int]] = []
        max_rss = 0.0
        start = time.monotonic()
        for p in pubs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results: list[dict] = []
        readers = [threading.Thread(target=lambda p=p: results.append(json.loads(p.stdout.readline())), daemon=True)
                   for p in pubs]
        for r in readers:
            r.start()
        limit = start + max(120, n / 500)
        with tqdm(total=n, desc="stored in InfluxDB", unit="msg", file=sys.stderr) as bar:
            got = 0
            while got < n and time.monotonic() < limit:
                time.sleep(args.poll)
                try:  # written = InfluxDB answered 204: queryable (counting in InfluxDB would load it);
                    # it includes one devstatus point per device (its first reading: online)
                    got = max(0, int(metric(in_port, "kc_ingest_written_total")) - extra)
                except httpx.HTTPError:
                    pass
                samples.append((time.monotonic(), got))
                if args.trace and (not trace or time.monotonic() - trace[-1][0] >= 1.0):
                    try:  # where the messages are: each stage's counter, once a second
                        trace.append((time.monotonic(), metric(gw_port, "kc_gateway_accepted_total"),
                                      metric(gw_port, "kc_gateway_forwarded_total"),
                                      metric(in_port, "kc_ingest_received_total"), got))
                    except httpx.HTTPError:
                        pass
                max_rss = max(max_rss, rss_mib(procs["gateway"].pid))
                bar.n = got
                bar.refresh()
        end = samples[-1][0] if samples else time.monotonic()
        cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in watch.items()}
        for r in readers:
            r.join(60)
        cpu["publishers"] = sum(r["cpu_s"] for r in results)
        warm = args.devices if args.warmup else 0
        final = count_points(ic) - warm
        settle = time.monotonic() + 60
        while final < n and time.monotonic() < settle:  # the written counter ran ahead of the points
            time.sleep(0.5)
            final = count_points(ic) - warm
        accepted = metric(gw_port, "kc_gateway_accepted_total") - warm
        rejected = metric(gw_port, "kc_gateway_rejected_total")
        acked = sum(r["acked"] for r in results)
        offered = n / max(r["seconds"] for r in results)
        # latency: message k left at start + k / offered rate; queryable when the count passed k
        lat = []
        j = 0
        for k in range(0, n, max(1, n // 2000)):
            while j < len(samples) and samples[j][1] <= k:
                j += 1
            if j < len(samples):
                lat.append(samples[j][0] - (start + k / offered))
        lat.sort()
        for tm, acc, fwd, rcv, wr in trace:
            print(f"t={tm - start:6.1f}s gateway accepted {acc:9,.0f} forwarded {fwd:9,.0f}  ingest received "
                  f"{rcv:9,.0f} written {wr:9,}", file=sys.stderr)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

        return {"messages": n, "acked": acked, "stored": final, "accepted": accepted, "rejected": rejected,
                "seconds": end - start, "rate": n / (end - start), "offered": offered,
                "p50_s": pct(0.5), "p99_s": pct(0.99), "max_s": lat[-1] if lat else float("nan"),
                "gateway_max_rss_mib": max_rss, "cpu_us_per_msg": {k: v / n * 1e6 for k, v in cpu.items()}}
    finally:
        for name, proc in procs.items():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logs[name].close()
        for name in ("gateway", "ingest"):
            bad = [ln for ln in (workdir / f"{name}.log").read_text(errors="replace").splitlines()
                   if '"level": "error"' in ln or "Traceback" in ln]
            if bad:
                print(f"{name} logged {len(bad)} errors; first: {bad[0][:300]}", file=sys.stderr)
        try:
            ic.drop_database(db)
        except Exception:  # noqa: BLE001
            pass
        ic.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_pub":
        publisher_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000, help="messages through the pipeline")
    ap.add_argument("--rate", type=float, default=0, help="total publish rate, msg/s (0: as fast as acked)")
    ap.add_argument("--devices", type=int, default=3000)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--baseline-count", type=int, default=200_000)
    ap.add_argument("--poll", type=float, default=0.25, help="InfluxDB count poll interval, s")
    ap.add_argument("--gateway-src", type=Path, help="run the gateway from this source tree")
    ap.add_argument("--forward-batch", type=int, default=1,
                    help="gateway.forward_batch: readings per upstream message (1: one message per reading)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--trace", action="store_true", help="print each stage's progress once a second")
    ap.add_argument("--warmup", action="store_true",
                    help="store one reading per device before timing (steady state: devices known, series exist)")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="kc-bench-pipe-"))
    broker = stack.MosquittoProcess(workdir / "mosquitto", stack.free_port(), persistence=False)
    influxd = stack.InfluxProcess(workdir / "influxdb", stack.free_port(), rpc_port=stack.free_port())
    broker.start()
    influxd.start()
    try:
        base_b = base_i = None
        if not args.no_baselines:
            print("broker baseline (mosquitto_pub -> mosquitto_sub) ...", file=sys.stderr)
            base_b = broker_baseline(broker.port, args.baseline_count, workdir)
            print("database baseline (raw /write) ...", file=sys.stderr)
            base_i = influx_baseline(influxd.url, args.baseline_count)
        print("pipeline ...", file=sys.stderr)
        pids = {"mosquitto": broker.pid(), "influxd": influxd.pid()}
        pipe = run_pipeline(args, broker.port, influxd.url, workdir, {k: v for k, v in pids.items() if v is not None})
    finally:
        broker.stop()
        influxd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = pipe["stored"] == pipe["messages"] == pipe["acked"] == pipe["accepted"] and pipe["rejected"] == 0
    print()
    print(f"cpu: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; {args.devices:,} devices; "
          f"gateway from {args.gateway_src or 'this tree'}")
    if base_b and base_i:
        print(f"broker    mosquitto_pub -> mosquitto_sub: {base_b['received']:,}/{base_b['messages']:,} "
              f"received, {base_b['rate']:,.0f} msg/s")
        print(f"database  raw /write, 5,000 lines a request: {base_i['rate']:,.0f} points/s")
    print(f"pipeline  {pipe['messages']:,} msgs, stored {pipe['stored']:,}, gateway accepted {pipe['accepted']:,.0f}, "
          f"rejected {pipe['rejected']:,.0f}: {pipe['rate']:,.0f} msg/s end to end "
          f"(offered {pipe['offered']:,.0f} msg/s)")
    print(f"device-to-queryable latency: p50 {pipe['p50_s']:.2f} s, p99 {pipe['p99_s']:.2f} s, "
          f"max {pipe['max_s']:.2f} s (resolution {args.poll} s); gateway max RSS {pipe['gateway_max_rss_mib']:.0f} MiB")
    cpu = pipe["cpu_us_per_msg"]
    print("CPU per message (us): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()) +
          f"; together {sum(cpu.values()):.0f} us = at most {2e6 / sum(cpu.values()):,.0f} msg/s on 2 idle cores")
    if base_b and base_i:
        print(f"ratios: pipeline / broker {pipe['rate'] / base_b['rate']:.2f}, "
              f"pipeline / raw InfluxDB {pipe['rate'] / base_i['rate']:.2f}")
    print(f"zero loss, no duplicates: {'yes' if ok else 'NO'}")
    print(json.dumps({"pipeline": pipe, "broker": base_b, "influx": base_i}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
