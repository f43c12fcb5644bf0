"""The rollout shell against the real Mosquitto: a rollout process that stops mid-wave resumes from
its saved state, with the acks and births sent meanwhile waiting in its persistent session.
Devices here are plain MQTT clients answering like the firmware (tests/firmware/test_ota.py runs
the real firmware)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from gateway import rollout_service as rs
from gateway.rollout import Policy
from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client
from kotacerdas.settings import Settings
from tests.firmware.test_virtual_device import Collector, wait_for


def release_dir(tmp: Path) -> Path:
    d = tmp / "rel"
    d.mkdir()
    (d / "kc_node.mpy").write_bytes(b"M\x06node")
    manifest = json.dumps({"v": 1, "fw": "1.2.0", "kind": "air",
                           "files": {"kc_node.mpy": {"sha256": "00" * 32, "size": 6}}}).encode()
    (d / contract.UPDATE_MANIFEST).write_bytes(manifest)
    (d / contract.UPDATE_SIGNATURE).write_bytes(b"\x01" * 64)  # the gateway never verifies: devices do
    return d


def test_rollout_resumes_after_a_restart(settings: Settings, uid: str, tmp_path: Path) -> None:
    root = settings.mqtt.topic_root
    devs = [f"R0-{uid}", f"R1-{uid}"]
    rel = rs.read_release(release_dir(tmp_path))
    assert rel["version"] == "1.2.0" and rel["files"] == ["kc_node.mpy"]
    path = tmp_path / "state" / "r.json"
    settings.gateway.rollout_http_port = 0
    r = rs.new_rollout("r", rel, [(d, "air", "depok") for d in devs], Policy.make(2, wave=1, timeout_s=60))
    rs.save(r, path)
    col = Collector(settings, f"{root}/#", f"col-{uid}")
    dev = make_client(settings.mqtt, f"dev-{uid}", v5=False)
    connect(dev, settings.mqtt)
    try:
        svc = rs.RolloutService(settings, r, tmp_path / "rel", path).start()
        stop = threading.Event()
        t = threading.Thread(target=svc.run, args=(stop, 0.2), daemon=True)
        t.start()
        wait_for(lambda: col.where(f"/{devs[0]}/cmd"), 20, "first command")
        body = httpx.get(r.url + "kc_node.mpy", timeout=5)  # what the device would download
        assert body.status_code == 200 and body.content == b"M\x06node"
        (tmp_path / "secret").write_text("not a release file")
        # "..%2F" reaches the route as "../": the release directory is the fence, not the URL parser
        assert httpx.get(r.url + "..%2Fsecret", timeout=5).status_code == 404
        doc = httpx.get(f"http://127.0.0.1:{svc.http.port}/rollout", timeout=5).json()  # type: ignore[union-attr]
        assert doc["counts"]["sent"] == 1 and doc["devices"][0]["state"] == "sent"
        stop.set()
        t.join(10)
        svc.stop()  # the rollout process is gone; the device answers meanwhile
        cmd = json.loads(col.where(f"/{devs[0]}/cmd")[0][1])
        assert cmd["cmd"] == "update" and contract.validate_update_args(cmd["args"]) == r.update_args()
        ack = {"v": 1, "id": cmd["id"], "ok": True, "detail": "staged 1.2.0 in slot a, rebooting"}
        dev.publish(contract.device_topic(root, "depok", "air", devs[0], "ack"), json.dumps(ack), qos=1).wait_for_publish(5)
        dev.publish(contract.status_topic(root, "depok", "air", devs[0]),
                    contract.encode_status("online", 0, fw="1.2.0"), qos=1, retain=True).wait_for_publish(5)

        resumed = rs.load(path)
        assert resumed is not None and resumed.by_device(devs[0]).cmd_id == cmd["id"]  # type: ignore[union-attr]
        svc2 = rs.RolloutService(settings, resumed, tmp_path / "rel", path).start()
        stop2 = threading.Event()
        out: dict = {}
        t2 = threading.Thread(target=lambda: out.update(r=svc2.run(stop2, 0.2)), daemon=True)
        t2.start()
        wait_for(lambda: col.where(f"/{devs[1]}/cmd"), 20, "second wave")
        cmd2 = json.loads(col.where(f"/{devs[1]}/cmd")[0][1])
        dev.publish(contract.device_topic(root, "depok", "air", devs[1], "ack"),
                    json.dumps({"v": 1, "id": cmd2["id"], "ok": True, "detail": "confirmed 1.2.0"}), qos=1)
        t2.join(20)
        assert not t2.is_alive()
        m = svc2.metrics.get_sample_value
        assert m("kc_rollout_devices", {"state": "done"}) == 2 and m("kc_rollout_halted") == 0
        svc2.stop()
    finally:
        dev.loop_stop()
        dev.disconnect()
        col.close()
    done = out["r"]
    assert [d.state for d in done.devices] == ["done", "done"] and done.finished() and done.halted is None
    assert len(col.where(f"/{devs[0]}/cmd")) == 1  # resumed, not re-sent
    assert rs.load(path) == done
