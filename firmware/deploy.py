"""Deploy a built bundle and a per-device config.json to a board with mpremote.

The commands are built as argv lists (testable without a board); ``--dry-run`` prints them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from kotacerdas.settings import Settings


def device_config(settings: Settings, kind: str, device: str, city: str, wifi_ssid: str, wifi_password: str,
                  broker_host: str | None = None, broker_port: int | None = None, user: str | None = None,
                  password: str | None = None, tls: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from firmware.virtual import device_path

    device_path()
    import kc_config  # type: ignore[import-not-found]

    m = settings.mqtt
    doc: dict[str, Any] = {
        "kind": kind, "device": device, "city": city, "root": m.topic_root,
        "wifi": {"ssid": wifi_ssid, "password": wifi_password},
        "mqtt": {"host": broker_host or m.host, "port": broker_port or m.port,
                 "user": user if user is not None else m.username,
                 "password": password if password is not None else (
                     m.password.get_secret_value() if m.password else None),
                 "tls": tls, "keepalive": m.keepalive_s},
    }
    doc.update(extra or {})
    kc_config.validate_device(doc)  # refuse to flash a board with a config it would reject
    return doc


def mpremote_commands(bundle: Path, config_file: Path, port: str | None = None, mpremote: str | None = None) -> list[list[str]]:
    base = [mpremote or str(Path(sys.executable).with_name("mpremote"))]
    if port:
        base += ["connect", port]
    cmds = [
        base + ["fs", "mkdir", ":/kc_drivers"],
        base + ["fs", "mkdir", ":/data"],
        base + ["fs", "cp", "-r", f"{bundle.as_posix().rstrip('/')}/.", ":/"],
        base + ["fs", "cp", str(config_file), ":/config.json"],
        base + ["reset"],
    ]
    return cmds


def run(cmds: list[list[str]], dry_run: bool) -> int:
    for i, c in enumerate(cmds):
        print(("# " if dry_run else "$ ") + shlex.join(c), flush=True)
        if dry_run:
            continue
        r = subprocess.run(c)
        # mkdir of an existing directory fails harmlessly on a re-deploy
        if r.returncode != 0 and "mkdir" not in c:
            print(f"deploy: step {i + 1} failed with exit code {r.returncode}", file=sys.stderr)
            return r.returncode
    return 0


def write_config(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o600)  # it holds the Wi-Fi and broker passwords
    return path
