"""The error tree decides drop / retry / fatal; contract and transport failures raise its classes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from analytics import delivery
from analytics.alerts import Alert
from kotacerdas import contract, device_config, measurements
from kotacerdas.catalogue import load_catalogue
from kotacerdas.errors import ContractError, Disposition, TransportError, mqtt_connack_disposition
from kotacerdas.mqttwire import ProtocolError


def test_transport_error_disposition_follows_status_or_protocol_refusal() -> None:
    assert TransportError("no answer").disposition is Disposition.RETRY
    assert TransportError("x", status=503).disposition is Disposition.RETRY
    assert TransportError("x", status=400).disposition is Disposition.DROP
    assert TransportError("x", status=403).disposition is Disposition.FATAL
    assert TransportError("x", status=400, refusal=Disposition.RETRY).disposition is Disposition.RETRY
    assert isinstance(TransportError("x"), ConnectionError) and str(TransportError("boom", status=500)) == "boom"
    assert ProtocolError("bad packet").disposition is Disposition.RETRY


def test_mqtt_connack_codes() -> None:
    # 3.1.1: only "server unavailable" is worth retrying as is; credentials / client id are ours to fix
    assert [mqtt_connack_disposition(c, mqtt5=False) for c in (1, 2, 3, 4, 5)] == [
        Disposition.FATAL, Disposition.FATAL, Disposition.RETRY, Disposition.FATAL, Disposition.FATAL]
    assert mqtt_connack_disposition(0x88, mqtt5=True) is Disposition.RETRY  # server unavailable
    assert mqtt_connack_disposition(0x89, mqtt5=True) is Disposition.RETRY  # server busy
    assert mqtt_connack_disposition(0x86, mqtt5=True) is Disposition.FATAL  # bad user name or password
    assert mqtt_connack_disposition(0x87, mqtt5=True) is Disposition.FATAL  # not authorised


def test_contract_failures_are_contract_errors_and_dropped() -> None:
    cat = load_catalogue()
    raised = []
    for bad in (lambda: contract.device_topic("kc", "Depok!", "air", "d1", "telemetry"),
                lambda: contract.encode_cmd("id", "format_disk", {}, 1),
                lambda: contract.encode_status("asleep", 1),
                lambda: device_config.validate({"interval_s": 1}, cat["air"]),
                lambda: measurements.ALERTS.line({"no_such_tag": "x"}, {"x": 1.0}, 0)):
        with pytest.raises(ContractError) as info:
            bad()
        raised.append(info.value)
    assert all(e.disposition is Disposition.DROP and isinstance(e, ValueError) for e in raised)


class _Status(BaseHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - the path is the status to answer with
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(int(self.path.strip("/")))
        self.end_headers()


@pytest.fixture
def status_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.io  # a loopback HTTP server
def test_webhook_gives_up_only_when_the_error_tree_says_drop(status_server: str) -> None:
    a = Alert("a1", "bin_fire", "bin-1", "waste", "critical", "open", 70.0, 1, 1, None, False, None, "t", "t")
    outcome = {code: delivery.webhook_attempt(f"{status_server}/{code}", None, a, timeout_s=5)[:2]
               for code in (204, 400, 410, 401, 403, 408, 429, 503)}
    assert outcome == {204: (True, False), 400: (False, True), 410: (False, True), 401: (False, False),
                       403: (False, False), 408: (False, False), 429: (False, False), 503: (False, False)}
    # nothing listening: a transport failure, retried
    assert delivery.webhook_attempt("http://127.0.0.1:9/x", None, a, timeout_s=2)[:2] == (False, False)
