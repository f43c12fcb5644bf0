"""Against the real local Mosquitto: what the simulator publishes arrives, at the rate asked for."""

import json
import threading
import time

import pytest

from kotacerdas import contract
from kotacerdas.mqtt import connect, make_client

from simulators.fleet import device_records
from simulators.runner import Options, read_dry_run, replay, simulate

from tests.waiting import subscribed

from .helpers import small_scenario


class Collector:
    def __init__(self, settings, topic):
        self.msgs = []
        self.lock = threading.Lock()
        self.c = make_client(settings.mqtt, f"t-sub-{settings.mqtt.topic_root}")
        self.c.on_message = self.on_message
        connect(self.c, settings.mqtt)
        subscribed(self.c, topic)

    def on_message(self, client, userdata, msg):
        with self.lock:
            self.msgs.append((time.monotonic(), msg.topic, bytes(msg.payload), msg.retain))

    def telemetry(self):
        with self.lock:
            return [m for m in self.msgs if m[1].endswith("/telemetry")]

    def wait_for(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.telemetry()) < n:
            time.sleep(0.05)
        return self.telemetry()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.parametrize("qos", [0, 1])
def test_run_publishes_every_message_at_the_target_rate(settings, tmp_path, qos):
    root = settings.mqtt.topic_root
    sc = small_scenario(span_s=1800, qos=qos)
    sub = Collector(settings, f"{root}/#")
    try:
        rate = 200.0
        s = simulate(sc, settings, Options(rate=rate, summary=tmp_path / "s.json", labels=tmp_path / "l.jsonl",
                                           progress=False))
        got = sub.wait_for(s["sent"])
    finally:
        sub.close()
    assert s["errors"] == 0
    assert len(got) == s["sent"] == sum(s["sent_by_kind"].values())
    assert s["sent"] == sum(s["good_by_kind"].values()) + sum(s["bad_by_type"].values())
    # paced: the publish span matches sent / rate within 15 %
    span = got[-1][0] - got[0][0]
    assert span == pytest.approx((s["sent"] - 1) / rate, rel=0.15)
    assert s["rate"] == pytest.approx(rate, rel=0.15)
    now = int(time.time() * 1000)
    good = 0
    for _, topic, payload, _ in got:
        r = contract.validate_telemetry(topic, payload, now, root=root)
        good += bool(r)
    # everything the contract can judge: good ones pass; duplicates/unknown devices are the gateway's to refuse
    assert good == sum(s["good_by_kind"].values()) + s["bad_by_type"]["duplicate"] + s["bad_by_type"]["unknown_device"]
    saved = json.loads((tmp_path / "s.json").read_text())
    assert set(saved) >= {"sent", "sent_by_kind", "good_by_kind", "bad_by_type", "errors", "duration_s", "rate"}
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) > 10


def test_births_and_last_will_on_status_topics(settings):
    root = settings.mqtt.topic_root
    sc = small_scenario(span_s=1800, faults={"offline": 1})
    sub = Collector(settings, f"{root}/v1/+/+/+/status")
    try:
        s = simulate(sc, settings, Options(rate=400, progress=False))
        deadline = time.monotonic() + 10
        n_dev = len(device_records(sc))
        while time.monotonic() < deadline:
            with sub.lock:
                states = [json.loads(p)["state"] for _, _, p, _ in sub.msgs]
            if states.count("offline") >= 1 and states.count("online") >= n_dev + 1:
                break
            time.sleep(0.05)
    finally:
        sub.close()
    assert s["status_sent"] == n_dev + 2
    assert states.count("offline") == 1, states  # fired by the broker: the device vanished without DISCONNECT
    assert states.count("online") == n_dev + 1  # births plus the device coming back


def test_dry_run_then_replay_publishes_the_same_payloads(settings, tmp_path):
    root = settings.mqtt.topic_root
    sc = small_scenario(span_s=1200)
    f = tmp_path / "dry.jsonl"
    s = simulate(sc, settings, Options(dry_run=f, progress=False))
    recorded = read_dry_run(f)
    tele = [m for m in recorded if m.topic.endswith("/telemetry")]
    assert len(tele) == s["sent"] and all(m.topic.startswith(root + "/") for m in recorded)
    sub = Collector(settings, f"{root}/v1/+/+/+/telemetry")
    try:
        r = replay(f, settings, qos=1, rate=2000, progress=False)
        got = sub.wait_for(len(tele))
    finally:
        sub.close()
    assert r["errors"] == 0 and r["sent"] == len(tele)
    assert [p for _, _, p, _ in got] == [m.payload for m in tele]  # same bytes, same order (non-UTF-8 ones too)


@pytest.mark.parametrize("qos", [0, 1])
def test_broker_restart_mid_run_is_counted_not_fatal(settings, private_broker, qos):
    """The broker goes away for a while: the run finishes; QoS 0 losses are counted, QoS 1 is resent."""
    from tests.conftest import mqtt_for

    broker = private_broker()
    s = settings.model_copy(deep=True)
    s.mqtt = mqtt_for(broker, settings.mqtt.topic_root)
    sc = small_scenario(span_s=3600, qos=qos, faults={})
    result: dict = {}
    before = Collector(s, f"{s.mqtt.topic_root}/v1/+/+/+/telemetry")
    t = threading.Thread(target=lambda: result.update(simulate(sc, s, Options(rate=150, progress=False))))
    t.start()
    try:
        assert len(before.wait_for(20)) >= 20, "the run never started publishing"  # mid-run, not before it
    finally:
        before.close()
    broker.stop()
    time.sleep(1.5)  # the outage itself (the thing under test): the run keeps publishing into it
    broker.start()
    sub = Collector(s, f"{s.mqtt.topic_root}/v1/+/+/+/telemetry")
    try:
        t.join(timeout=60)
        assert not t.is_alive(), "the run hung after the broker came back"
        got = sub.telemetry()
    finally:
        sub.close()
    assert result["sent"] + result["errors"] >= 600
    assert len(got) > 50  # publishing resumed after the restart
    if qos == 0:
        assert result["errors"] > 0  # publishes while the broker was down are lost, and reported
    else:
        assert result["errors"] == 0 and result["sent"] >= 600  # kept by paho, sent after the reconnect, acked
