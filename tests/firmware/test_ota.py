"""Over-the-air updates end to end on MicroPython's unix port: nodes running the firmware against
the real Mosquitto get `update` commands from the gateway's rollout, download the signed release
over real HTTP from it, verify it, switch slots, ack, reboot (a new process that imports the new
slot's .mpy files) and confirm; bad signatures and wrong hashes are refused and acked as failed;
the rollout halts at its failure threshold."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from firmware import build, release, unixport
from gateway import rollout_service as rs
from gateway.rollout import Policy
from kotacerdas import contract
from kotacerdas.settings import Settings
from devtools.stack import free_port
from tests.firmware.test_virtual_device import Collector, wait_for

pytestmark = pytest.mark.micropython
VERSION = "1.2.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    pub = release.generate_key(d / "release.pem")
    other = release.generate_key(d / "other.pem")
    return {"key": release.load_key(d / "release.pem"), "pub": pub, "other_pub": other}


@pytest.fixture(scope="module")
def release_dir(keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real air bundle (mpy-cross .mpy files, what a board gets) as a signed release."""
    tmp = tmp_path_factory.mktemp("rel")
    build.build(["air"], tmp / "bundle", write_schema=False)
    return release.write_release(tmp / "bundle" / "air", "air", VERSION, keys["key"], tmp / "air" / VERSION)


class Node:
    """One simulated board: its storage (flash root with /app.json and the slots) survives reboots;
    every boot is a new micropython process."""

    def __init__(self, tmp: Path, settings: Settings, device: str, pubkey: str):
        self.root = tmp / device
        (self.root / "data").mkdir(parents=True)
        self.device = device
        self.cfg = {"kind": "air", "device": device, "city": "depok", "root": settings.mqtt.topic_root,
                    "interval_s": 2, "fw": "1.0.0", "update_pubkey": pubkey,
                    "mqtt": {"host": settings.mqtt.host, "port": settings.mqtt.port, "keepalive": 30}}
        self.boots: list[dict[str, Any]] = []
        self.proc: Any = None

    def boot(self, readings: int | None = None, duration_ms: int = 90000, partitions: bool = False,
             mqtt_port: int | None = None) -> None:
        cfg = self.cfg if mqtt_port is None else {**self.cfg, "mqtt": {**self.cfg["mqtt"], "port": mqtt_port}}
        spec = {"storage": str(self.root / "data"), "fs_root": str(self.root), "readings": readings,
                "duration_ms": duration_ms, "config": cfg,
                **({"partitions": str(self.root / "partitions")} if partitions else {})}
        self.proc = unixport.start_node(spec, self.root / f"spec{len(self.boots)}.json")

    def wait(self, timeout_s: float = 120) -> dict[str, Any]:
        r = unixport.finish(self.proc, timeout_s)
        assert r.returncode == 0, r.stderr[-3000:]
        out = r.tagged("UNIXJSON")
        self.boots.append(out)
        return out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def acks(col: Collector, device: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in col.where("/ack") if f"/{device}/" in t]


def births(col: Collector, device: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in col.where("/status") if f"/{device}/" in t and p]


def wait_births(col: Collector, nodes: tuple[Node, ...]) -> None:
    """Every node is up (birth seen); a node process that died fails at once, with its stderr."""
    wait_for(lambda: all(births(col, n.device) for n in nodes) or any(n.proc.poll() is not None for n in nodes),
             60, "births")
    for n in nodes:
        assert n.proc.poll() is None, n.proc.stderr.read()[-3000:]


@pytest.fixture
def collector(settings: Settings, uid: str) -> Iterator[Collector]:
    col = Collector(settings, f"{settings.mqtt.topic_root}/#", f"col-{uid}")
    yield col
    col.close()


def test_rollout_updates_a_node_and_halts_at_the_threshold(settings: Settings, uid: str, tmp_path: Path,
                                                           keys: dict[str, Any], release_dir: Path,
                                                           collector: Collector) -> None:
    """3 nodes, one per wave, no failure allowed. A updates end to end; B holds another release key
    (a board provisioned for another fleet), refuses the signature and acks the failure; the rollout
    halts there and C is never sent a command."""
    a, b, c = (Node(tmp_path, settings, f"OTA-{x}-{uid}", keys["pub"]) for x in "ABC")
    b.cfg["update_pubkey"] = keys["other_pub"]
    rel = rs.read_release(release_dir)
    r = rs.new_rollout("t", rel, [(n.device, "air", "depok") for n in (c, b, a)],
                       Policy.make(3, wave=1, max_failures=0, timeout_s=90))
    assert [d.device for d in r.devices] == [a.device, b.device, c.device]
    settings.gateway.rollout_http_port = 0
    svc = rs.RolloutService(settings, r, release_dir, tmp_path / "rollout.json")
    stop = threading.Event()
    result: dict[str, Any] = {}
    try:
        for n in (a, b, c):
            n.boot()
        wait_births(collector, (a, b, c))
        svc.start()
        runner = threading.Thread(target=lambda: result.update(r=svc.run(stop)), daemon=True)
        runner.start()
        first = a.wait()  # downloads, verifies, stages, acks, reboots
        assert first["reset"] and first["stats"]["update_staged"] == 1, first
        assert first["node_file"].startswith(str(Path(unixport.DEVICE_DIR))), first  # the base install ran
        a.boot(readings=1)
        second = a.wait()
        runner.join(120)
        assert not runner.is_alive(), "rollout did not finish"
    finally:
        stop.set()
        for n in (a, b, c):
            n.kill()
        svc.stop()

    # A: the new slot's compiled modules ran, reported the new version and confirmed the update
    assert second["slot"] == "/app_a" and second["node_file"] == str(a.root / "app_a" / "kc_node.mpy"), second
    assert second["fw"] == VERSION and second["stats"]["delivered"] == 1, second
    a_acks = acks(collector, a.device)
    cid = r.by_device(a.device).cmd_id  # type: ignore[union-attr]
    times = {k: [x for t, p, x in collector.msgs if f"/{a.device}/" in t and t.endswith(k[0]) and k[1] in p][0]
             for k in (("/cmd", b"update"), ("/ack", b"staged"), ("/ack", b"confirmed"))}
    t0 = times[("/cmd", b"update")]
    print(f"unix port: update command -> staged ack {times[('/ack', b'staged')] - t0:.2f} s, "
          f"-> confirmed after the reboot {times[('/ack', b'confirmed')] - t0:.2f} s")
    assert [(x["id"], x["ok"], x["detail"].split()[0]) for x in a_acks] == [(cid, True, "staged"), (cid, True, "confirmed")]
    assert births(collector, a.device)[-1]["fw"] == VERSION
    state = json.loads((a.root / "app.json").read_text())
    assert state["active"] == "a" and not state["pending"] and state["fw"] == VERSION
    # B: refused before writing anything and said why; still on the old version
    b_acks = acks(collector, b.device)
    assert len(b_acks) == 1 and not b_acks[0]["ok"] and "bad signature" in b_acks[0]["detail"], b_acks
    assert not (b.root / "app.json").exists()
    # the rollout: A done, B failed, halted before C; C never saw an update command
    done = result["r"]
    assert {d.device: d.state for d in done.devices} == {a.device: "done", b.device: "failed", c.device: "pending"}
    assert done.halted and "max_failures 0" in done.halted and done.finished()
    assert not [t for t, _ in collector.where("/cmd") if f"/{c.device}/" in t]
    saved = rs.load(tmp_path / "rollout.json")
    assert saved is not None and saved.counts() == done.counts()
    served = svc.metrics.get_sample_value("kc_rollout_files_served_total", {"file": "module"})
    assert served == len(rel["files"]), served  # A fetched every file once; B stopped at the manifest


class ReleaseHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_tampered_release_and_wrong_hash_are_refused(settings: Settings, uid: str, tmp_path: Path,
                                                     keys: dict[str, Any], release_dir: Path,
                                                     collector: Collector) -> None:
    """A command whose manifest hash does not match, and a release whose module was changed after
    signing: both acked ok=false with the reason; the running slot is untouched."""
    bad = tmp_path / "srv" / "air" / VERSION
    shutil.copytree(release_dir, bad)
    node_file = bad / "kc_node.mpy"
    node_file.write_bytes(node_file.read_bytes()[:-1] + b"\x00")  # same size, other bytes
    rel = rs.read_release(bad)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: ReleaseHandler(*a, directory=str(tmp_path / "srv")))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/air/{VERSION}/"
    n = Node(tmp_path, settings, f"OTA-T-{uid}", keys["pub"])
    cmd_topic = contract.cmd_topic(settings.mqtt.topic_root, "depok", "air", n.device)
    args = {"url": url, "version": VERSION, "sha256": rel["sha256"], "signature": rel["signature"]}
    wrong_sha = {**args, "sha256": hashlib.sha256(b"another manifest").hexdigest()}
    try:
        n.boot(duration_ms=60000)
        wait_births(collector, (n,))
        for cid, a in (("wrong-sha", wrong_sha), ("tampered", args)):
            collector.c.publish(cmd_topic, contract.encode_cmd(cid, "update", a, 0), qos=1)
        wait_for(lambda: len(acks(collector, n.device)) >= 2, 60, "two acks")
        collector.c.publish(cmd_topic, contract.encode_cmd("rb", "reboot", {}, 0), qos=1)
        out = n.wait()
    finally:
        n.kill()
        srv.shutdown()
    got = {x["id"]: x for x in acks(collector, n.device)}
    assert not got["wrong-sha"]["ok"] and "manifest sha256 differs" in got["wrong-sha"]["detail"], got
    assert not got["tampered"]["ok"] and "kc_node.mpy: hash or size differs" in got["tampered"]["detail"], got
    assert got["tampered"]["data"]["fw"] == "1.0.0"
    assert not (n.root / "app.json").exists()  # nothing switched: the next boot runs the base install
    assert out["reset"] and out["stats"]["update_failed"] == 2 and out["fw"] == "1.0.0", out
    assert out["update_modules"] == [], out  # the refused updates' modules do not stay on the heap


def test_image_update_into_the_other_partition_and_bootloader_rollback(
        settings: Settings, uid: str, tmp_path: Path, keys: dict[str, Any], collector: Collector) -> None:
    """A full-image release through the fake esp32.Partition and ESP-IDF bootloader rules: both
    nodes write the image into ota_1 and reboot into it; I1 delivers a reading and marks the image
    valid; I2 cannot reach the broker on its first boot of the new image, so the bootloader returns
    to ota_0 at the next reset, and the node reports the rollback on the command's ack. One failure
    is allowed: the rollout finishes without halting."""
    image = tmp_path / "kotacerdas-air-1.2.0.bin"
    image.write_bytes(os.urandom(10_000))  # not a bootable image: the unix port only stores it
    rel_dir = release.write_release(tmp_path, "air", VERSION, keys["key"], tmp_path / "rel", image=image)
    rel = rs.read_release(rel_dir)
    i1, i2 = (Node(tmp_path, settings, f"OTA-I{x}-{uid}", keys["pub"]) for x in "12")
    r = rs.new_rollout("img", rel, [(n.device, "air", "depok") for n in (i1, i2)],
                       Policy.make(2, wave=2, max_failures=1, timeout_s=90))
    settings.gateway.rollout_http_port = 0
    svc = rs.RolloutService(settings, r, rel_dir, tmp_path / "img.json")
    stop = threading.Event()
    result: dict[str, Any] = {}
    try:
        for n in (i1, i2):
            n.boot(partitions=True)
        wait_births(collector, (i1, i2))
        svc.start()
        runner = threading.Thread(target=lambda: result.update(r=svc.run(stop)), daemon=True)
        runner.start()
        first = [n.wait() for n in (i1, i2)]
        i1.boot(readings=1, partitions=True)
        i2.boot(duration_ms=1500, partitions=True, mqtt_port=free_port())  # no broker: never confirms
        ok, lost = i1.wait(), i2.wait()
        i2.boot(readings=1, partitions=True)
        back = i2.wait()
        runner.join(120)
        assert not runner.is_alive(), "rollout did not finish"
    finally:
        stop.set()
        for n in (i1, i2):
            n.kill()
        svc.stop()
    for out, n in zip(first, (i1, i2)):
        assert out["reset"] and out["partition"] == "ota_0" and out["stats"]["update_staged"] == 1, out
        assert (n.root / "partitions" / "ota_1.bin").read_bytes()[:10_000] == image.read_bytes()
    assert ok["partition"] == "ota_1" and ok["fw"] == VERSION and ok["stats"]["delivered"] == 1, ok
    otadata = json.loads((i1.root / "partitions" / "otadata.json").read_text())
    assert otadata["boot"] == "ota_1" and otadata["state"]["ota_1"] == "valid", otadata
    assert lost["partition"] == "ota_1" and lost["stats"]["delivered"] == 0, lost
    assert back["partition"] == "ota_0" and back["fw"] == "1.0.0", back
    otadata = json.loads((i2.root / "partitions" / "otadata.json").read_text())
    assert otadata["boot"] == "ota_0" and otadata["state"]["ota_1"] == "aborted", otadata
    assert [x["detail"].split()[0] for x in acks(collector, i1.device)] == ["staged", "confirmed"]
    i2_acks = acks(collector, i2.device)
    assert [(x["ok"], x["detail"]) for x in i2_acks][1:] == [(False, f"rolled back from {VERSION}")], i2_acks
    done = result["r"]
    assert {d.device: d.state for d in done.devices} == {i1.device: "done", i2.device: "failed"}
    assert done.halted is None and done.finished()


def test_app_slot_rolls_back_after_three_unconfirmed_boots(settings: Settings, uid: str, tmp_path: Path,
                                                           keys: dict[str, Any], release_dir: Path,
                                                           collector: Collector) -> None:
    """A staged slot that never delivers a reading (here: no broker on its boots) runs 3 times, then
    main.py's boot_select goes back to the base install and the node acks the rollback on the
    update command's id at its next connection."""
    from firmware.virtual import device_path

    device_path()
    import kc_update  # type: ignore[import-not-found]

    n = Node(tmp_path, settings, f"OTA-R-{uid}", keys["pub"])
    manifest = (release_dir / contract.UPDATE_MANIFEST).read_bytes()
    doc = kc_update.verify_manifest(manifest, (release_dir / contract.UPDATE_SIGNATURE).read_bytes(), keys["pub"])
    assert kc_update.stage(doc, lambda name: [(release_dir / name).read_bytes()], str(n.root), cmd="rb-1") == "a"
    dead = free_port()
    try:
        tries = []
        for _ in range(3):
            n.boot(duration_ms=800, mqtt_port=dead)
            tries.append(n.wait())
        n.boot(readings=1)
        back = n.wait()
    finally:
        n.kill()
    assert [(t["slot"], t["fw"], t["stats"]["delivered"]) for t in tries] == [("/app_a", VERSION, 0)] * 3, tries
    assert all(t["node_file"].endswith("/app_a/kc_node.mpy") for t in tries)
    assert back["slot"] is None and back["fw"] == "1.0.0", back
    # what the unconfirmed boots measured was kept in flash and is delivered by the rolled-back node
    assert back["stats"]["delivered"] == back["stats"]["readings"] + sum(t["stats"]["readings"] for t in tries), back
    assert back["node_file"].startswith(str(Path(unixport.DEVICE_DIR)))
    got = acks(collector, n.device)
    assert [(x["id"], x["ok"], x["detail"]) for x in got] == [("rb-1", False, f"rolled back from {VERSION}")], got
    st = json.loads((n.root / "app.json").read_text())
    assert st["active"] is None and st["rolled_back"] == VERSION and st["reported"]


def test_rollout_from_the_command_line(settings: Settings, uid: str, tmp_path: Path, collector: Collector,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's path: `firmware keygen`, `firmware release`, `gateway registry register`,
    `gateway rollout start` (a process: targets from the registry, releases over HTTP on a free
    port) and `gateway rollout status`."""
    import os
    import subprocess
    import sys

    from kotacerdas.cli import main as kc

    env = {"KC_GATEWAY__REGISTRY_PATH": str(settings.gateway.registry_path),
           "KC_MQTT__TOPIC_ROOT": settings.mqtt.topic_root, "KC_STATE_DIR": str(settings.state_dir)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert kc(["firmware", "keygen", "--out", str(tmp_path / "k.pem")]) == 0
    pub = json.loads(capsys.readouterr().out)["update_pubkey"]
    assert kc(["firmware", "keygen", "--out", str(tmp_path / "k.pem")]) == 1  # never overwrites a key
    rel = tmp_path / "rel"
    assert kc(["firmware", "release", "--kind", "air", "--version", VERSION, "--key", str(tmp_path / "k.pem"),
               "--out", str(rel)]) == 0
    n = Node(tmp_path, settings, f"OTA-CLI-{uid}", pub)
    assert kc(["gateway", "registry", "register", n.device, "--kind", "air", "--city", "depok"]) == 0
    assert kc(["gateway", "registry", "register", f"W-{uid}", "--kind", "water", "--city", "depok"]) == 0
    capsys.readouterr()
    proc = None
    try:
        n.boot()
        wait_births(collector, (n,))
        proc = subprocess.Popen([sys.executable, "-m", "kotacerdas", "gateway", "rollout", "start", "--release",
                                 str(rel), "--name", "cli", "--port", "0", "--timeout-s", "60"],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = n.wait()
        assert first["reset"], (first["logs"], proc.poll(), proc.poll() is not None and proc.communicate()[1][-2000:])
        n.boot(readings=1)
        assert n.wait()["fw"] == VERSION
        out, err = proc.communicate(timeout=60)
    finally:
        n.kill()
        if proc is not None and proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["counts"]["done"] == 1
    assert kc(["gateway", "rollout", "status", "cli"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(d["device"], d["state"]) for d in status["devices"]] == [(n.device, "done")]  # the water node: not a target
    assert status["devices"][0]["detail"].startswith(("running", "confirmed"))
