from __future__ import annotations

import pytest

from devtools import backbone as localnats
from devtools.stack import port_open
from kotacerdas import backbone, contract


def test_subjects_follow_the_wire_contract() -> None:
    assert backbone.normalized_filter("kc") == "$MQTT.msgs." + contract.normalized_subscription("kc").replace(
        "/", ".").replace("+", "*")
    assert backbone.platform_filter("kc") == "$MQTT.msgs.kc.v1._platform.>"
    assert backbone.device_telemetry_filter("kc") == "$MQTT.msgs.kc.v1.*.*.*.telemetry"
    topic = contract.deadletter_topic("kc", "gateway", contract.Reason.MALFORMED_JSON)
    assert backbone.subject_to_mqtt_topic(backbone.subject_for_topic(topic)) == topic


@pytest.mark.io  # starts nats-server processes
def test_cli_up_status_down(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KC_STATE_DIR", str(tmp_path / ".kc"))
    try:
        assert localnats.main(["up"]) == 0
        out = capsys.readouterr().out
        assert out.count('"node"') == 3 and "KC_BACKBONE__SERVERS" in out
        c = localnats._load(localnats.load_settings())
        assert c is not None and all(port_open(n.host, n.mqtt_port) for n in c.nodes)
        assert localnats.main(["status"]) == 0
    finally:
        localnats.main(["down"])
    assert not any(n.pid() for n in c.nodes)
    assert localnats.main(["status"]) == 1
