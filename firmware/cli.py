"""``kotacerdas firmware ...``: build the MicroPython bundle, deploy it, run virtual devices."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kotacerdas.observability import setup_logging
from kotacerdas.settings import load_settings


def _backoff_cap(text: str) -> float:
    """Seconds, within the firmware's bounds for config backoff_cap_ms (kc_config)."""
    s = float(text)
    if not 1 <= s <= 3600:
        raise argparse.ArgumentTypeError("--backoff-cap must be 1..3600 s")
    return s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kotacerdas firmware", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="generate kc_schema.py and compile the .mpy bundle per kind")
    b.add_argument("--kind", action="append", help="only this kind (repeatable)")
    b.add_argument("--out", type=Path, help="bundle root (default firmware/build)")

    sub.add_parser("schema", help="regenerate firmware/device/kc_schema.py from the catalogue")
    sub.add_parser("typecheck", help="mypy the device sources against micropython-esp32-stubs")
    r = sub.add_parser("ram", help="peak RAM of the main loop on real MicroPython (Node), per kind")
    r.add_argument("--kind", action="append")
    r.add_argument("--readings", type=int, default=10)

    d = sub.add_parser("deploy", help="copy a kind's bundle and a device config.json to a board with mpremote")
    d.add_argument("--kind", required=True)
    d.add_argument("--device", required=True)
    d.add_argument("--city")
    d.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0 (default: mpremote auto-detects)")
    d.add_argument("--wifi-ssid", default="")
    d.add_argument("--wifi-password-file", type=Path, help="file holding the Wi-Fi password (kept off argv)")
    d.add_argument("--broker-host")
    d.add_argument("--broker-port", type=int)
    d.add_argument("--mqtt-user")
    d.add_argument("--mqtt-password-file", type=Path)
    d.add_argument("--tls", action="store_true")
    d.add_argument("--tls-ca", type=Path, help="the broker's CA certificate (PEM or DER); required with --tls")
    d.add_argument("--skip-version-check", action="store_true",
                   help="flash even if the board's MicroPython is not the pinned version")
    d.add_argument("--extra", type=Path, help="JSON file merged into config.json (pins, calibration, ...)")
    d.add_argument("--config-out", type=Path, help="where to write config.json (default build/configs/DEVICE.json)")
    d.add_argument("--no-build", action="store_true", help="use the existing bundle")
    d.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")

    k = sub.add_parser("keygen", help="new release signing key (PEM, 0600); prints update_pubkey for config.json")
    k.add_argument("--out", type=Path, required=True)
    rl = sub.add_parser("release", help="build a kind's bundle and write a signed release directory for "
                                        "`kotacerdas gateway rollout start --release`")
    rl.add_argument("--kind", required=True)
    rl.add_argument("--version", required=True, help="firmware version the devices will report (fw)")
    rl.add_argument("--key", type=Path, required=True, help="release signing key (keygen)")
    rl.add_argument("--out", type=Path, help="release directory (default firmware/build/releases/KIND/VERSION)")
    rl.add_argument("--image", type=Path, help="release this full MicroPython image (.bin, built with "
                                               "firmware/manifest.py) instead of the .mpy bundle")

    v = sub.add_parser("virtual", help="run the real firmware loop under CPython with fake hardware")
    v.add_argument("--kind", required=True)
    v.add_argument("--device", required=True)
    v.add_argument("--city")
    v.add_argument("--interval", type=float, help="seconds between readings (default: catalogue)")
    v.add_argument("--duration", type=float, help="stop after this many seconds")
    v.add_argument("--count", type=int, help="stop after this many readings are taken and delivered")
    v.add_argument("--state-dir", type=Path, help="flash/RTC state (default STATE_DIR/firmware/KIND-DEVICE)")
    v.add_argument("--seed", type=int, default=1)
    v.add_argument("--backoff-cap", type=_backoff_cap,
                   help="seconds: ceiling of the reconnect backoff (config backoff_cap_ms; default 60)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    if args.cmd == "schema":
        from firmware import schema_gen

        print(schema_gen.write())
        return 0
    if args.cmd == "typecheck":
        from firmware import typecheck

        rc, out = typecheck.run()
        print(out.strip())
        return rc
    if args.cmd == "ram":
        import tempfile

        from firmware import build, mp_ram, mpnode

        why = mpnode.available()
        if why:
            print(f"ram: {why}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            res = build.build(args.kind, Path(tmp), write_schema=False)
            for kind in res:
                r = mp_ram.measure(kind, Path(tmp) / kind, args.readings)
                print(f"{kind:10s} peak live {r['peak_live']:7d} B (fakes {r['fakes']} B)  "
                      f"peak incl. one step's garbage {r['peak_alloc']:7d} B  after init {r['after_init']:7d} B")
        return 0
    if args.cmd == "build":
        from firmware import build

        try:
            res = build.build(args.kind, args.out or build.BUILD_DIR)
        except (RuntimeError, ValueError) as exc:
            print(f"build failed: {exc}", file=sys.stderr)
            return 1
        for kind, files in res.items():
            mpy = sum(f.size for f in files if f.path.suffix == ".mpy")
            total = sum(f.size for f in files)
            print(f"{kind:10s} {len(files):3d} files  {mpy:7d} B .mpy  {total:7d} B total  -> {files[0].path.parent}")
        return 0
    if args.cmd == "deploy":
        from firmware import build, deploy

        wifi_pw = args.wifi_password_file.read_text().strip() if args.wifi_password_file else ""
        mqtt_pw = args.mqtt_password_file.read_text().strip() if args.mqtt_password_file else None
        extra = json.loads(args.extra.read_text()) if args.extra else None
        try:
            doc = deploy.device_config(settings, args.kind, args.device, args.city or settings.city, args.wifi_ssid,
                                       wifi_pw, args.broker_host, args.broker_port, args.mqtt_user, mqtt_pw,
                                       args.tls, extra, tls_ca=args.tls_ca is not None)
        except ValueError as exc:
            print(f"deploy: invalid device config: {exc}", file=sys.stderr)
            return 2
        if not args.no_build:
            build.build([args.kind])
        bundle = build.BUILD_DIR / args.kind
        if not bundle.is_dir():
            print(f"deploy: no bundle at {bundle}; run `kotacerdas firmware build`", file=sys.stderr)
            return 2
        cfg_path = deploy.write_config(doc, args.config_out or build.BUILD_DIR / "configs" / f"{args.device}.json")
        # the one secret meant to be read off the box: the installer's way into the set-up AP
        print(f"label: set-up Wi-Fi kc-setup-{args.device[:20]} password {doc['ap_password']}")
        ca_der = deploy.ca_to_der(args.tls_ca, cfg_path.with_suffix(".ca.der")) if args.tls_ca else None
        return deploy.run(deploy.mpremote_commands(bundle, cfg_path, args.port, ca_der=ca_der,
                                                   check_version=not args.skip_version_check), args.dry_run)
    if args.cmd == "keygen":
        from firmware import release

        if args.out.exists():
            print(f"keygen: {args.out} exists; refusing to replace a release key", file=sys.stderr)
            return 1
        print(json.dumps({"key": str(args.out), "update_pubkey": release.generate_key(args.out)}))
        return 0
    if args.cmd == "release":
        import tempfile

        from firmware import build, release

        out = args.out or build.BUILD_DIR / "releases" / args.kind / args.version
        try:
            with tempfile.TemporaryDirectory() as tmp:
                if args.image is None:
                    build.build([args.kind], Path(tmp), write_schema=False)
                release.write_release(Path(tmp) / args.kind, args.kind, args.version, release.load_key(args.key), out,
                                      image=args.image)
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"release failed: {exc}", file=sys.stderr)
            return 1
        print(out)
        return 0
    if args.cmd == "virtual":
        from firmware import virtual

        setup_logging(settings.log_level, settings.log_json)
        return virtual.run_cli(settings, args.kind, args.device, args.city, args.interval, args.duration,
                               args.count, args.state_dir, args.seed, args.backoff_cap)
    return 2
