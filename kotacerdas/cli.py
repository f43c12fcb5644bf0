"""The ``kotacerdas`` command: one entry point, one subcommand per part.

Each part owns its own argument parsing in ``<part>/cli.py`` (``main(argv) -> int``);
this module only dispatches, importing a part lazily so that, e.g., the firmware
tools do not pull in numpy and a missing optional part fails with a clear message.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("devtools.stack", "local Mosquitto + InfluxDB on loopback: up | down | status"),
    "backbone": ("devtools.backbone", "local 3-node NATS JetStream cluster (docs/scale.md): up | down | status"),
    "demo": ("devtools.demo", "run the whole pipeline for a bounded time and print a summary"),
    "previews": ("devtools.previews", "dashboard PNGs from a short real pipeline run (own database and ports)"),
    "catalogue": ("kotacerdas.catalogue_cli", "show the sensor catalogue"),
    "gateway": ("gateway.cli", "device registry, validation, store-and-forward"),
    "ingest": ("ingest.cli", "stream normalised telemetry from MQTT into InfluxDB"),
    "analytics": ("analytics.cli", "detectors, indices, forecasts and alerts"),
    "simulate": ("simulators.cli", "virtual device fleets with fault injection"),
    "dashboards": ("dashboards.cli", "build and push Grafana dashboards; open-data API"),
    "firmware": ("firmware.cli", "build the MicroPython bundle and deploy it to boards"),
    "reliability": ("devtools.reliability", "run the reliability and security suite"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: kotacerdas COMMAND [ARGS...]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kotacerdas: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"kotacerdas: the {name!r} part is not installed ({exc})", file=sys.stderr)
            return 2
        raise
    try:
        return int(module.main(rest) or 0)
    except Exception as exc:
        from pydantic import ValidationError  # loaded by the settings anyway; not before a command runs

        if not isinstance(exc, ValidationError) or not exc.title.endswith("Settings"):
            raise
        # a bad KC_* variable or settings file: say which, not a traceback (exit 2: bad arguments)
        for err in exc.errors():
            where = "__".join(str(p) for p in err["loc"]).upper()
            print(f"kotacerdas: bad setting KC_{where} ({exc.title}): {err['msg']}, got {err.get('input')!r}"[:300],
                  file=sys.stderr)
        return 2
