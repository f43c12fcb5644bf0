"""A whole simulator run: plan, label, publish (or dry-run), high-fidelity firmware devices, summary."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kotacerdas import contract
from kotacerdas.settings import Settings

from simulators.engine import BAD, GOOD, STATUS, Msg, Run
from simulators.faults import write_labels
from simulators.firmware_mode import FirmwareFleet
from simulators.publisher import MqttSink, Stats, publish_stream, write_stream
from simulators.scenario import Scenario, ScenarioError

log = logging.getLogger("simulators.runner")


@dataclass
class Options:
    rate: float | None = None          # msgs/s; default: the scenario's messages spread over its duration
    summary: Path | None = None
    labels: Path | None = None
    dry_run: Path | None = None
    progress: bool = True
    births: bool = True
    credentials: dict[str, str] | None = None  # {device: password}: each device on its own account


def simulate(sc: Scenario, settings: Settings, opts: Options, stop: threading.Event | None = None,
             now_ms: int | None = None) -> dict:
    if sc.dry_run_only and not opts.dry_run:
        raise ScenarioError(f"scenario {sc.name!r} is dry_run_only (its {sc.span_s / 86400:.0f} days are older than the"
                            " gateway accepts): run it with --dry-run FILE")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    run = Run(sc, settings.mqtt.topic_root, now)
    total = run.estimate_messages()
    rate = opts.rate if opts.rate else total / sc.duration_s
    msgs = run.messages(births=opts.births)
    if opts.dry_run:
        with open(opts.dry_run, "w", encoding="utf-8") as fh:
            stats = write_stream(msgs, fh, total, progress=opts.progress)
        summary = stats.summary()
    else:
        fw = FirmwareFleet.start(sc, settings) if sc.firmware_devices else None
        sink = MqttSink(settings.mqtt, sc.qos, credentials=opts.credentials)
        try:
            stats = publish_stream(msgs, sink, rate, total, progress=opts.progress, stop=stop)
        finally:
            sink.close()
        summary = stats.summary()
        if fw is not None:
            if stop is not None and stop.is_set():
                fw.stop()
            summary["firmware"] = fw.finish()
        summary["stopped_early"] = bool(stop is not None and stop.is_set())
    if opts.labels:  # after the stream: whether each fault left a trace in what was sent is known now
        seen = run.labels_seen()
        n = write_labels(str(opts.labels), seen, run.run_id)
        summary["labels_without_trace"] = sum(not lb.trace for lb in seen)
        log.info("labels written", extra={"path": str(opts.labels), "labels": n,
                                          "without_trace": summary["labels_without_trace"]})
    summary.update(run_id=run.run_id, scenario=sc.name, seed=sc.seed, qos=sc.qos, target_rate=round(rate, 1),
                   simulated_span_s=sc.span_s, window_start_ms=run.start_ms, window_end_ms=run.end_ms)
    if opts.summary:
        Path(opts.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("simulation finished", extra={k: v for k, v in summary.items() if not isinstance(v, dict)})
    return summary


def read_dry_run(path: Path, root: str | None = None) -> list[Msg]:
    """Messages of a dry-run file; ``root`` rewrites each topic's first level (replay into another root)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                payload = base64.b64decode(d["payload_b64"]) if "payload_b64" in d else d["payload"].encode("utf-8")
                topic = str(d["topic"])
                t = int(d["t"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a dry-run line ({exc})") from exc
            parts = topic.split("/")
            if root:
                parts[0] = root
                topic = "/".join(parts)
            status = parts[-1] == contract.CH_STATUS
            kind, device = (parts[3], parts[4]) if len(parts) == 6 else (None, None)
            out.append(Msg(t, topic, payload, STATUS if status else GOOD, kind=kind, retain=status, device=device))
    return out


def replay(path: Path, settings: Settings, qos: int, rate: float | None, progress: bool = True,
           stop: threading.Event | None = None, credentials: dict[str, str] | None = None) -> dict:
    """Re-publish a recorded dry-run file in its order. good/bad is not known here: all count as sent."""
    msgs = read_dry_run(path, settings.mqtt.topic_root)
    sink = MqttSink(settings.mqtt, qos, credentials=credentials)
    try:
        stats: Stats = publish_stream(msgs, sink, rate, sum(m.cls != STATUS for m in msgs), progress=progress,
                                      stop=stop)
    finally:
        sink.close()
    s = stats.summary()
    s.pop("good_by_kind")
    s.pop("bad_by_type")
    return s


__all__ = ["Options", "simulate", "replay", "read_dry_run", "BAD", "GOOD"]
