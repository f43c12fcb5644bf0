"""``kotacerdas simulate``: list | run | devices | replay."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import socket
import sys
import threading
from pathlib import Path

from kotacerdas.observability import setup_logging
from pydantic import SecretStr

from kotacerdas.settings import Settings, load_settings

log = logging.getLogger("simulators.cli")


def _instant(text: str) -> int:
    """``--now``: epoch milliseconds, or an ISO 8601 time (UTC unless it names its offset)."""
    from datetime import datetime, timezone

    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch ms nor an ISO 8601 time") from None
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kotacerdas simulate", description="virtual device fleets with fault injection")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="shipped scenarios")
    r = sub.add_parser("run", help="simulate a scenario over MQTT (or into a dry-run file)")
    r.add_argument("scenario", help="scenario name (see `list`) or path to a .toml file")
    r.add_argument("--duration", type=float, help="wall-clock seconds (keeps the scenario's time acceleration)")
    r.add_argument("--qos", type=int, choices=(0, 1), help="telemetry QoS (default: the scenario's)")
    r.add_argument("--rate", type=float, help="target messages/s (default: the scenario's messages over its duration)")
    r.add_argument("--summary", type=Path, help="write the run summary JSON here")
    r.add_argument("--labels", type=Path, help="write the injected faults (ground truth) as JSON lines here")
    r.add_argument("--dry-run", type=Path, metavar="FILE.jsonl", help="write messages to a file, publish nothing")
    r.add_argument("--seed", type=int, help="override the scenario's seed")
    r.add_argument("--now", type=_instant, default=None, metavar="TIME",
                   help="end of the simulated window (ISO 8601 UTC or epoch ms; default: the clock): the same"
                        " scenario, seed and --now give the same dry run byte for byte")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    _broker_flags(r)
    d = sub.add_parser("devices", help="export the scenario's devices for the gateway registry")
    d.add_argument("scenario")
    d.add_argument("-o", "--output", type=Path, required=True, help="devices.json")
    p = sub.add_parser("replay", help="re-publish a dry-run file (topic root rewritten to the configured one)")
    p.add_argument("file", type=Path)
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--rate", type=float, default=1000.0, help="messages/s (0: as fast as possible)")
    p.add_argument("--summary", type=Path)
    p.add_argument("--no-progress", action="store_true")
    _broker_flags(p)
    return ap


def _broker_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker (default: the kotacerdas settings, KC_MQTT__*)")
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--tls-ca", type=Path, metavar="CA.crt", help="connect with TLS, trusting this CA")
    g.add_argument("--username", help="one account for every device (a broker without per-device ACL)")
    g.add_argument("--password-file", type=Path, help="file holding that account's password")
    g.add_argument("--credentials", type=Path, metavar="CREDS.json",
                   help="per-device passwords {device: password} (gateway registry import --credentials-out): "
                        "each device connects as itself, as the provisioned broker's ACL requires")


def _apply_broker_flags(args: argparse.Namespace, settings: Settings) -> dict[str, str] | None:
    """Override settings.mqtt from the flags; return the per-device credentials. ValueError/OSError on bad input."""
    upd: dict = {}
    if args.host:
        upd["host"] = args.host
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port {args.port} is not 1..65535")
        upd["port"] = args.port
    if args.tls_ca is not None:
        if not args.tls_ca.is_file():
            raise ValueError(f"--tls-ca {args.tls_ca}: no such file")
        upd["tls_ca"] = args.tls_ca
    if args.username:
        upd["username"] = args.username
    if args.password_file is not None:
        upd["password"] = SecretStr(args.password_file.read_text().strip())
    settings.mqtt = settings.mqtt.model_copy(update=upd)
    if args.credentials is None:
        return None
    try:
        creds = json.loads(args.credentials.read_text())
    except ValueError as exc:
        raise ValueError(f"--credentials {args.credentials}: not JSON ({exc})") from exc
    if not isinstance(creds, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in creds.items()):
        raise ValueError(f"--credentials {args.credentials}: expected {{\"device\": \"password\", ...}}")
    return creds


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ANN001
        log.info("stopping on signal", extra={"signal": signum})
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    return stop


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    from simulators.scenario import ScenarioError, list_scenarios, load_scenario

    try:
        if args.cmd == "list":
            for name, desc in list_scenarios():
                print(f"{name:12s} {desc}")
            return 0
        if args.cmd == "devices":
            from simulators.fleet import device_records

            recs = device_records(load_scenario(args.scenario))
            args.output.write_text(json.dumps(recs, indent=1) + "\n", encoding="utf-8")
            print(f"wrote {len(recs)} devices to {args.output}", file=sys.stderr)
            return 0
        if args.cmd == "run":
            from simulators.firmware_mode import FirmwareUnavailable
            from simulators.runner import Options, simulate

            sc = load_scenario(args.scenario)
            if args.duration:
                sc = sc.with_duration(args.duration)
            if args.seed is not None:
                sc = sc.with_seed(args.seed)
            if args.qos is not None:
                sc = sc.with_qos(args.qos)
            if args.rate is not None and not args.rate >= 0:  # NaN too
                raise ValueError(f"--rate {args.rate} is negative or not a number")
            if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
                raise ValueError(f"--duration {args.duration} must be a finite number > 0")
            creds = _apply_broker_flags(args, settings)
            opts = Options(rate=args.rate, summary=args.summary, labels=args.labels, dry_run=args.dry_run,
                           progress=not args.no_progress, credentials=creds)
            try:
                s = simulate(sc, settings, opts, stop=_stop_on_signals(), now_ms=args.now)
            except FirmwareUnavailable as exc:
                print(f"kotacerdas simulate: {exc}", file=sys.stderr)
                return 3
            print(json.dumps({k: s[k] for k in ("sent", "good_by_kind", "bad_by_type", "errors", "refused", "duration_s",
                                                "rate") if k in s}))
            return 0 if s["errors"] == 0 else 1
        if args.cmd == "replay":
            from simulators.runner import replay

            creds = _apply_broker_flags(args, settings)
            s = replay(args.file, settings, args.qos, args.rate or None, progress=not args.no_progress,
                       stop=_stop_on_signals(), credentials=creds)
            if args.summary:
                args.summary.write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
            print(json.dumps(s))
            return 0 if s["errors"] == 0 else 1
    except ScenarioError as exc:
        print(f"kotacerdas simulate: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError, socket.gaierror) as exc:  # gaierror: a host name that does not resolve
        print(f"kotacerdas simulate: cannot reach the MQTT broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}",
              file=sys.stderr)
        return 4
    except (OSError, ValueError) as exc:  # bad arguments (files, numbers): a message, not a traceback
        print(f"kotacerdas simulate: {exc}", file=sys.stderr)
        return 2
    return 2
