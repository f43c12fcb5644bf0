"""The gateway's per-run ledger: every device message received is stored, rejected with a
reason, or ignored (an empty payload clearing a retained status), so

    received = stored + sum(rejected by reason) + ignored

holds after every committed batch. Read from the service's own Prometheus counters, so the
``/ledger`` endpoint, ``kotacerdas gateway ledger`` and ``/metrics`` can never disagree.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def _by_label(registry: CollectorRegistry, metric: str, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for fam in registry.collect():
        for s in fam.samples:
            if s.name == metric and label in s.labels and s.value:
                out[s.labels[label]] = int(s.value)
    return out


def ledger(registry: CollectorRegistry) -> dict:
    """``{"received": {channel: n}, "stored": {channel: n}, "rejected": {reason: n}, "ignored": n,
    "totals": {...}, "balanced": bool}`` since the gateway started."""
    received = _by_label(registry, "kc_gateway_received_total", "channel")
    stored = _by_label(registry, "kc_gateway_stored_total", "channel")
    rejected = _by_label(registry, "kc_gateway_rejected_total", "reason")
    ignored = int(registry.get_sample_value("kc_gateway_ignored_total") or 0)
    totals = {"received": sum(received.values()), "stored": sum(stored.values()),
              "rejected": sum(rejected.values()), "ignored": ignored}
    return {"received": received, "stored": stored, "rejected": rejected, "ignored": ignored, "totals": totals,
            "balanced": totals["received"] == totals["stored"] + totals["rejected"] + totals["ignored"]}
