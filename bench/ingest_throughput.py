"""End-to-end ingest throughput: MQTT (QoS 1) -> `kotacerdas ingest run` -> points queryable in InfluxDB.

Same run, same broker, same database server, same message set:
- **baseline**: the naive consumer most tutorials show: a paho ``on_message`` callback that parses
  each message and POSTs it as one point (one HTTP write per message, no batching, auto-ack);
- **ingest**: the real service, started as a subprocess with the CLI.

Publishers are separate processes (``bench/ingest_publisher.py``: raw-socket MQTT 3.1.1, QoS 1,
PUBACKs counted, fixed total rate) so the Python ingest does not share its interpreter with them. Messages are
the gateway's normalised payloads from ``--devices`` devices (split over the kinds). Zero loss is
checked by counting points in InfluxDB (must equal the number published, no more, no less).

Usage: .venv/bin/python bench/ingest_throughput.py [--rate 25000] [--duration 60]
       [--devices 10000] [--baseline-messages 3000] [--publishers 2] [--persistence]
       [--mqtt wire|paho311|paho5]
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
import orjson
from tqdm import tqdm

from devtools import stack
from kotacerdas import contract
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.lineprotocol import format_line
from kotacerdas.settings import InfluxSettings, load_settings

from benchutil import pipes, wait_ready  # bench helper, same folder (python bench/ingest_throughput.py)

CAT = load_catalogue()
HERE = Path(__file__).resolve().parent


def publish(port: int, root: str, n: int, devices: int, t0_ms: int, rate: float, publishers: int,
            started: dict | None = None) -> dict:
    """n messages from `publishers` processes (bench/ingest_publisher.py), `rate` msg/s in total.

    Message building happens before the clock starts; returns offered rate and PUBACK count."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "ingest_publisher.py"), "--port", str(port), "--root", root,
             "--start", str(p), "--step", str(publishers), "--count", str(n), "--devices", str(devices),
             "--rate", str(rate / publishers), "--t0", str(t0_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for p in range(publishers)
    ]
    for pr in procs:
        if pipes(pr)[1].readline().strip() != "ready":
            raise RuntimeError("publisher failed to start")
    t0 = time.monotonic()
    if started is not None:
        started["t"] = t0
    for pr in procs:
        pipes(pr)[0].write("go\n")
        pipes(pr)[0].flush()
    results = [json.loads(pipes(pr)[1].readline()) for pr in procs]
    for pr in procs:
        pr.wait(30)
    sent = sum(r["sent"] for r in results)
    acked = sum(r["acked"] for r in results)
    return {"sent": sent, "acked": acked, "rate": sent / (time.monotonic() - t0),
            "cpu_s": sum(r["cpu_s"] for r in results)}


def count_points(ic: InfluxClient) -> int:
    meas = ",".join(f'"{k.measurement}"' for k in CAT)
    return sum(int(s.values[0][1]) for s in ic.series(f'SELECT count("seq") FROM {meas}'))


# ---------------------------------------------------------------- naive baseline (a child process)


def naive_worker(port: int, root: str, url: str, db: str, client_id: str, ready_file: str) -> None:
    """One point per message, one HTTP write per point, ack when the callback returns."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    http = httpx.Client(base_url=url, timeout=10)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)

    def on_message(client, userdata, msg):  # noqa: ANN001
        d = orjson.loads(msg.payload)
        kind = CAT[d["kind"]]
        fields = {k: float(v) for k, v in d["fields"].items()}
        fields.update(battery=float(d["bat"]), seq=d["seq"], fw=d["fw"], rssi=d["rssi"], gw_lag_ms=d["rx"] - d["ts"])
        tags = {"device": d["device"], "city": d["city"], "district": d["district"], "kind": d["kind"]}
        line = format_line(kind.measurement, tags, fields, d["ts"])
        if line is None:  # nothing storable (cannot happen for the publisher's values)
            return
        http.post("/write", params={"db": db, "precision": "ms"}, content=line.encode()).raise_for_status()

    def on_connect(client, userdata, flags, rc, props=None):  # noqa: ANN001
        client.subscribe(contract.normalized_subscription(root), qos=1)

    c.on_message = on_message
    c.on_connect = on_connect
    def on_subscribe(*a: object) -> None:
        Path(ready_file).write_text("ready")

    c.on_subscribe = on_subscribe
    c.connect("127.0.0.1", port)
    c.loop_forever()


# ---------------------------------------------------------------- runs


def wait_count(ic: InfluxClient, n: int, timeout_s: float, poll_s: float = 0.5) -> tuple[int, float]:
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        got = count_points(ic)
        if got >= n:
            return got, time.monotonic()
        time.sleep(poll_s)
    return got, time.monotonic()


def run_baseline(args, port: int, url: str, t0_ms: int) -> dict:
    db = f"bench_naive_{uuid.uuid4().hex[:8]}"
    root = f"bn{uuid.uuid4().hex[:8]}"
    ic = InfluxClient(InfluxSettings(url=url, database=db))
    ic.create_database()
    ready = Path(tempfile.mkstemp()[1])
    ready.unlink()
    worker = subprocess.Popen([sys.executable, __file__, "_naive", str(port), root, url, db, f"naive-{root}", str(ready)])
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        n = args.baseline_messages
        started: dict = {}
        pub = publish(port, root, n, args.devices, t0_ms, rate=args.rate, publishers=1, started=started)
        t0 = started["t"]
        assert pub["acked"] == n, pub
        got, t1 = wait_count(ic, n, 600, 0.2)
        return {"messages": n, "stored": got, "seconds": t1 - t0, "rate": n / (t1 - t0)}
    finally:
        worker.terminate()
        worker.wait(10)
        if not args.keep:
            ic.drop_database(db)
        ic.close()


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (and its reaped children are not counted)."""
    if not pid:
        return 0.0
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def run_ingest(args, port: int, url: str, t0_ms: int, workdir: Path, pids: dict[str, int | None]) -> dict:
    db = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    root = f"bi{uuid.uuid4().hex[:8]}"
    ic = InfluxClient(InfluxSettings(url=url, database=db))
    http_port = stack.free_port()
    env = dict(os.environ, KC_MQTT__HOST="127.0.0.1", KC_MQTT__PORT=str(port), KC_MQTT__TOPIC_ROOT=root,
               KC_INFLUX__URL=url, KC_INFLUX__DATABASE=db, KC_INGEST__SPOOL_PATH=str(workdir / "spool"),
               KC_INGEST__CLIENT_ID=f"bench-{root}", KC_INGEST__HTTP_PORT=str(http_port),
               KC_LOG_LEVEL="WARNING", KC_INGEST__MQTT_V5="true" if args.mqtt == "paho5" else "false",
               KC_INGEST__MQTT_CLIENT="wire" if args.mqtt == "wire" else "paho")
    log = open(workdir / "ingest.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kotacerdas", "ingest", "run"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    try:
        wait_ready(http_port, proc, workdir / "ingest.log", timeout_s=30)
        n = int(args.rate * args.duration)
        samples: list[tuple[float, float, int]] = []  # (t, written, rss KiB)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    text = httpx.get(metrics_url, timeout=2).text
                    rss = int(open(f"/proc/{proc.pid}/status").read().split("VmRSS:")[1].split()[0])
                    samples.append((time.monotonic(), _metric(text, "kc_ingest_written_total"), rss))
                except (httpx.HTTPError, OSError, IndexError):
                    pass
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        pids = dict(pids, ingest=proc.pid)
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        t0 = time.monotonic()
        pub_thread_result: dict = {}
        pub = threading.Thread(target=lambda: pub_thread_result.update(
            publish(port, root, n, args.devices, t0_ms, rate=args.rate, publishers=args.publishers,
                    started=started)), daemon=True)
        started: dict = {}
        pub.start()
        with tqdm(total=n, desc="ingest written", unit="msg", file=sys.stderr) as bar:
            while True:
                time.sleep(1)
                w = samples[-1][1] if samples else 0
                bar.n = int(w)
                bar.refresh()
                if w >= n or time.monotonic() - t0 > args.duration * 10 + 120:
                    break
        pub.join(120)
        got, t1 = wait_count(ic, n, 120)
        t0 = started.get("t", t0)  # the clock starts when the publishers start sending
        cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in pids.items()}
        cpu["publishers"] = pub_thread_result.get("cpu_s", 0.0)
        stop.set()
        sampler.join(5)
        extra_wait = 1.0
        time.sleep(extra_wait)
        final = count_points(ic)
        if final != n:  # say where the difference is: ingest's own counters and each measurement
            try:
                text = httpx.get(metrics_url, timeout=5).text
                print("ingest counters: " + ", ".join(
                    f"{k} {_metric(text, f'kc_ingest_{k}_total'):.0f}" for k in ("received", "written", "spooled", "replayed")
                ) + "; " + "; ".join(ln for ln in text.splitlines() if ln.startswith("kc_ingest_deadlettered_total{")),
                    file=sys.stderr)
            except httpx.HTTPError as exc:
                print(f"ingest not answering at the end ({exc}); exit code {proc.poll()}", file=sys.stderr)
            meas = {k.measurement for k in CAT}
            print("stored per measurement: " + ", ".join(
                f"{m} {sum(int(x.values[0][1]) for x in ic.series(f'SELECT count(seq) FROM {m}'))}" for m in sorted(meas)),
                file=sys.stderr)
        # best and worst full 60 s (or --window) windows of the written counter
        win = args.window
        rates = []
        # only while there was work: from the first point written until the last message
        samples = [x for x in samples if 0 < x[1]]
        samples = [x for i, x in enumerate(samples) if i == 0 or samples[i - 1][1] < n]
        for i, (ta, wa, _) in enumerate(samples):
            for tb, wb, _ in samples[i + 1:]:
                if tb - ta >= win:
                    rates.append((wb - wa) / (tb - ta))
                    break
        return {
            "messages": n, "stored": final, "seconds": t1 - t0, "rate": n / (t1 - t0),
            "publish_rate": pub_thread_result.get("rate", 0.0), "acked": pub_thread_result.get("acked", 0),
            "window_s": win, "window_rate_min": min(rates) if rates else None,
            "window_rate_max": max(rates) if rates else None,
            "max_rss_mib": max((s[2] for s in samples), default=0) / 1024,
            "cpu_us_per_msg": {k: v / n * 1e6 for k, v in cpu.items()},
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if proc.returncode not in (0, None):
            print(f"ingest exited with {proc.returncode}", file=sys.stderr)
        if args.keep_log:
            shutil.copy(workdir / "ingest.log", args.keep_log)
        warnings = [ln for ln in (workdir / "ingest.log").read_text().splitlines() if '"level": "warning"' in ln
                    or '"level": "error"' in ln]
        if warnings:
            print(f"ingest logged {len(warnings)} warnings/errors, first and last:", file=sys.stderr)
            for warning in warnings[:3] + warnings[3:][-3:]:
                print("  " + warning[:400], file=sys.stderr)
        if not args.keep:
            ic.drop_database(db)
        ic.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_naive":
        naive_worker(int(argv[1]), argv[2], argv[3], argv[4], argv[5], argv[6])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=25000, help="total publish rate, msg/s")
    ap.add_argument("--duration", type=float, default=60, help="seconds of publishing at --rate")
    ap.add_argument("--window", type=float, default=60, help="window for the sustained rate, s")
    ap.add_argument("--devices", type=int, default=10000, help="devices in all (split over the kinds)")
    ap.add_argument("--baseline-messages", type=int, default=3000)
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--persistence", action="store_true", help="broker persistence on (autosave every 5 s)")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    ap.add_argument("--keep-log", type=Path, help="copy the ingest service's log here")
    ap.add_argument("--mqtt", choices=("wire", "paho311", "paho5"), default="wire",
                    help="ingest's MQTT client: its own 3.1.1 consumer (default), paho 3.1.1, paho MQTT 5")
    ap.add_argument("--shared-influx", action="store_true",
                    help="use the local stack's InfluxDB (default: a private one, so other writers "
                         "neither slow the run nor blur its CPU accounting)")
    args = ap.parse_args(argv)

    settings = load_settings()
    workdir = Path(tempfile.mkdtemp(prefix="kc-bench-ingest-"))
    # private broker: a backlog of up to 1M messages stays off the team's broker
    broker = stack.MosquittoProcess(workdir / "mosquitto", stack.free_port(), persistence=args.persistence)
    broker.start()
    if args.shared_influx:
        stack.up(settings)
        url = settings.influx.url
        influxd = stack.InfluxProcess(Path(settings.state_dir) / "stack" / "influxdb", 0)
    else:
        influxd = stack.InfluxProcess(workdir / "influxdb", stack.free_port(), rpc_port=stack.free_port())
        influxd.start()
        url = influxd.url
    t0_ms = int(time.time() * 1000) - 6 * 86_400_000  # inside the 7-day device clock window and raw RP
    try:
        print("baseline (naive per-message writes) ...", file=sys.stderr)
        base = run_baseline(args, broker.port, url, t0_ms)
        print(f"baseline: {base}", file=sys.stderr)
        print("ingest service ...", file=sys.stderr)
        ing = run_ingest(args, broker.port, url, t0_ms, workdir, {"mosquitto": broker.pid(), "influxd": influxd.pid()})
    finally:
        broker.stop()
        if not args.shared_influx:
            influxd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = base["stored"] == base["messages"] and ing["stored"] == ing["messages"] == ing["acked"]
    print()
    print(f"cpu: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; ingest MQTT client "
          f"{args.mqtt}; {args.devices:,} devices")
    print(f"baseline  {base['messages']:>9,} msgs  stored {base['stored']:>9,}  {base['rate']:>9,.0f} msg/s")
    print(f"ingest    {ing['messages']:>9,} msgs  stored {ing['stored']:>9,}  {ing['rate']:>9,.0f} msg/s end to end "
          f"(publishers offered {ing['publish_rate']:,.0f} msg/s)")
    if ing["window_rate_min"] is not None:
        print(f"ingest sustained over {ing['window_s']:.0f} s windows: min {ing['window_rate_min']:,.0f}, "
              f"max {ing['window_rate_max']:,.0f} msg/s; ingest max RSS {ing['max_rss_mib']:.0f} MiB")
    else:
        print(f"ingest: run shorter than one {ing['window_s']:.0f} s window; max RSS {ing['max_rss_mib']:.0f} MiB")
    cpu = ing["cpu_us_per_msg"]
    print("CPU per message (us): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()) +
          f"; together {sum(cpu.values()):.0f} us, i.e. at most "
          f"{2e6 / sum(cpu.values()):,.0f} msg/s on 2 idle cores")
    print(f"ratio ingest / baseline: {ing['rate'] / base['rate']:.1f}x")
    print(f"zero loss, no duplicates: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
