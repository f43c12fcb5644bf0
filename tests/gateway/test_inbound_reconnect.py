"""The devices' broker restarts: the gateway reconnects on both client paths, counts it, and the
paho path waits full-jitter draws of kotacerdas.backoff (not paho's own unjittered ladder)."""

from __future__ import annotations

import time

import pytest

from kotacerdas import contract
from kotacerdas.backoff import Backoff
from kotacerdas.mqtt import connect, make_client, wait_published
from kotacerdas.mqttwire import RECONNECT_CAP_S

from gateway.registry import Registry
from gateway.service import Gateway
from tests.conftest import mqtt_for
from tests.gateway.helpers import devices, good_fields, wait_for


class _Recording(Backoff):
    def __init__(self) -> None:
        super().__init__(0.5, RECONNECT_CAP_S)
        self.waits: list[float] = []

    def delay(self) -> float:
        d = super().delay()
        self.waits.append(d)
        return d


def _publish(mqtt, seq: int) -> None:
    c = make_client(mqtt)
    connect(c, mqtt)
    topic = contract.telemetry_topic(mqtt.topic_root, "depok", "air", "air-0")
    wait_published([c.publish(topic, contract.encode_telemetry(int(time.time() * 1000) - 1000 + seq, seq,
                                                               good_fields("air")), qos=1)])
    c.disconnect()
    c.loop_stop()


@pytest.mark.parametrize("client", ["paho", "wire"])
def test_devices_broker_restart_is_reconnected_and_counted(settings, private_broker, client):
    broker = private_broker()
    settings.mqtt = mqtt_for(broker, settings.mqtt.topic_root)
    settings.gateway.mqtt_client = client
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    gw = Gateway(settings)
    rec = gw.inbound_backoff = _Recording()
    gw.start()
    def stored() -> float | None:
        return gw.metrics.registry.get_sample_value("kc_gateway_stored_total", {"channel": contract.CH_TELEMETRY})

    def reconnects() -> float | None:
        return gw.metrics.registry.get_sample_value("kc_gateway_inbound_reconnects_total")

    try:
        _publish(settings.mqtt, 0)
        assert wait_for(lambda: stored() == 1)
        assert reconnects() == 0
        broker.stop()
        assert wait_for(lambda: not gw.inbound_connected, timeout=15)
        broker.start()
        assert wait_for(lambda: gw.inbound_connected and reconnects() == 1, timeout=30)
        _publish(settings.mqtt, 1)  # subscribed again: a reading after the restart is stored
        assert wait_for(lambda: stored() == 2)
        if client == "paho":
            # one draw per wait, each inside the policy's cap; reset once connected again
            assert rec.waits and all(0.0 <= w <= RECONNECT_CAP_S for w in rec.waits), rec.waits
            assert rec.attempt == 0
        else:
            assert rec.waits == []  # the wire client keeps its own backoff (same numbers)
    finally:
        gw.stop()
