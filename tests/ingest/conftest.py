"""Ingest tests leave no persistent MQTT sessions behind on the shared broker."""

from __future__ import annotations

import pytest

from kotacerdas.mqtt import connect, make_client


@pytest.fixture(autouse=True)
def _forget_ingest_sessions(request):
    # fetched before the test so this teardown runs while `settings` still exists
    s = request.getfixturevalue("settings") if "settings" in request.fixturenames else None
    yield
    if s is None:
        return
    base = s.ingest.client_id
    for cid in (base, f"{base}-w0", f"{base}-w1"):
        try:
            c = make_client(s.mqtt, cid, clean=True)  # clean start + expiry 0 discards the session
            connect(c, s.mqtt, timeout_s=5)
            c.disconnect()
            c.loop_stop()
        except (OSError, TimeoutError, ConnectionError):
            pass
