"""``kotacerdas dashboards ...``: build/push Grafana dashboards, verify queries, previews, open-data API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kotacerdas.settings import Settings, load_settings

DEFAULT_OUT = Path("deploy/grafana")


def _devices(path: Path | None) -> list[dict]:
    if path is None:
        return []
    doc = json.loads(path.read_text())
    if not isinstance(doc, list):
        raise SystemExit(f"{path}: expected a JSON array of devices (kotacerdas simulate devices)")
    return doc


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.definitions import all_dashboards
    from dashboards.provisioning import datasource, write_bundle
    from dashboards.validate import problems

    boards = all_dashboards()
    bad = {d.uid: problems(d.to_json()) for d in boards}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        for uid, ps in bad.items():
            for p in ps:
                print(f"{uid}: {p}", file=sys.stderr)
        return 1
    ds = datasource(args.influx_url or settings.influx.url, args.database or settings.influx.database)
    devices = _devices(args.devices)
    if not devices:
        print("warning: no --devices given: the map panels will have no station coordinates", file=sys.stderr)
    files = write_bundle(args.out, boards, ds, devices)
    for f in files:
        print(f)
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from kotacerdas.influx import InfluxClient

    from dashboards import verify
    from dashboards.definitions import all_dashboards

    to_ms = int(time.time() * 1000)
    with InfluxClient(settings.influx) as c:
        from_ms = None if args.hours is None else to_ms - int(args.hours * 3600_000)
        results = verify.run(c, all_dashboards(), from_ms=from_ms, to_ms=to_ms)
    problems = [p for r in results for p in r.problems()]
    for p in problems:
        print(p)
    print(f"{len(results)} queries, {len(problems)} problems")
    return 1 if problems else 0


def _push(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.definitions import all_dashboards
    from dashboards.provisioning import datasource
    from dashboards.push import GrafanaError, push

    ds = datasource(args.influx_url or settings.influx.url, args.database or settings.influx.database)
    try:
        report = push(args.url, args.token, all_dashboards(), ds, folder=args.folder)
    except GrafanaError as exc:
        print(f"push failed: {exc}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    return 0


def _previews(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.previews import render_all

    previews = render_all(settings, args.out, hours=args.hours, devices=_devices(args.devices))
    for p in previews:
        print(f"{p.path} ({p.width}x{p.height} px; {len(p.units)} panels drawn"
              + (f", no data: {', '.join(p.empty)}" if p.empty else "") + ")")
        for a, b in p.overlaps:
            print(f"  overlap: {a!r} and {b!r}", file=sys.stderr)
    return 1 if any(p.overlaps for p in previews) else 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.service import serve

    if args.port is not None:
        settings.api.port = args.port
    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas dashboards", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write dashboard JSON + Grafana provisioning files")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT)
    b.add_argument("--influx-url", help="datasource URL as Grafana sees it (default: settings.influx.url)")
    b.add_argument("--database", help="InfluxDB database (default: settings.influx.database)")
    b.add_argument("--devices", type=Path, help="devices.json (kotacerdas simulate devices) for the map gazetteer")
    v = sub.add_parser("verify", help="run every panel query against InfluxDB and check the result shapes")
    v.add_argument("--hours", type=float, help="time range for every dashboard (default: each one's own)")
    p = sub.add_parser("push", help="upload datasource + dashboards through the Grafana HTTP API (idempotent)")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True, help="Grafana service-account token")
    p.add_argument("--folder", default="Kota Cerdas")
    p.add_argument("--influx-url")
    p.add_argument("--database")
    pr = sub.add_parser("previews", help="render PNG previews of each dashboard's panels from InfluxDB data")
    pr.add_argument("--out", type=Path, default=Path("docs/img"))
    pr.add_argument("--hours", type=float, help="time range for every dashboard (default: each one's own)")
    pr.add_argument("--devices", type=Path)
    a = sub.add_parser("api", help="serve the open-data HTTP API")
    a.add_argument("--port", type=int)
    args = ap.parse_args(argv)
    settings = load_settings()
    handler = {"build": _build, "verify": _verify, "push": _push,
               "previews": _previews, "api": _api}[args.command]
    return handler(args, settings)
