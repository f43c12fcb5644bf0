"""``kotacerdas ingest run|setup|spool``."""

from __future__ import annotations

import argparse
import json
import logging

from kotacerdas.catalogue import load_catalogue
from kotacerdas.influx import InfluxClient
from kotacerdas.observability import setup_logging
from kotacerdas.runtime import HealthServer, stop_on_signals
from kotacerdas.settings import load_settings

log = logging.getLogger("ingest")


def _run(args: argparse.Namespace) -> int:
    from ingest.service import IngestService

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    source = None
    if args.source == "jetstream":  # the clustered backbone (docs/scale.md) instead of Mosquitto
        from ingest.jetstream_source import JetStreamSource

        source = JetStreamSource(settings)
    svc = IngestService(settings, source=source)
    health = HealthServer(settings.ingest.http_host, settings.ingest.http_port, svc.registry, ready=svc.ready)
    done = stop_on_signals()
    health.start()
    svc.start()
    log.info(
        "ingest running",
        extra={"http_port": health.port, "subscription": svc.sub_norm, "database": settings.influx.database,
               "spool": str(settings.ingest.spool_path)},
    )
    while not done.wait(1.0):
        if svc.stopped:  # the writer died: exit non-zero so a supervisor restarts us
            log.error("writer stopped unexpectedly")
            health.stop()
            return 1
    svc.stop()
    health.stop()
    log.info("stopped")
    return 0


def _setup(args: argparse.Namespace) -> int:
    from ingest import schema

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    with InfluxClient(settings.influx) as c:
        names = schema.setup(c, settings, load_catalogue())
    print(json.dumps({"database": settings.influx.database, "continuous_queries": names}))
    return 0


def _spool(args: argparse.Namespace) -> int:
    from ingest.spool import Spool

    settings = load_settings()
    sp = Spool(settings.ingest.spool_path, settings.ingest.spool_max_bytes)
    print(json.dumps({"path": str(sp.path), "batches": len(sp), "bytes": sp.nbytes}))
    return 0


def _jetstream(args: argparse.Namespace) -> int:
    from ingest import jetstream

    return jetstream.main(load_settings())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kotacerdas ingest", description="stream normalised telemetry into InfluxDB")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the ingest service (SIGTERM to stop)")
    run.add_argument("--source", choices=["mqtt", "jetstream"], default="mqtt",
                     help="mqtt: Mosquitto (default); jetstream: the ingest group on the NATS backbone")
    run.set_defaults(fn=_run)
    sub.add_parser("setup", help="create database, retention policies and continuous queries").set_defaults(fn=_setup)
    sub.add_parser("jetstream", help="run one worker of the ingest group on the NATS backbone (docs/scale.md)"
                   ).set_defaults(fn=_jetstream)
    sub.add_parser("spool", help="show what waits in the on-disk spool").set_defaults(fn=_spool)
    args = p.parse_args(argv)
    return int(args.fn(args))
