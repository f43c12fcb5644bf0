"""Retention policies and continuous queries, created (idempotently) at start-up.

- ``raw`` (or ``settings.influx.retention_policy``): DEFAULT policy, kept for
  ``settings.ingest.raw_retention``; everything is written here.
- ``agg_1m`` / ``agg_1h``: per-kind 1-minute and 1-hour aggregates kept for
  ``agg_1m_retention`` / ``agg_1h_retention`` (years), filled by continuous queries.
  Each catalogue field ``f`` becomes ``f`` (mean), ``f_min``, ``f_max``; plus
  ``battery`` (mean) and ``n`` (number of readings). Tags are kept (``GROUP BY *``).

InfluxQL reference (1.x, "Continuous Queries" and "Database management"):
``CREATE RETENTION POLICY <rp> ON <db> DURATION <d> REPLICATION 1 [DEFAULT]``,
``CREATE CONTINUOUS QUERY <cq> ON <db> BEGIN SELECT ... INTO <db>.<rp>.<m> ... GROUP BY time(<i>), * END``.
"""

from __future__ import annotations

import logging

from kotacerdas import measurements as M
from kotacerdas.catalogue import Catalogue, Kind
from kotacerdas.influx import InfluxClient
from kotacerdas.settings import Settings

log = logging.getLogger("ingest.schema")

AGGREGATES = (("agg_1m", "1m"), ("agg_1h", "1h"))


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def raw_policy(settings: Settings) -> str:
    return settings.influx.retention_policy or "raw"


def ensure_retention_policy(client: InfluxClient, db: str, name: str, duration: str, *, default: bool = False) -> None:
    existing = {row[0] for s in client.series(f"SHOW RETENTION POLICIES ON {_q(db)}", database=db) for row in s.values}
    verb = "ALTER" if name in existing else "CREATE"
    repl = "" if verb == "ALTER" else " REPLICATION 1"
    client.query(
        f"{verb} RETENTION POLICY {_q(name)} ON {_q(db)} DURATION {duration}{repl}{' DEFAULT' if default else ''}",
        database=db,
    )


def continuous_query(db: str, raw: str, kind: Kind, rp: str, interval: str) -> tuple[str, str]:
    """(name, statement) of one kind's aggregate at one resolution; fields derived from the catalogue."""
    *terms, count = M.aggregate_terms(kind.field_names)
    sel = [*terms, 'mean("battery") AS "battery"', count]
    name = f"cq_{kind.measurement}_{interval}"
    m = _q(kind.measurement)
    stmt = (
        f"CREATE CONTINUOUS QUERY {_q(name)} ON {_q(db)} BEGIN SELECT {', '.join(sel)} "
        f"INTO {_q(db)}.{_q(rp)}.{m} FROM {_q(db)}.{_q(raw)}.{m} GROUP BY time({interval}), * END"
    )
    return name, stmt


def setup(client: InfluxClient, settings: Settings, catalogue: Catalogue) -> list[str]:
    """Create database, policies and CQs; returns the CQ names. Safe to run at every start."""
    db = settings.influx.database
    client.create_database(db)
    raw = raw_policy(settings)
    ensure_retention_policy(client, db, raw, settings.ingest.raw_retention, default=True)
    durations = {"agg_1m": settings.ingest.agg_1m_retention, "agg_1h": settings.ingest.agg_1h_retention}
    for rp, _ in AGGREGATES:
        ensure_retention_policy(client, db, rp, durations[rp])
    existing = {row[0] for s in client.series("SHOW CONTINUOUS QUERIES", database=db) if s.name == db for row in s.values}
    names = []
    for kind in catalogue:
        for rp, interval in AGGREGATES:
            name, stmt = continuous_query(db, raw, kind, rp, interval)
            # CQs cannot be altered; recreating keeps them in step with the catalogue.
            if name in existing:
                client.query(f"DROP CONTINUOUS QUERY {_q(name)} ON {_q(db)}", database=db)
            client.query(stmt, database=db)
            names.append(name)
    log.info("retention policies and continuous queries ready", extra={"database": db, "cqs": len(names)})
    return names
