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

from firmware import release

BOARD_CA = "/ca.der"


def device_config(settings: Settings, kind: str, device: str, city: str, wifi_ssid: str, wifi_password: str,
                  broker_host: str | None = None, broker_port: int | None = None, user: str | None = None,
                  password: str | None = None, tls: bool = False, extra: dict[str, Any] | None = None,
                  tls_ca: bool = False) -> dict[str, Any]:
    """The board's config.json. Broker credentials are the device's own (``user``/``password``):
    the platform's account in ``settings.mqtt`` is never copied onto a board, where anyone with a
    USB cable can read it. ``tls`` needs ``tls_ca`` (the CA is copied to ``/ca.der``)."""
    from firmware.virtual import device_path

    device_path()
    import kc_config  # type: ignore[import-not-found]

    if tls and not tls_ca:
        raise ValueError("--tls needs the broker's CA (--tls-ca): an unverified TLS link accepts any broker")
    m = settings.mqtt
    doc: dict[str, Any] = {
        "kind": kind, "device": device, "city": city, "root": m.topic_root,
        "wifi": {"ssid": wifi_ssid, "password": wifi_password},
        "mqtt": {"host": broker_host or m.host, "port": broker_port or m.port,
                 "user": user, "password": password, "tls": tls, "keepalive": m.keepalive_s},
        "fw": release.firmware_version(),
    }
    if tls:
        doc["mqtt"]["tls_ca"] = BOARD_CA
    doc.update(extra or {})
    if "ap_password" not in doc:
        # the set-up AP is always WPA2: one passphrase per device, printed by `deploy` for its label
        import secrets

        import kc_provision  # type: ignore[import-not-found]

        doc["ap_password"] = kc_provision.new_ap_password(secrets.token_bytes)
    kc_config.validate_device(doc)  # refuse to flash a board with a config it would reject
    return doc


def version_check_source(want: tuple[int, int] = release.MICROPYTHON_VERSION[:2]) -> str:
    """Board-side check: stops the mpremote session (exception -> exit 1) on another MicroPython."""
    return ("import sys\nv = sys.implementation.version[:2]\nprint('board MicroPython', v)\n"
            f"if v != {tuple(want)!r}:\n"
            f"    raise SystemExit('kc-deploy: board runs MicroPython %d.%d, this bundle is built for {want[0]}.{want[1]}' % v)\n")


def stale_removal_source(bundle: Path) -> str:
    """Board-side: remove `X.py` left from an older deploy; it would shadow the new `X.mpy`."""
    stale = sorted("/" + p.relative_to(bundle).with_suffix(".py").as_posix() for p in bundle.rglob("*.mpy"))
    return ("import os\nfor d in ('/kc_drivers', '/data'):\n    try:\n        os.mkdir(d)\n    except OSError:\n"
            "        pass\n"
            f"for f in {stale!r}:\n    try:\n        os.remove(f)\n        print('removed stale', f)\n"
            "    except OSError:\n        pass\n")


def mpremote_commands(bundle: Path, config_file: Path, port: str | None = None, mpremote: str | None = None,
                      ca_der: Path | None = None, check_version: bool = True) -> list[list[str]]:
    """ONE mpremote session (commands chained with `+`): version check, stale-file removal, copy,
    config, CA, reset. A failing step ends the session, so a wrong board is never half-written."""
    argv = [mpremote] if mpremote else [sys.executable, "-m", "mpremote"]
    if port:
        argv += ["connect", port]
    steps: list[list[str]] = []
    if check_version:
        steps.append(["exec", version_check_source()])
    steps += [["exec", stale_removal_source(bundle)],
              ["fs", "cp", "-r", f"{bundle.as_posix().rstrip('/')}/.", ":/"],
              ["fs", "cp", str(config_file), ":/config.json"]]
    if ca_der is not None:
        steps.append(["fs", "cp", str(ca_der), ":" + BOARD_CA])
    steps.append(["reset"])
    for i, st in enumerate(steps):
        argv += (["+"] if i else []) + st
    return [argv]


def ca_to_der(ca: Path, out: Path) -> Path:
    """The broker CA as DER (what kc_mqtt hands mbedTLS), from a PEM or DER file."""
    import ssl

    raw = ca.read_bytes()
    der = ssl.PEM_cert_to_DER_cert(raw.decode()) if b"-----BEGIN" in raw else raw
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(der)
    return out


def run(cmds: list[list[str]], dry_run: bool) -> int:
    for c in cmds:
        print(("# " if dry_run else "$ ") + shlex.join(c), flush=True)
        if dry_run:
            continue
        r = subprocess.run(c)
        if r.returncode != 0:
            print(f"deploy: mpremote failed with exit code {r.returncode}", file=sys.stderr)
            return r.returncode
    return 0


def write_config(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o600)  # it holds the Wi-Fi and broker passwords
    return path
