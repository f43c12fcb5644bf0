"""``kotacerdas gateway ...``: run the service, manage the registry, provision the broker."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from kotacerdas.observability import setup_logging
from kotacerdas.runtime import HttpServer, stop_on_signals
from kotacerdas.settings import load_settings

log = logging.getLogger("gateway")


def _run(args: argparse.Namespace) -> int:
    from gateway.api import make_app
    from gateway.provision import refresh_broker
    from gateway.service import Gateway

    settings = load_settings()
    if args.auto_register:
        settings.gateway.auto_register = True
    setup_logging(settings.log_level, settings.log_json)
    if settings.gateway.admin_token.get_secret_value() == "change-me":
        log.warning("gateway admin token is the default; set KC_GATEWAY__ADMIN_TOKEN before exposing the API")
    gw = Gateway(settings)
    app = make_app(gw.registry, settings.gateway.admin_token.get_secret_value(), gw,
                   on_change=lambda: refresh_broker(settings, gw.registry.all()))
    refresh_broker(settings, gw.registry.all())
    stop = stop_on_signals()
    try:
        gw.start()
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero rather than a traceback
        log.error("gateway could not start", extra={"error": str(exc)[:300]})
        return 1
    # HTTP comes up only once subscribed: a healthy gateway never misses what is published next
    try:
        http = HttpServer(app, settings.gateway.http_host, settings.gateway.http_port, name="gateway-http").start()
    except (OSError, RuntimeError) as exc:
        log.error("gateway HTTP did not start", extra={"port": settings.gateway.http_port, "error": str(exc)[:200]})
        gw.stop()
        return 1
    log.info("gateway http", extra={"host": settings.gateway.http_host, "port": http.port})
    stop.wait()
    log.info("stopping")
    gw.stop()
    http.stop()
    return 0


def _registry(args: argparse.Namespace) -> int:
    from gateway.provision import refresh_broker
    from gateway.registry import Registry, RegistryError

    settings = load_settings()
    with Registry(settings.gateway.registry_path) as reg:
        try:
            d: Any
            if args.action == "import":
                docs = json.loads(Path(args.file).read_text())
                if not isinstance(docs, list):
                    print("gateway registry import: expected a JSON array of devices", file=sys.stderr)
                    return 2
                n, pws = reg.import_devices(docs)
                if args.credentials_out:
                    Path(args.credentials_out).write_text(json.dumps(pws, indent=1))
                print(f"imported {n} devices into {settings.gateway.registry_path} ({len(pws)} new credentials"
                      + (f" written to {args.credentials_out})" if args.credentials_out else ")"))
            elif args.action == "list":
                devices = [x.public() for x in reg.all()]
                if args.json:
                    print(json.dumps(devices, indent=1))
                else:
                    from rich.console import Console
                    from rich.table import Table

                    t = Table("device", "kind", "city", "district", "department", "status", "installed")
                    for d in devices:
                        t.add_row(d["device"], d["kind"], d["city"], d["district"], d["department"], d["status"],
                                  d["installed"] or "")
                    Console().print(t)
            elif args.action == "register":
                if reg.get(args.device) is not None and not args.update:
                    print(f"gateway registry register: device {args.device!r} exists; --update changes it",
                          file=sys.stderr)
                    return 1
                d, pw = reg.register(args.device, args.kind, args.city, district=args.district, lat=args.lat,
                                     lon=args.lon, department=args.department)
                print(json.dumps({**d.public(), "mqtt_username": d.device, "mqtt_password": pw}, indent=1))
            elif args.action == "config":
                return _config(args, reg)
            elif args.action == "decommission":
                d = reg.decommission(args.device)
                print(f"{d.device}: {d.status}")
            elif args.action == "rotate-credentials":
                d, pw = reg.rotate_credentials(args.device)
                print(json.dumps({"mqtt_username": d.device, "mqtt_password": pw}))
            if args.action != "list" and refresh_broker(settings, reg.all()):
                print(f"broker auth files in {settings.gateway.provision_dir} rewritten and reloaded")
        except (RegistryError, OSError, ValueError) as exc:
            print(f"gateway registry {args.action}: {exc}", file=sys.stderr)
            return 1
    return 0


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise ValueError(f"{what} {item!r} is not KEY=VALUE")
        out[k] = v
    return out


def _config(args: argparse.Namespace, reg: Any) -> int:
    """Show or change one device's config (merged into what it has), checked like the API checks it."""
    from kotacerdas import device_config

    d = reg.get(args.device)
    if d is None:
        print(f"gateway registry config: no device {args.device!r}", file=sys.stderr)
        return 1
    cfg = dict(d.config)
    if args.interval_s is not None:
        cfg["interval_s"] = args.interval_s
    if args.tz_offset_s is not None:
        cfg["tz_offset_s"] = args.tz_offset_s
    th = {k: [float(x) for x in v.split(",")] for k, v in _pairs(args.threshold, "--threshold").items()}
    if th:
        cfg["thresholds"] = {**cfg.get("thresholds", {}), **th}
    cal = {k: float(v) for k, v in _pairs(args.calibration, "--calibration").items()}
    if cal:
        cfg["calibration"] = {**cfg.get("calibration", {}), **cal}
    for key, items in (("tasmota_map", args.tasmota_map), ("esphome_map", args.esphome_map)):
        m = _pairs(items, f"--{key.replace('_', '-')}")
        if m:
            cfg[key] = {**cfg.get(key, {}), **m}
    for key in args.clear or []:
        cfg.pop(key, None)
    try:
        cfg = device_config.validate(cfg, reg.catalogue[d.kind])
    except device_config.ConfigError as exc:
        print(f"gateway registry config: {exc}", file=sys.stderr)
        return 1
    if cfg != d.config:
        reg.set_config(d.device, cfg)
    print(json.dumps({"device": d.device, "config": cfg}, indent=1))
    return 0


def _provision(args: argparse.Namespace) -> int:
    from gateway.provision import provision

    settings = load_settings()
    try:
        out = provision(settings, Path(args.out), tls_port=args.tls_port, port=args.port, with_tls=not args.no_tls,
                        new_ca=args.new_ca)
    except OSError as exc:  # an --out the operator cannot write, a registry that cannot be read
        print(f"gateway provision: {exc}", file=sys.stderr)
        return 1
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def _ledger(args: argparse.Namespace) -> int:
    """Ask the running gateway for its ledger: received = stored + rejected by reason + ignored."""
    import httpx

    settings = load_settings()
    url = args.url or f"http://{settings.gateway.http_host}:{settings.gateway.http_port}"
    try:
        doc = httpx.get(f"{url}/ledger", timeout=5).raise_for_status().json()
    except httpx.HTTPError as exc:
        print(f"gateway ledger: cannot read {url}/ledger: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table("", "messages", title="gateway ledger since start")
        for ch, n in sorted(doc["received"].items()):
            t.add_row(f"received ({ch})", str(n))
        for ch, n in sorted(doc["stored"].items()):
            t.add_row(f"stored ({ch})", str(n))
        for reason, n in sorted(doc["rejected"].items()):
            t.add_row(f"rejected: {reason}", str(n))
        t.add_row("ignored (retained status cleared)", str(doc["ignored"]))
        tot = doc["totals"]
        t.add_row("received = stored + rejected + ignored",
                  f"{tot['received']} = {tot['stored']} + {tot['rejected']} + {tot['ignored']}"
                  + ("" if doc["balanced"] else "  UNBALANCED"))
        Console().print(t)
    return 0 if doc["balanced"] else 3


def _rollout(args: argparse.Namespace) -> int:
    """Start (or resume, same --name) a throttled firmware rollout, or show one's state."""
    from gateway import rollout_service as rs
    from gateway.registry import Registry
    from gateway.rollout import Policy

    settings = load_settings()
    if args.action == "status":
        r = rs.load(rs.state_path(settings, args.name))
        if r is None:
            print(f"gateway rollout status: no rollout {args.name!r}", file=sys.stderr)
            return 1
        print(json.dumps({**r.summary(), "devices": [vars(d) for d in r.devices]}, indent=1))
        return 0 if not r.halted else 3
    setup_logging(settings.log_level, settings.log_json)
    if args.host:
        settings.gateway.rollout_http_host = args.host
    if args.port is not None:
        settings.gateway.rollout_http_port = args.port
    if args.public_url:
        settings.gateway.rollout_public_url = args.public_url
    try:
        release = rs.read_release(Path(args.release))
        path = rs.state_path(settings, args.name or f"{release['kind']}-{release['version']}")
        r = rs.load(path)
        if r is not None and (r.version, r.sha256) != (release["version"], release["sha256"]):
            print(f"gateway rollout: {path} is a rollout of {r.version}; use another --name", file=sys.stderr)
            return 1
        if r is None:
            with Registry(settings.gateway.registry_path) as reg:
                targets = [(d.device, d.kind, d.city) for d in reg.all(include_decommissioned=False)
                           if d.kind == release["kind"] and (not args.city or d.city in args.city)
                           and (not args.device or d.device in args.device)]
            if not targets:
                print(f"gateway rollout: no active {release['kind']} devices match", file=sys.stderr)
                return 1
            policy = Policy.make(len(targets), wave=args.wave, wave_percent=args.wave_percent,
                                 max_failures=args.max_failures, max_failure_percent=args.max_failure_percent,
                                 timeout_s=args.timeout_s)
            r = rs.new_rollout(path.stem, release, targets, policy)
            rs.save(r, path)
    except (rs.ReleaseError, ValueError) as exc:
        print(f"gateway rollout: {exc}", file=sys.stderr)
        return 1
    svc = rs.RolloutService(settings, r, Path(args.release), path)
    stop = stop_on_signals()
    try:
        svc.start()
    except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
        log.error("rollout could not start", extra={"error": str(exc)[:300]})
        svc.stop()
        return 1
    log.info("rollout", extra={"rollout": r.name, "version": r.version, "devices": len(r.devices), "url": r.url,
                               "http_port": svc.http.port if svc.http else None})
    try:
        r = svc.run(stop)
    finally:
        svc.stop()
    print(json.dumps(r.summary()))
    return 3 if r.halted else (0 if r.finished() else 1)


def _jetstream(args: argparse.Namespace) -> int:
    from gateway import jetstream

    return jetstream.main()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kotacerdas gateway", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--auto-register", action="store_true", help="accept and register unknown devices (demo only)")
    run.set_defaults(func=_run)
    sub.add_parser("jetstream", help="run one member of the gateway group on the NATS backbone (docs/scale.md)"
                   ).set_defaults(func=_jetstream)

    reg = sub.add_parser("registry", help="manage the device registry")
    rsub = reg.add_subparsers(dest="action", required=True)
    imp = rsub.add_parser("import", help="import a devices.json (kotacerdas simulate devices)")
    imp.add_argument("file")
    imp.add_argument("--credentials-out", help="write the new devices' MQTT passwords (JSON) here")
    ls = rsub.add_parser("list", help="list devices")
    ls.add_argument("--json", action="store_true")
    r = rsub.add_parser("register", help="register one device and print its MQTT credentials")
    r.add_argument("device")
    r.add_argument("--kind", required=True)
    r.add_argument("--city", required=True)
    r.add_argument("--district", default="unknown")
    r.add_argument("--lat", type=float)
    r.add_argument("--lon", type=float)
    r.add_argument("--department")
    r.add_argument("--update", action="store_true", help="change an existing device (default: refuse)")
    c = rsub.add_parser("config", help="show or change a device's config (merged; the running gateway "
                                       "publishes the device part at its next start, PUT /devices/{id}/config at once)")
    c.add_argument("device")
    c.add_argument("--interval-s", type=float)
    c.add_argument("--threshold", action="append", metavar="FIELD=LO,HI")
    c.add_argument("--calibration", action="append", metavar="KEY=VALUE")
    c.add_argument("--tasmota-map", action="append", metavar="SENSOR.QUANTITY=FIELD",
                   help="e.g. DS18B20-2.Temperature=temperature")
    c.add_argument("--esphome-map", action="append", metavar="OBJECT_ID=FIELD", help="e.g. kolam_ph=ph")
    c.add_argument("--tz-offset-s", type=int, help="UTC offset of the device's local Tasmota time (WITA: 28800)")
    c.add_argument("--clear", action="append", choices=["interval_s", "thresholds", "calibration", "tasmota_map",
                                                         "esphome_map", "tz_offset_s"])
    for name in ("decommission", "rotate-credentials"):
        p = rsub.add_parser(name)
        p.add_argument("device")
    reg.set_defaults(func=_registry)

    led = sub.add_parser("ledger", help="received = stored + rejected by reason, from the running gateway")
    led.add_argument("--url", help="gateway HTTP base URL (default: from settings)")
    led.add_argument("--json", action="store_true")
    led.set_defaults(func=_ledger)

    ro = sub.add_parser("rollout", help="serve a signed firmware release and update devices in waves")
    rosub = ro.add_subparsers(dest="action", required=True)
    st = rosub.add_parser("start", help="start or resume (same --name) a rollout; runs until done or halted "
                                        "(exit 0 done, 3 halted)")
    st.add_argument("--release", required=True, help="release directory (kotacerdas firmware release)")
    st.add_argument("--name", help="rollout name (default KIND-VERSION); its state is kept under state_dir")
    st.add_argument("--city", action="append", help="only devices of this city (repeatable)")
    st.add_argument("--device", action="append", help="only this device (repeatable)")
    w = st.add_mutually_exclusive_group()
    w.add_argument("--wave", type=int, help="devices per wave (default 1)")
    w.add_argument("--wave-percent", type=float, help="devices per wave as a share of all, rounded up")
    f = st.add_mutually_exclusive_group()
    f.add_argument("--max-failures", type=int, help="halt when more devices than this failed (default 0)")
    f.add_argument("--max-failure-percent", type=float, help="... as a share of all devices")
    st.add_argument("--timeout-s", type=float, default=600.0,
                    help="a device without the new version in its birth message this long after the command failed")
    st.add_argument("--host", help="address to serve releases on (default settings.gateway.rollout_http_host)")
    st.add_argument("--port", type=int, help="port (default settings.gateway.rollout_http_port; 0 = any free)")
    st.add_argument("--public-url", help="base URL devices reach this server at (default http://HOST:PORT/)")
    sta = rosub.add_parser("status", help="a rollout's saved state (exit 3 if halted)")
    sta.add_argument("name")
    ro.set_defaults(func=_rollout)

    prov = sub.add_parser("provision", help="write Mosquitto password/ACL files, TLS CA and certificates")
    prov.add_argument("--out", required=True)
    prov.add_argument("--port", type=int, default=None, help="plain listener port (default: settings.mqtt.port)")
    prov.add_argument("--tls-port", type=int, default=8883)
    prov.add_argument("--no-tls", action="store_true")
    prov.add_argument("--new-ca", action="store_true", help="replace an existing CA (devices must get the new one)")
    prov.set_defaults(func=_provision)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
