"""Fixtures shared by the in-process gateway tests (real shared Mosquitto, own topic root per test)."""

from __future__ import annotations

import pytest

from kotacerdas.mqtt import connect, make_client

from gateway.registry import Registry
from tests.gateway.helpers import Collector, devices


@pytest.fixture
def registered(settings):
    """Settings whose gateway registry holds the test fleet."""
    with Registry(settings.gateway.registry_path) as reg:
        reg.import_devices(devices())
    return settings


@pytest.fixture
def publisher(settings):
    c = make_client(settings.mqtt)
    connect(c, settings.mqtt)
    yield c
    c.disconnect()
    c.loop_stop()


@pytest.fixture
def collector(settings):
    """Everything the gateway publishes on the platform topics."""
    col = Collector(settings.mqtt, f"{settings.mqtt.topic_root}/v1/_platform/#")
    yield col
    col.close()
