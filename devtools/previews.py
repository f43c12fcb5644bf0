"""``kotacerdas previews``: dashboard PNGs from a real, short pipeline run.

simulators -> MQTT -> gateway -> ingest -> InfluxDB, then the analytics passes the live
service would have made over the simulated day (``analytics run --once --replay``), then
``dashboards previews``: every panel's own InfluxQL against what was stored, drawn with
matplotlib. Nothing is synthesised: the indices are analytics' ISPU/AQI with the limits of
kotacerdas/standards.py, the counters are the services' own.

Like the demo it is a composition root: each part runs as its own ``kotacerdas`` process
and only MQTT, HTTP and InfluxDB connect them. It uses its own database, topic root and
free ports, so it can run beside the demo and the tests on the shared stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from kotacerdas.catalogue import load_catalogue
from kotacerdas.measurements import KC_PIPELINE
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import Settings, load_settings
from devtools.stack import free_port, up

from devtools.demo import Service, console, _run

DEFAULT_DB = "kotacerdas_previews"


def _stored(influx: InfluxClient) -> dict[str, int]:
    return {k.name: int(influx.scalar(f'SELECT count("seq") FROM "{k.measurement}"') or 0) for k in load_catalogue()}


def _stats_points(influx: InfluxClient) -> list[int]:
    return [int(s.values[0][1]) for s in influx.series(f'SELECT count("received") FROM "{KC_PIPELINE.name}" GROUP BY "service"')]


def run_pipeline(settings: Settings, scenario: str, database: str, rundir: Path, *, replay_s: float,
                 every_s: float, timeout_s: float = 300.0) -> tuple[dict[str, str], Path]:
    """Run the pipeline on ``scenario`` into ``database``; returns the environment the parts ran
    with (for the previews step) and the device list (station coordinates for the maps)."""
    up(settings)
    rundir.mkdir(parents=True, exist_ok=True)
    root = f"kcprev-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update({
        "KC_MQTT__HOST": settings.mqtt.host, "KC_MQTT__PORT": str(settings.mqtt.port), "KC_MQTT__TOPIC_ROOT": root,
        "KC_INFLUX__URL": settings.influx.url, "KC_INFLUX__DATABASE": database, "KC_STATE_DIR": str(rundir),
        "KC_GATEWAY__REGISTRY_PATH": str(rundir / "gateway/registry.sqlite"),
        "KC_GATEWAY__QUEUE_PATH": str(rundir / "gateway/queue.sqlite"),
        "KC_INGEST__SPOOL_PATH": str(rundir / "ingest/spool"), "KC_INGEST__CLIENT_ID": f"kc-ingest-{root}",
        # free ports, never the defaults: the demo and CI hold those on the shared machine
        "KC_GATEWAY__HTTP_PORT": str(free_port()), "KC_INGEST__HTTP_PORT": str(free_port()),
        "KC_ANALYTICS__HTTP_PORT": str(free_port()), "KC_STATIONS_FILE": str(rundir / "devices.json"),
    })
    devices = rundir / "devices.json"
    with InfluxClient(settings.influx.model_copy(update={"database": database})) as influx:
        influx.drop_database(database)
        influx.create_database()
        _run(["simulate", "devices", scenario, "-o", str(devices)], env, "export the scenario's devices")
        _run(["gateway", "registry", "import", str(devices)], env, "register the devices")
        services: list[Service] = []
        try:
            for name, argv, port_var in (("gateway", ["gateway", "run"], "KC_GATEWAY__HTTP_PORT"),
                                         ("ingest", ["ingest", "run"], "KC_INGEST__HTTP_PORT")):
                s = Service(name, argv, env, rundir, f"http://127.0.0.1:{env[port_var]}/readyz")
                services.append(s)
                s.wait_healthy()
            summary = rundir / "simulator-summary.json"
            _run(["simulate", "run", scenario, "--summary", str(summary), "--no-progress"], env,
                 f"simulate {scenario!r} through the gateway")
            good = {k: int(v) for k, v in json.loads(summary.read_text()).get("good_by_kind", {}).items()}
            deadline = time.monotonic() + timeout_s
            # every accepted reading queryable, and two stats points of every service writing them
            # (the rate panels are derivatives: one point draws nothing)
            while not (all(_stored(influx).get(k, 0) >= n for k, n in good.items())
                       and (pts := _stats_points(influx)) and min(pts) >= 2):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pipeline did not drain in {timeout_s:.0f} s: stored {_stored(influx)} of {good}")
                time.sleep(0.5)
            console.log(f"stored {_stored(influx)} (simulator's well-formed: {good})")
        finally:
            for s in reversed(services):
                s.stop()
    _run(["analytics", "run", "--once", "--replay", str(replay_s), "--every", str(every_s)], env,
         "analytics passes over the simulated day (ISPU/AQI, water compliance, bin forecasts, QC, alerts)")
    return env, devices


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas previews", description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="day-in-a-minute", help="simulator scenario (default: day-in-a-minute)")
    ap.add_argument("--db", default=DEFAULT_DB, help=f"InfluxDB database to (re)create (default: {DEFAULT_DB})")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--replay", type=float, default=86400.0, metavar="S", help="analytics history to replay (s)")
    ap.add_argument("--every", type=float, default=3600.0, metavar="S", help="seconds between replayed passes")
    ap.add_argument("--timeout", type=float, default=300.0, help="max seconds to wait for the pipeline to drain")
    args = ap.parse_args(argv)
    settings = load_settings()
    rundir = (Path(settings.state_dir) / "previews" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    try:
        env, devices = run_pipeline(settings, args.scenario, args.db, rundir, replay_s=args.replay,
                                    every_s=args.every, timeout_s=args.timeout)
    except RuntimeError as exc:
        console.print(f"[red]previews failed:[/] {exc} (logs in {rundir})")
        return 1
    out = _run(["dashboards", "previews", "--out", str(args.out.resolve()), "--devices", str(devices)], env,
               "render every dashboard's panels from InfluxDB", capture=True)
    sys.stdout.write(out)
    return 0
