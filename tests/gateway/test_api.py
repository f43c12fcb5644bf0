"""The registry HTTP API (FastAPI) wired to a running gateway on the real broker."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client, wait_published

from gateway.api import make_app
from gateway.passwords import verify_password
from gateway.registry import Registry
from gateway.service import Gateway
from tests.gateway.helpers import Collector, devices, wait_for

TOKEN = "test-admin-token"


@pytest.fixture
def api(settings):
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    gw = Gateway(settings).start()
    with TestClient(make_app(gw.registry, TOKEN, gw)) as http:
        yield http, gw, settings
    gw.stop()


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def test_health_metrics_and_openapi(api):
    http, gw, _ = api
    assert http.get("/healthz").json() == {"status": "ok"}
    assert wait_for(lambda: http.get("/readyz").status_code == 200)
    m = http.get("/metrics")
    assert m.status_code == 200 and "kc_gateway_rejected_total" in m.text and "kc_gateway_queue_depth" in m.text
    spec = http.get("/openapi.json").json()
    assert {"/devices", "/devices/{device}/rotate-credentials", "/devices/{device}/config"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


def test_admin_routes_refuse_without_the_token(api):
    http, _, _ = api
    body = {"device": "air-9", "kind": "air", "city": "depok"}
    assert http.post("/devices", json=body).status_code == 401
    assert http.post("/devices", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert http.post("/devices/air-0/decommission").status_code == 401
    assert http.post("/devices/air-0/rotate-credentials").status_code == 401
    assert http.put("/devices/air-0/config", json={"interval_s": 30}).status_code == 401
    assert http.post("/devices/air-0/cmd", json={"cmd": "ping"}).status_code == 401
    assert http.get("/devices/air-9").status_code == 404  # nothing was created
    assert http.get("/devices/air-0").json()["status"] == "active"


def test_register_list_rotate_decommission(api):
    http, gw, s = api
    r = http.post("/devices", headers=ADMIN, json={"device": "air-9", "kind": "air", "city": "depok",
                                                   "district": "pancoran-mas", "lat": -6.4, "lon": 106.8})
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["department"] == "environment_agency" and d["mqtt_username"] == "air-9" and len(d["mqtt_password"]) >= 20
    assert "password_hash" not in d
    with Registry(s.gateway.registry_path) as reg:
        assert verify_password(d["mqtt_password"], reg.get("air-9").password_hash)
    assert "air-9" in [x["device"] for x in http.get("/devices", params={"kind": "air"}).json()]
    assert http.post("/devices", headers=ADMIN, json={"device": "x/#", "kind": "air", "city": "depok"}).status_code == 422
    assert http.post("/devices", headers=ADMIN, json={"device": "x1", "kind": "lava", "city": "depok"}).status_code == 422

    rot = http.post("/devices/air-9/rotate-credentials", headers=ADMIN).json()
    assert rot["mqtt_password"] != d["mqtt_password"]
    with Registry(s.gateway.registry_path) as reg:
        h = reg.get("air-9").password_hash
    assert verify_password(rot["mqtt_password"], h) and not verify_password(d["mqtt_password"], h)

    assert http.post("/devices/air-9/decommission", headers=ADMIN).json()["status"] == "decommissioned"
    assert http.post("/devices/air-9/rotate-credentials", headers=ADMIN).status_code == 409
    # the running gateway refuses its data at once
    col = Collector(s.mqtt, f"{s.mqtt.topic_root}/v1/_platform/deadletter/#")
    c = make_client(s.mqtt)
    connect(c, s.mqtt)
    try:
        wait_published([c.publish(contract.telemetry_topic(s.mqtt.topic_root, "depok", "air", "air-9"),
                                  contract.encode_telemetry(int(time.time() * 1000), 1, {"pm25": 3.0}), qos=1)])
        assert wait_for(lambda: [t.rsplit("/", 1)[1] for t, _ in col.msgs] == ["decommissioned"])
    finally:
        c.disconnect()
        c.loop_stop()
        col.close()


def _clear_retained(s, topic: str) -> None:  # noqa: ANN001 - Settings
    """Publish an empty retained message on ``topic`` (the next test's device must not get this one's config)."""
    c = make_client(s.mqtt)
    connect(c, s.mqtt)
    wait_published([c.publish(topic, b"", qos=1, retain=True)])
    c.disconnect()
    c.loop_stop()


def test_config_push_is_retained_and_commands_reach_the_device(api):
    http, gw, s = api
    root = s.mqtt.topic_root
    r = http.put("/devices/wastebin-0/config", headers=ADMIN,
                 json={"interval_s": 300, "thresholds": {"fill": [0, 80]}, "tz_offset_s": 28800})
    assert r.status_code == 200 and r.json()["published"] is True
    cfg_topic = contract.config_topic(root, "depok", "waste_bin", "wastebin-0")
    # the device connects later (it was asleep) and still gets its config: retained
    dev = Collector(s.mqtt, cfg_topic, contract.cmd_topic(root, "depok", "waste_bin", "wastebin-0"))
    try:
        assert wait_for(lambda: dev.matching(lambda t: t == cfg_topic))
        cfg = json.loads(dev.matching(lambda t: t == cfg_topic)[-1][1])
        # the firmware's part only: the adapter setting stays in the registry
        assert cfg == {"v": 1, "interval_s": 300, "thresholds": {"fill": [0.0, 80.0]}}
        assert http.get("/devices/wastebin-0").json()["config"]["tz_offset_s"] == 28800
        assert gw._interval_s("wastebin-0", "waste_bin") == 300  # stale detection follows the pushed interval
        r = http.post("/devices/wastebin-0/cmd", headers=ADMIN, json={"cmd": "calibrate", "args": {"empty_cm": 120}})
        assert r.status_code == 202
        cmd_id = r.json()["id"]
        assert wait_for(lambda: dev.matching(lambda t: t.endswith("/cmd")))
        cmd = json.loads(dev.matching(lambda t: t.endswith("/cmd"))[0][1])
        assert (cmd["id"], cmd["cmd"], cmd["args"]) == (cmd_id, "calibrate", {"empty_cm": 120})
        assert http.post("/devices/wastebin-0/cmd", headers=ADMIN, json={"cmd": "self-destruct"}).status_code == 422
        # the device answers on its ack topic; the API shows the answer
        c = make_client(s.mqtt)
        connect(c, s.mqtt)
        ack_topic = contract.device_topic(root, "depok", "waste_bin", "wastebin-0", "ack")
        wait_published([c.publish(ack_topic, json.dumps({"v": 1, "id": cmd_id, "ok": True, "detail": "empty=120cm"})
                                  .encode(), qos=1),
                        c.publish(ack_topic, b"not json", qos=1)])
        c.disconnect()
        c.loop_stop()
        assert wait_for(lambda: http.get("/devices/wastebin-0/acks").json() != [])
        a = http.get("/devices/wastebin-0/acks").json()[0]
        assert (a["id"], a["ok"], a["detail"]) == (cmd_id, True, "empty=120cm")
        assert wait_for(lambda: gw.metrics.registry.get_sample_value(
            "kc_gateway_rejected_total", {"reason": "malformed_json"}) == 1)
    finally:
        dev.close()
        _clear_retained(s, cfg_topic)


REFUSED_CONFIGS = [
    '{"interval_s": true}', '{"interval_s": 0.001}', '{"interval_s": 1.8e308}', '{"interval_s": 3}',
    '{"thresholds": {"fill": 80}}', '{"thresholds": {"pm25": [0, 50]}}', '{"thresholds": {"fill": [90, 10]}}',
    '{"calibration": {"depth_cm": "deep"}}', '{"calibration": {"ph_v7": 1.5}}', '{"fan_speed": 3}',
    '{"tasmota_map": {"SR04.Distance": "pm25"}}', '{"tz_offset_s": 100000}', '[1, 2]',
]


def test_config_the_firmware_would_refuse_is_a_422_and_not_published(api):
    # one gateway for all the bodies (a refused body changes nothing, which is what is checked after each)
    http, gw, _ = api
    before = gw.store.depth
    for body in REFUSED_CONFIGS:
        r = http.put("/devices/wastebin-0/config", headers={**ADMIN, "Content-Type": "application/json"},
                     content=body)
        assert r.status_code == 422, (body, r.text)
        assert gw.store.depth == before, body  # nothing queued for the device
        assert http.get("/devices/wastebin-0").json()["config"] == {}, body


def test_adapter_settings_are_kept_and_used(api):
    http, gw, _ = api
    r = http.put("/devices/air-0/config", headers=ADMIN,
                 json={"tasmota_map": {"DS18B20.Temperature": "temperature"}, "esphome_map": {"kolam_pm": "pm25"},
                       "tz_offset_s": 28800})
    assert r.status_code == 200 and r.json()["published"] is False  # nothing for the firmware in it
    d = gw.lookup("air-0")
    assert d.config == {"tasmota_map": {"DS18B20.Temperature": "temperature"}, "esphome_map": {"kolam_pm": "pm25"},
                        "tz_offset_s": 28800}


def test_a_merge_patch_changes_part_of_the_config_and_publishes_the_whole(api):
    http, gw, s = api
    cfg_topic = contract.config_topic(s.mqtt.topic_root, "depok", "waste_bin", "wastebin-0")
    assert http.patch("/devices/wastebin-0/config", json={"interval_s": 120}).status_code == 401
    full = {"interval_s": 300, "thresholds": {"fill": [0, 80]}, "tz_offset_s": 28800}
    assert http.put("/devices/wastebin-0/config", headers=ADMIN, json=full).status_code == 200
    dev = Collector(s.mqtt, cfg_topic)
    try:
        r = http.patch("/devices/wastebin-0/config", headers=ADMIN, json={"interval_s": 120})
        assert r.status_code == 200 and r.json()["published"] is True
        assert r.json()["config"] == {"interval_s": 120, "thresholds": {"fill": [0.0, 80.0]}, "tz_offset_s": 28800}
        # the device gets the whole device part again (retained), not the patch
        assert wait_for(lambda: any(json.loads(p).get("interval_s") == 120 for _, p in dev.matching(lambda t: t == cfg_topic)))
        last = json.loads(dev.matching(lambda t: t == cfg_topic)[-1][1])
        assert last == {"v": 1, "interval_s": 120, "thresholds": {"fill": [0.0, 80.0]}}
        r = http.patch("/devices/wastebin-0/config", headers=ADMIN, json={"thresholds": None})  # null removes
        assert r.status_code == 200 and r.json()["config"] == {"interval_s": 120, "tz_offset_s": 28800}
        for bad in ({"interval_s": 3}, {"fan_speed": 1}, [1, 2], "x"):  # checked as a PUT of the result
            r = http.patch("/devices/wastebin-0/config", headers=ADMIN, json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert http.get("/devices/wastebin-0").json()["config"] == {"interval_s": 120, "tz_offset_s": 28800}
        assert http.patch("/devices/nobody/config", headers=ADMIN, json={"interval_s": 120}).status_code == 404
    finally:
        dev.close()
        _clear_retained(s, cfg_topic)


def test_registering_an_existing_device_is_a_conflict_and_coordinates_are_checked(api):
    http, _, _ = api
    body = {"device": "air-0", "kind": "air", "city": "depok", "district": "elsewhere"}
    r = http.post("/devices", headers=ADMIN, json=body)
    assert r.status_code == 409 and "update=true" in r.json()["detail"]
    assert http.get("/devices/air-0").json()["district"] != "elsewhere"
    r = http.post("/devices", headers=ADMIN, params={"update": "true"}, json=body)
    assert r.status_code == 200 and r.json()["district"] == "elsewhere" and r.json()["mqtt_password"] is None
    for lat, lon in ((95, 106.8), (-6.4, 500), (float("nan"), 1.0)):
        r = http.post("/devices", headers=ADMIN, content=json.dumps({**body, "device": "air-77", "lat": lat, "lon": lon}))
        assert r.status_code == 422, (lat, lon, r.text)
    assert http.get("/devices/air-77").status_code == 404


def test_device_status_endpoint_follows_birth_message(api):
    http, gw, s = api
    assert http.get("/devices/air-1/status").json()["state"] == "offline"
    c = make_client(s.mqtt)
    connect(c, s.mqtt)
    try:
        wait_published([c.publish(contract.status_topic(s.mqtt.topic_root, "depok", "air", "air-1"),
                                  contract.encode_status("online", int(time.time() * 1000), fw="3.1.4"), qos=1)])
        assert wait_for(lambda: http.get("/devices/air-1/status").json()["state"] == "online")
        st = http.get("/devices/air-1/status").json()
        assert st["fw"] == "3.1.4" and st["district"] == "beji" and st["last_seen"] > 0
        assert any(x["device"] == "air-1" for x in http.get("/status").json())
    finally:
        c.disconnect()
        c.loop_stop()
