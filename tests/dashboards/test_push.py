"""``dashboards push`` against a fake Grafana HTTP API on loopback (Grafana itself is not installable here)."""

from __future__ import annotations

import pytest

from dashboards.cli import main as cli_main
from dashboards.definitions import UID, all_dashboards
from dashboards.provisioning import datasource
from dashboards.push import GrafanaError, push
from kotacerdas.errors import Disposition, TransportError

from .fake_grafana import FakeGrafana


pytestmark = pytest.mark.io  # subprocesses and loopback servers: not `unit`

def _writes(fg: FakeGrafana) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in fg.requests if m != "GET"]


def test_push_creates_then_is_idempotent():
    ds = datasource("http://influxdb:8086", "kotacerdas")
    with FakeGrafana() as fg:
        first = push(fg.url, fg.token, all_dashboards(), ds)
        assert "datasource kc-influxdb: created" in first and "folder kotacerdas: created" in first
        assert set(fg.dashboards) == set(UID.values())
        stored = fg.dashboards["kc-air"]["dashboard"]
        assert stored["timezone"] == "Asia/Jakarta" and fg.dashboards["kc-air"]["folderUid"] == "kotacerdas"
        post = next(b for m, p, b in fg.requests if p == "/api/dashboards/db")
        assert post["overwrite"] is True and post["dashboard"]["id"] is None
        assert all(h.startswith("dashboard ") or h.startswith(("datasource", "folder")) for h in first)
        n_writes = len(_writes(fg))
        assert n_writes == 1 + 1 + len(UID)

        second = push(fg.url, fg.token, all_dashboards(), ds)
        assert all(line.endswith("unchanged") for line in second), second
        assert len(_writes(fg)) == n_writes  # nothing re-posted
        assert all(v == 1 for v in fg.versions.values())

        # a changed datasource URL is updated in place (PUT by uid), dashboards untouched
        third = push(fg.url, fg.token, all_dashboards(), datasource("http://influx2:8086", "kotacerdas"))
        assert "datasource kc-influxdb: updated" in third
        assert fg.datasources["kc-influxdb"]["url"] == "http://influx2:8086" and fg.datasources["kc-influxdb"]["id"] == 1
        assert _writes(fg)[-1] == ("PUT", "/api/datasources/uid/kc-influxdb")


def test_bad_token_is_a_clear_error_and_exit_code(capsys):
    with FakeGrafana() as fg:
        try:
            push(fg.url, "wrong", all_dashboards(), datasource("http://x:8086", "kc"))
            raise AssertionError("push with a wrong token succeeded")
        except GrafanaError as exc:
            assert "401" in str(exc) and "token" in str(exc)
            # our credentials: FATAL, so not retried (kotacerdas.errors decides, not a status check here)
            assert exc.disposition is Disposition.FATAL and isinstance(exc, TransportError)
            assert len(fg.requests) == 1, fg.requests
        assert cli_main(["push", "--url", fg.url, "--token", "wrong"]) == 1
        assert "401" in capsys.readouterr().err
        assert not fg.dashboards


def test_push_retries_a_starting_grafana_and_cli_reports():
    with FakeGrafana(fail_first=2) as fg:
        assert cli_main(["push", "--url", fg.url, "--token", fg.token, "--influx-url", "http://influxdb:8086"]) == 0
        assert [c for c in fg.requests[:2]] == [fg.requests[0]] * 2  # same request retried
        assert set(fg.dashboards) == set(UID.values())
        assert fg.datasources["kc-influxdb"]["url"] == "http://influxdb:8086"
