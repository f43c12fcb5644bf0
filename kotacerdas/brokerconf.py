"""Mosquitto settings the platform's delivery guarantees rest on, in one place for the development
stack (devtools/stack.py) and the operator's provisioned broker (gateway/provision.py).

Why each (mosquitto.conf(5), Mosquitto 2.0):
- ``max_queued_messages`` defaults to 1000 per client: beyond that Mosquitto silently DROPS QoS 1
  messages for a subscriber that is away or slow. The gateway's backpressure (a full inbox stops
  reading, docs/gateway.md) and a gateway restart both leave the surplus in the gateway's persistent
  session, so the queue must hold minutes of a city's traffic, not 1000 messages (measured on the
  provisioned config without this line: 3,000 published while the gateway was away, 1,000 delivered).
  ``max_queued_bytes 0``: the count is the only bound.
- ``max_inflight_messages`` defaults to 20: ingest acknowledges a whole InfluxDB batch at once
  (``ingest.max_unacked`` 10,000, two writes in flight) and the gateway a whole commit, so the broker
  must let several batches be in flight (with 1000, ingest's batches stayed at 500 lines and
  InfluxDB's per-request cost dominated: docs/benchmarks.md, "Ingest").
- persistence with a short autosave: sessions and their queues survive a broker restart (the
  default saves every 30 min, and only with ``persistence true``).
- ``persistent_client_expiration``: a device or service gone for two weeks stops holding a queue.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BATCH_MESSAGE_BYTES", "MAX_PACKET_BYTES", "SESSION_LINES", "persistence_lines"]

# ``max_packet_size`` of the provisioned broker: far above the contract's 4 KiB so the gateway still
# sees (and dead-letters) oversized telemetry, but a client cannot push megabytes through the broker.
# Mosquitto drops the CONNECTION of a client that sends a bigger packet (the gateway's too).
MAX_PACKET_BYTES = 65536
# payload bytes of one batch message the gateway sends upstream (gateway.forward_batch_bytes
# default): fits that limit with room for the fixed header, topic and MQTT 5 properties. Without
# it, 500 readings of ~330 bytes (165 KB) were refused by the provisioned broker, the forwarder
# reconnected and resent the same row forever, and nothing reached ingest.
BATCH_MESSAGE_BYTES = MAX_PACKET_BYTES - 1024

SESSION_LINES: tuple[str, ...] = (
    "max_queued_messages 1000000",
    "max_queued_bytes 0",
    "max_inflight_messages 40000",
    "persistent_client_expiration 14d",
)


def persistence_lines(location: Path) -> list[str]:
    """Persistence in ``location`` (a directory the broker's account can write), saved every 5 s.
    Only for a file given to ``mosquitto -c``: a distribution's main config (Debian:
    /etc/mosquitto/mosquitto.conf) sets its own ``persistence_location``, and a second one is an error."""
    return ["persistence true", f"persistence_location {location}/", "autosave_interval 5",
            "autosave_on_changes false"]
