"""The README's main job: `kotacerdas demo` runs the whole pipeline and its summary checks out."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.long


def test_demo_runs_and_every_kind_flows(base_settings, tmp_path):
    env = dict(os.environ, KC_STATE_DIR=str(tmp_path), COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "kotacerdas", "demo", "--timeout", "120"], env=env,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "PASS" in out
    for kind in ("water", "waste_bin", "air"):
        assert kind in out
    assert "Rejected, with reasons" in out
