"""Shared fixtures: every test talks to the real Mosquitto and the real InfluxDB.

Isolation without mocks: each test gets its own MQTT topic root and its own
InfluxDB database on the shared local stack (``kotacerdas stack up``, started here
if needed). Tests that restart or kill a broker or database start private ones
with :func:`private_broker` / :func:`private_influx` on free loopback ports.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from devtools import stack
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import InfluxSettings, MqttSettings, Settings, load_settings


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    s = load_settings()
    stack.up(s)  # idempotent: a running stack is left alone
    return s


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(base_settings: Settings, uid: str, tmp_path: Path) -> Iterator[Settings]:
    """Per-test settings: own topic root, own database, own state dir."""
    s = base_settings.model_copy(deep=True)
    s.mqtt.topic_root = f"t{uid}"
    s.influx.database = f"test_{uid}"
    s.state_dir = tmp_path / "state"
    s.gateway.registry_path = tmp_path / "state/gateway/registry.sqlite"
    s.gateway.queue_path = tmp_path / "state/gateway/queue.sqlite"
    s.ingest.spool_path = tmp_path / "state/ingest/spool"
    s.ingest.client_id = f"kc-ingest-{uid}"
    s.gateway.http_port = 0
    s.ingest.http_port = 0
    s.analytics.http_port = 0
    s.api.port = 0
    with InfluxClient(s.influx) as c:
        c.create_database()
    yield s
    with InfluxClient(s.influx) as c:
        try:
            c.drop_database(s.influx.database)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
            pass


@pytest.fixture
def influx(settings: Settings) -> Iterator[InfluxClient]:
    with InfluxClient(settings.influx) as c:
        yield c


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., stack.MosquittoProcess]]:
    """Factory: start a private Mosquitto (optionally with extra config lines)."""
    started: list[stack.MosquittoProcess] = []

    def start(extra_config: str = "", port: int | None = None, persistence: bool = True) -> stack.MosquittoProcess:
        p = port or stack.free_port()
        m = stack.MosquittoProcess(tmp_path / f"mosquitto-{p}", p, extra_config=extra_config, persistence=persistence)
        m.start()
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def private_influx(tmp_path: Path) -> Iterator[Callable[..., stack.InfluxProcess]]:
    """Factory: start a private InfluxDB on free ports (for stop/restart tests)."""
    started: list[stack.InfluxProcess] = []

    def start(port: int | None = None) -> stack.InfluxProcess:
        p = port or stack.free_port()
        ix = stack.InfluxProcess(tmp_path / f"influx-{p}", p, rpc_port=stack.free_port())
        ix.start()
        started.append(ix)
        return ix

    yield start
    for ix in started:
        ix.stop()


def mqtt_for(broker: stack.MosquittoProcess, root: str = "kc") -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_root=root)


def influx_for(ix: stack.InfluxProcess, database: str = "kotacerdas") -> InfluxSettings:
    return InfluxSettings(url=ix.url, database=database)


# --- the `unit` marker: pure tests, no broker, no database, no subprocess ------------------------
#
# A test is `unit` unless it asks for one of the I/O fixtures below, carries a slow marker, or is
# marked `io` explicitly (a test that opens a socket or starts a process without a fixture).
# `pytest -m unit` is the fast first step of scripts/test.sh. The marker is enforced, not trusted:
# a unit test that connects a socket or spawns a process fails with a message saying to mark it `io`.

IO_FIXTURES = frozenset({"base_settings", "settings", "influx", "private_broker", "private_influx"})
NOT_UNIT_MARKERS = ("io", "long", "soak", "micropython")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) for m in NOT_UNIT_MARKERS):
            continue
        if IO_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            continue
        item.add_marker(pytest.mark.unit)


class NotAUnitTest(AssertionError):
    """A test marked `unit` reached for the network or a subprocess."""


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("unit") is None:
        return
    import socket
    import subprocess

    def refuse(what: str) -> Callable[..., None]:
        def _refuse(*_a: object, **_k: object) -> None:
            raise NotAUnitTest(f"{request.node.nodeid}: a `unit` test {what}; mark it `@pytest.mark.io`")

        return _refuse

    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        refuse("opened a network connection")()

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("opened a network connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a subprocess"))
