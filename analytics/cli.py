"""``kotacerdas analytics``: run the analytics service, or evaluate detectors against labels."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

from kotacerdas.influx import InfluxError
from kotacerdas.observability import setup_logging
from kotacerdas.runtime import stop_on_signals
from kotacerdas.settings import load_settings

log = logging.getLogger("analytics.cli")


def _connect_mqtt(settings):  # noqa: ANN001
    from kotacerdas.mqtt import connect, make_client

    try:
        c = make_client(settings.mqtt, f"kc-analytics-{settings.mqtt.topic_root}-{int(time.time() * 1000) % 10**8}")
        connect(c, settings.mqtt, timeout_s=5)
        return c
    except (OSError, TimeoutError, ConnectionError) as exc:
        log.warning("MQTT unavailable: alerts are stored and sent by webhook/e-mail only", extra={"error": str(exc)})
        return None


def _tests_ok(settings) -> bool:  # noqa: ANN001 - Settings
    """``analytics.extra_tests`` names only opt-in tests (analytics/alarmset.py); else say which and why."""
    from analytics import alarmset

    try:
        alarmset.written(settings.analytics.extra_tests)
    except ValueError as exc:
        print(f"analytics: refused: {exc}", file=sys.stderr)
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from analytics.api import ApiServer, make_app
    from analytics.memory import retain_freed_memory
    from analytics.service import AnalyticsService

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    if not _tests_ok(settings):
        return 2
    retain_freed_memory()  # every pass allocates and frees its grids and results (analytics/memory.py)
    mqtt = _connect_mqtt(settings) if settings.analytics.publish_alerts_mqtt else None
    svc = AnalyticsService(settings, mqtt_client=mqtt)
    window = args.window or settings.analytics.window_s
    try:
        try:
            svc.influx.create_database()  # idempotent; a fresh stack may not have the database yet
        except InfluxError as exc:
            log.warning("could not ensure the database exists", extra={"error": str(exc)})
        if args.once:
            try:
                counts = _once(svc, window, args.replay, args.every)
            except InfluxError as exc:
                log.error("analytics pass failed", extra={"error": str(exc)})
                print(f"kotacerdas analytics: pass failed: {exc}", file=sys.stderr)
                return 1
            print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            return 0
        stop = stop_on_signals()
        last_ok = {"t": 0.0}

        def ready() -> dict[str, bool]:
            return {"influxdb": svc.influx.ping(),
                    "recent_pass": time.time() - last_ok["t"] < 3 * settings.analytics.interval_s + 30}

        app = make_app(svc.store, svc.registry, settings.analytics.admin_token.get_secret_value(), ready)
        api = ApiServer(app, settings.analytics.http_host, settings.analytics.http_port).start()
        log.info("analytics running", extra={"http_port": api.port, "interval_s": settings.analytics.interval_s})
        first = True
        new_data = threading.Event()
        if mqtt is not None and settings.analytics.stream_trigger:
            from kotacerdas import contract

            # the stream only wakes the loop; the pass itself still reads InfluxDB (the durable copy)
            mqtt.on_message = lambda client, userdata, msg: new_data.set()
            mqtt.subscribe(contract.normalized_subscription(settings.mqtt.topic_root), qos=0)
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True,
                      disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("analytics: waiting for the first pass")
            while not stop.is_set():
                started = time.monotonic()
                new_data.clear()
                try:
                    counts = svc.run_pass(window_s=window, emit_all=first)
                    first = False
                    last_ok["t"] = time.time()
                    progress.update(task, description=f"analytics: last pass {counts}")
                except Exception as exc:  # noqa: BLE001 - a failed pass is logged and retried next interval
                    log.error("analytics pass failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                _wait_next(stop, new_data, started, settings.analytics.interval_s,
                           settings.analytics.min_pass_interval_s)
        api.stop()
        return 0
    finally:
        svc.close()
        if mqtt is not None:
            mqtt.loop_stop()
            mqtt.disconnect()


def _once(svc, window_s: float, replay_s: float, every_s: float) -> dict[str, int]:  # noqa: ANN001
    """One pass now, or (``replay_s`` > 0) the passes the live service would have made every ``every_s``
    over the last ``replay_s``: the indices, verdicts and forecasts each of those passes would have
    written (one point per pass), so a history of real results exists after a back-dated run."""
    now_ms = int(time.time() * 1000)
    every_ms = max(int(every_s * 1000), 1000)
    steps = int(replay_s * 1000 // every_ms) if replay_s > 0 else 0
    totals: dict[str, int] = {}
    for k in range(steps, -1, -1):
        # the first pass writes every QC verdict in its window, later ones only what is new (as live)
        counts = svc.run_pass(now_ms - k * every_ms, window_s=window_s, emit_all=k == steps)
        for m, n in counts.items():
            totals[m] = totals.get(m, 0) + n
    return totals


def _wait_next(stop: threading.Event, new_data: threading.Event, started: float, interval_s: float,
               min_interval_s: float) -> None:
    """Sleep until the next scheduled pass, or earlier once new telemetry arrived (rate-limited)."""
    deadline = started + interval_s
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            return
        if new_data.is_set() and now - started >= min_interval_s:
            return
        stop.wait(min(0.2, deadline - now))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from analytics.evaluate import evaluate_files, render

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    if not _tests_ok(settings):
        return 2
    if args.live:
        import json

        from analytics.livescore import RunMismatch, evaluate_live
        from kotacerdas.influx import InfluxClient
        from kotacerdas.routing import influx_for_city

        with open(args.labels, encoding="utf-8") as fh:
            labels = [json.loads(ln) for ln in fh if ln.strip()]
        try:
            with InfluxClient(influx_for_city(settings)) as influx:
                rows = evaluate_live(influx, labels, source=args.live)
        except RunMismatch as exc:
            print(f"analytics evaluate: refused: {exc}", file=sys.stderr)
            return 2
        print(render(rows))
        return 0
    if not args.data:
        print("analytics evaluate: --data DRYRUN.jsonl or --live verdicts|episodes is required", file=sys.stderr)
        return 2
    rows = evaluate_files(args.data, args.labels, root=args.root or settings.mqtt.topic_root, mode=args.mode,
                          window_s=args.window or settings.analytics.window_s, every_s=args.every,
                          extra_tests=settings.analytics.extra_tests)  # the tests this service writes
    print(render(rows))
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    """Validate an alerting config file without starting anything (exit 1 with every problem named)."""
    from pathlib import Path

    from analytics.alertconfig import AlertConfigError, load
    from kotacerdas.catalogue import load_catalogue

    try:
        cfg = load(Path(args.file) if args.file else None, {k.name: k.department for k in load_catalogue()})
    except (AlertConfigError, OSError) as exc:
        print(f"invalid: {exc}")
        return 1
    print(f"ok: {len(cfg.rules)} rules, {len(cfg.subscriptions)} subscriptions")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kotacerdas analytics", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the analytics service (QC, indices, forecasts, alerts)")
    r.add_argument("--once", action="store_true", help="one pass over the window, then exit")
    r.add_argument("--window", type=float, default=None, metavar="S", help="window in seconds (default settings)")
    r.add_argument("--replay", type=float, default=0.0, metavar="S",
                   help="with --once: replay the live loop's passes over the last S seconds (back-dated data)")
    r.add_argument("--every", type=float, default=3600.0, metavar="S",
                   help="with --replay: seconds between replayed passes (default 3600)")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("evaluate", help="score detectors against simulator ground-truth labels")
    e.add_argument("--data", default=None, help="dry-run JSON lines {t, topic, payload} (replay the detectors)")
    e.add_argument("--live", choices=("verdicts", "episodes"), default=None,
                   help="instead of --data: score what the running service stored in InfluxDB (qc verdicts or "
                        "qc_episode episodes); labels of another run are refused (exit 2)")
    e.add_argument("--labels", required=True, help="labels JSON lines {device, kind, field, start, end, type}")
    e.add_argument("--root", default=None, help="topic root of the dry run (default settings)")
    e.add_argument("--mode", choices=("stream", "batch"), default="stream",
                   help="stream: replay the service's live loop (default); batch: one run over the record")
    e.add_argument("--window", type=float, default=None, metavar="S", help="live window (default settings)")
    e.add_argument("--every", type=float, default=3 * 3600.0, metavar="S",
                   help="seconds of data between replayed passes (the flags do not depend on it)")
    e.set_defaults(func=cmd_evaluate)
    rc = sub.add_parser("rules", help="alert rules and subscriptions").add_subparsers(dest="rules_cmd", required=True)
    chk = rc.add_parser("check", help="validate a rules file (default: the shipped analytics/rules.yaml)")
    chk.add_argument("file", nargs="?", default=None)
    chk.set_defaults(func=cmd_rules_check)
    args = ap.parse_args(argv)
    return int(args.func(args) or 0)
