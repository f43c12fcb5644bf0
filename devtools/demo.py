"""``kotacerdas demo``: the whole pipeline, for real, for a bounded time.

simulators -> MQTT -> gateway -> MQTT -> ingest -> InfluxDB -> analytics, with the
gateway's registry API and the open-data API up, then a summary that checks the
counts: every well-formed message sent is accepted and stored exactly once, and
every deliberately bad one is rejected with its reason.

The demo is a composition root: it runs each part as its own process through the
``kotacerdas`` CLI (as an operator would) and talks to them only over MQTT, HTTP and
InfluxDB, so it imports no part's code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from kotacerdas import contract
from kotacerdas import measurements as M
from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings, load_settings
from devtools.stack import free_port, port_open, up

console = Console(stderr=True)


@dataclass
class Observer:
    """Counts what the platform says on MQTT: accepted (normalised) and dead letters."""

    accepted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    alerts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client, userdata, msg) -> None:  # noqa: ANN001 - paho callback
        parts = msg.topic.split("/")
        with self.lock:
            if contract.CH_NORM in parts:
                # .../norm/{city}/{kind}/{device}, or .../_batch carrying many (gateway.forward_batch)
                self.accepted[parts[-2]] += (contract.normalized_batch_count(msg.payload)
                                             if contract.is_normalized_batch_topic(msg.topic) else 1)
            elif contract.CH_DEADLETTER in parts:
                self.rejected[(parts[-2], parts[-1])] += 1  # .../deadletter/{stage}/{reason}
            elif contract.CH_ALERTS in parts:
                self.alerts[parts[-2]] += 1


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path, health_url: str | None):
        self.name, self.health_url = name, health_url
        self.log = open(logdir / f"{name}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kotacerdas", *argv], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            if self.health_url is None:
                return
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy at {self.health_url} after {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _port(preferred: int) -> int:
    return preferred if not port_open("127.0.0.1", preferred) else free_port()


def _run(argv: list[str], env: dict[str, str], what: str, capture: bool = False) -> str:
    with console.status(f"[bold]{what}[/] ..."):
        r = subprocess.run([sys.executable, "-m", "kotacerdas", *argv], env=env, text=True,
                           capture_output=capture, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"`kotacerdas {' '.join(argv)}` failed ({r.returncode}): {(r.stderr or '')[-2000:]}")
    console.log(f"[green]done[/] {what}")
    return r.stdout or ""


def _counts(influx: InfluxClient) -> dict[str, int]:
    out = {}
    for kind in load_catalogue():
        # count(seq): every stored point carries seq, whichever sensor fields it has
        out[kind.name] = int(influx.scalar(f'SELECT count("seq") FROM "{kind.measurement}"') or 0)
    return out


def run_demo(settings: Settings, scenario: str, serve: bool, timeout_s: float) -> int:
    t0 = time.monotonic()
    up(settings)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    rundir = (Path(settings.state_dir) / "demo" / run_id).resolve()
    rundir.mkdir(parents=True)
    root = f"kcdemo-{uuid.uuid4().hex[:6]}"
    database = "kotacerdas_demo"
    ports = {"gateway": _port(settings.gateway.http_port), "ingest": _port(settings.ingest.http_port),
             "analytics": _port(settings.analytics.http_port), "api": _port(settings.api.port)}
    env = dict(os.environ)
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port),
        "KC_MQTT__TOPIC_ROOT": root, "KC_INFLUX__URL": settings.influx.url, "KC_INFLUX__DATABASE": database,
        "KC_STATE_DIR": str(rundir), "KC_GATEWAY__REGISTRY_PATH": str(rundir / "gateway/registry.sqlite"),
        "KC_GATEWAY__QUEUE_PATH": str(rundir / "gateway/queue.sqlite"),
        "KC_INGEST__SPOOL_PATH": str(rundir / "ingest/spool"), "KC_INGEST__CLIENT_ID": f"kc-ingest-{run_id}",
        "KC_GATEWAY__HTTP_PORT": str(ports["gateway"]), "KC_INGEST__HTTP_PORT": str(ports["ingest"]),
        "KC_ANALYTICS__HTTP_PORT": str(ports["analytics"]), "KC_API__PORT": str(ports["api"]),
        # the open-data API places stations with the device list the gateway imports
        "KC_STATIONS_FILE": str(rundir / "devices.json"),
    })
    console.rule(f"[bold]Kota Cerdas demo[/] run {run_id}: scenario {scenario!r}, topic root {root!r}, database {database!r}")
    with InfluxClient(settings.influx.model_copy(update={"database": database})) as influx:
        influx.drop_database(database)
        influx.create_database()

        devices = rundir / "devices.json"
        _run(["simulate", "devices", scenario, "-o", str(devices)], env, "export the scenario's devices")
        _run(["gateway", "registry", "import", str(devices)], env, f"register {len(json.loads(devices.read_text()))} devices in the gateway")

        obs = Observer()
        ms = settings.mqtt.model_copy(update={"topic_root": root})
        watcher = make_client(ms, f"kc-demo-observer-{run_id}")
        watcher.on_message = obs.on_message
        connect(watcher, ms)
        watcher.subscribe([(contract.normalized_subscription(root), 1),
                           (contract.deadletter_subscription(root), 1), (contract.alert_subscription(root), 1)])

        services: list[Service] = []
        try:
            # all three start at once (each spends its first seconds importing); nothing flows
            # until the simulator runs, after every one of them is ready
            for name, argv, health in [
                ("gateway", ["gateway", "run"], f"http://127.0.0.1:{ports['gateway']}/readyz"),
                ("ingest", ["ingest", "run"], f"http://127.0.0.1:{ports['ingest']}/readyz"),
                ("api", ["dashboards", "api"], f"http://127.0.0.1:{ports['api']}/readyz"),
            ]:
                services.append(Service(name, argv, env, rundir, health))
            for s in services:
                with console.status(f"[bold]starting {s.name}[/] ..."):
                    s.wait_healthy()
                console.log(f"[green]up[/] {s.name} (log {rundir / (s.name + '.log')})")

            summary_file = rundir / "simulator-summary.json"
            console.log("simulating devices (real MQTT, QoS 1) ...")
            r = subprocess.run(
                [sys.executable, "-m", "kotacerdas", "simulate", "run", scenario, "--summary", str(summary_file),
                 "--labels", str(rundir / "labels.jsonl")], env=env, stdin=subprocess.DEVNULL,
            )
            if r.returncode != 0:
                raise RuntimeError(f"simulator failed with {r.returncode}")
            sim = json.loads(summary_file.read_text())
            expected = {k: int(v) for k, v in sim.get("good_by_kind", {}).items()}

            # Wait until every accepted message is queryable (bounded).
            deadline = time.monotonic() + timeout_s
            with console.status("[bold]waiting for the pipeline to drain into InfluxDB[/] ...") as st:
                while True:
                    counts = _counts(influx)
                    with obs.lock:
                        accepted = dict(obs.accepted)
                    st.update(f"stored {sum(counts.values())} of {sum(expected.values())} expected points")
                    if all(counts.get(k, 0) >= n for k, n in expected.items()) and counts == {
                        k: accepted.get(k, 0) for k in counts
                    }:
                        break
                    if time.monotonic() > deadline:
                        console.log("[red]timed out waiting for the pipeline to drain[/]")
                        break
                    time.sleep(0.5)

            _run(["analytics", "run", "--once"], env, "analytics pass (QC, ISPU/AQI, water compliance, bin forecasts, alerts)")
            derived = {}
            for m in (M.QC.name, M.ISPU.name, M.AQI_US.name, M.WATER_COMPLIANCE.name, M.BIN_FORECAST.name,
                      M.ALERTS.name):
                try:
                    derived[m] = int(influx.scalar(f'SELECT count(*) FROM "{m}"') or 0) if m != M.QC.name else int(
                        influx.scalar(f'SELECT count("flag") FROM "{M.QC.name}"') or 0)
                except Exception:  # noqa: BLE001 - count(*) returns one column per field; fall back
                    ss = influx.series(f'SELECT count(*) FROM "{m}"')
                    derived[m] = int(max((v for s in ss for v in s.values[0][1:] if isinstance(v, int)), default=0))
            api_sample = httpx.get(f"http://127.0.0.1:{ports['api']}/openapi.json", timeout=5).status_code
            gw_api = httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz", timeout=5).status_code
            ok = _print_summary(sim, obs, counts, expected, derived, time.monotonic() - t0)
            console.print(f"open-data API: http://127.0.0.1:{ports['api']}/docs (HTTP {api_sample}); "
                          f"gateway registry API: http://127.0.0.1:{ports['gateway']}/docs (HTTP {gw_api}); "
                          f"logs and files: {rundir}")
            if serve:
                console.print("[bold]serving[/]: services stay up; Ctrl-C to stop")
                try:
                    while all(s.proc.poll() is None for s in services):
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            return 0 if ok else 1
        finally:
            for s in reversed(services):
                s.stop()
            watcher.loop_stop()
            watcher.disconnect()


def _print_summary(sim: dict, obs: Observer, counts: dict, expected: dict, derived: dict, elapsed: float) -> bool:
    t = Table(title="Kota Cerdas demo: messages through the pipeline")
    for col in ("kind", "sent", "well-formed sent", "accepted by gateway", "points in InfluxDB", "check"):
        t.add_column(col, justify="right")
    ok = True
    with obs.lock:
        accepted = dict(obs.accepted)
        rejected = dict(obs.rejected)
    for kind in load_catalogue().kind_names:
        good = expected.get(kind, 0)
        row_ok = counts.get(kind, 0) == accepted.get(kind, 0) == good and good > 0
        ok &= row_ok
        t.add_row(kind, str(sim.get("sent_by_kind", {}).get(kind, "?")), str(good), str(accepted.get(kind, 0)),
                  str(counts.get(kind, 0)), "[green]ok[/]" if row_ok else "[red]MISMATCH[/]")
    console.print(t)
    r = Table(title="Rejected, with reasons (dead-letter topic)")
    r.add_column("stage")
    r.add_column("reason")
    r.add_column("messages", justify="right")
    for (stage, reason), n in sorted(rejected.items()):
        r.add_row(stage, reason, str(n))
    r.add_row("", "[bold]total[/]", str(sum(rejected.values())))
    console.print(r)
    injected = sim.get("bad_by_type", {})
    if injected:
        console.print("deliberately bad messages sent by the simulator: "
                      + ", ".join(f"{k}={v}" for k, v in sorted(injected.items()))
                      + f" (total {sum(injected.values())}; rejected total {sum(rejected.values())})")
    d = Table(title="Analytics results written back to InfluxDB")
    d.add_column("measurement")
    d.add_column("points", justify="right")
    for m, n in derived.items():
        d.add_row(m, str(n))
    console.print(d)
    if obs.alerts:
        console.print("alerts published: " + ", ".join(f"{k}={v}" for k, v in sorted(obs.alerts.items())))
    console.print(f"[bold]{'PASS' if ok else 'FAIL'}[/]: every well-formed message stored exactly once"
                  f" = {ok}; elapsed {elapsed:.1f} s")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas demo", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="demo", help="simulator scenario name or path (default: demo)")
    ap.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the services and APIs up after the summary until Ctrl-C "
                         "(default: yes in an interactive terminal, no otherwise)")
    ap.add_argument("--timeout", type=float, default=120.0, help="max seconds to wait for the pipeline to drain")
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        serve = sys.stdin.isatty() if args.serve is None else args.serve
        return run_demo(settings, args.scenario, serve, args.timeout)
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
