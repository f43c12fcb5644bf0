"""The one typed settings object for every Kota Cerdas service.

Sources, highest priority first: constructor arguments, environment variables
(``KC_`` prefix, ``__`` between nesting levels, e.g. ``KC_INFLUX__URL``), a TOML
file (``KC_CONFIG`` or ``./kotacerdas.toml``), then the defaults below.

Nothing else in the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kotacerdas import brokerconf

# The local stack's ports: deliberately not the system defaults (1883/8086) so the
# project's own broker and database never collide with a distribution's services.
DEFAULT_MQTT_PORT = 11883
DEFAULT_INFLUX_PORT = 18086


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = DEFAULT_MQTT_PORT
    username: str | None = None
    password: SecretStr | None = None
    tls_ca: Path | None = None
    # Root of every topic (docs/wire-contract.md). Tests give each run its own root.
    topic_root: str = "kc"
    keepalive_s: int = 30
    qos: int = 1


class InfluxSettings(BaseModel):
    url: str = f"http://127.0.0.1:{DEFAULT_INFLUX_PORT}"
    database: str = "kotacerdas"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = 10.0


class BackboneSettings(BaseModel):
    """The clustered backbone (NATS JetStream with MQTT, kotacerdas/backbone.py); off = Mosquitto only."""

    # NATS client URLs of the cluster's nodes; a worker reconnects to any of them
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # messages one worker fetches at once (one InfluxDB write per city per fetch)
    fetch_batch: int = 2000
    # un-acked messages the whole consumer group may hold; JetStream stops handing out more
    max_ack_pending: int = 20000
    # a message not acked this long after delivery goes to another worker (a dead worker's share)
    ack_wait_s: float = 30.0
    # a batch whose InfluxDB is down is NAKed and offered again after this delay
    nak_delay_s: float = 2.0
    # pause between reconnect attempts after a node is lost (nats-py reconnect_time_wait, whose own
    # default of 2 s would hold a worker idle that long while the other nodes are up)
    reconnect_wait_s: float = 0.25


class ContractSettings(BaseModel):
    max_payload_bytes: int = 4096
    # Device clocks: how far ahead/behind "now" a reading may be stamped.
    max_future_s: float = 300.0
    max_age_s: float = 7 * 24 * 3600.0


class GatewaySettings(BaseModel):
    registry_path: Path = Path(".kc/gateway/registry.sqlite")
    queue_path: Path = Path(".kc/gateway/queue.sqlite")
    # Accept telemetry from devices not in the registry (demo convenience only).
    auto_register: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 18080
    admin_token: SecretStr = SecretStr("change-me")
    stale_after_intervals: int = 3
    upstream: MqttSettings | None = None
    # MQTT client id of the persistent session; None = "kc-gateway-<topic_root>"
    client_id: str | None = None
    # SQLite synchronous=FULL: survive power loss, not only a process crash (slower)
    durable_fsync: bool = False
    # "wire": the batching MQTT 3.1.1 client (kotacerdas/mqttwire.py) for the devices' broker and
    # (MQTT 5) the upstream; "paho": paho-mqtt, used anyway when that broker needs TLS
    mqtt_client: Literal["wire", "paho"] = "wire"
    # messages validated and committed per SQLite transaction, at most
    batch_max: int = Field(default=5000, ge=1)
    # once a message is waiting, wait this long for more before committing a smaller batch (fewer
    # commits, upstream windows and messages per reading when devices trickle in; 0 = take at once)
    batch_linger_s: float = Field(default=0.02, ge=0)
    # messages read from the devices' broker and not yet committed; when full the gateway stops
    # reading (the broker keeps the rest: needs max_inflight_messages >= this, see stack.py)
    max_buffered: int = Field(default=20000, ge=1)
    # outbox rows (waiting for the upstream broker) at which the gateway stops taking input
    max_outbox: int = Field(default=2_000_000, ge=1)
    # outbox rows published to the upstream per window (one write; deleted after every PUBACK) ...
    forward_window: int = Field(default=5000, ge=1)
    # ... and payload bytes, at most (a window ends with the row that reaches it): bounds a window of
    # batch messages (forward_batch) to a few MiB instead of thousands of batches
    forward_window_bytes: int = 4 * 1024 * 1024
    # readings per upstream message: 1 = one message per reading ({root}/v1/_platform/norm/{city}/{kind}/{device});
    # more = batches of up to this many readings of one city and kind (.../norm/{city}/{kind}/_batch,
    # contract.encode_normalized_batch), so the upstream broker, the outbox and ingest pay per batch.
    # Default 500: a third less CPU for the whole pipeline (docs/benchmarks.md); consumers of the
    # normalised topics must take both forms (contract.decode_normalized_batch)
    forward_batch: int = Field(default=500, ge=1)
    # ... and payload bytes per batch message, at most (a group of one city and kind is cut into
    # smaller batches when 500 readings would not fit): the provisioned broker refuses bigger packets
    # by dropping the connection (kotacerdas/brokerconf.py); raise both together or neither
    forward_batch_bytes: int = Field(default=brokerconf.BATCH_MESSAGE_BYTES, ge=4096)
    # how often last_seen/battery of active devices are re-published on devstatus
    status_refresh_s: float = 60.0
    # how often changed lifecycle states (last_seen, battery, fw, stale) are written to the registry;
    # a clean stop always writes them. A crash (kill -9, power) loses at most this many seconds of
    # lifecycle updates, never a reading: they are in the outbox before the devices are acked
    lifecycle_save_s: float = 30.0
    # off-the-shelf firmware: subset of ["tasmota", "esphome"]; prefixes go before "tele/" and the node name
    adapters: list[str] = Field(default_factory=list)
    tasmota_prefix: str = ""
    esphome_prefix: str = ""
    # Tasmota stamps local time without an offset; WIB (UTC+7) unless a device's config says otherwise
    adapter_tz_offset_s: int = 7 * 3600
    # when set, every registry change rewrites the broker's password/ACL files here (gateway provision)
    provision_dir: Path | None = None
    # ... and SIGHUPs the Mosquitto whose pid is in this file so it reloads them
    broker_pid_file: Path | None = None
    # the account a root-started Mosquitto drops to (its `user` option); provisioning as root hands
    # it the password file, ACL and TLS key, which it reads only after dropping privileges
    broker_user: str | None = "mosquitto"
    # `gateway rollout`: where it serves release files to devices (their update command's url),
    # and the base URL devices reach it at (default http://{host}:{port}/; set it behind NAT/proxy)
    rollout_http_host: str = "127.0.0.1"
    rollout_http_port: int = 18081
    rollout_public_url: str | None = None


class IngestSettings(BaseModel):
    # InfluxDB's cost per line falls with the request size (29 vs 38 us at 20,000 vs 5,000 lines)
    batch_size: int = 10000
    # below capacity a batch waits this long for company: most of the device-to-queryable latency
    # (bench/pipeline_throughput.py --rate 5000); at capacity batches fill by size first
    batch_interval_s: float = 0.25
    spool_path: Path = Path(".kc/ingest/spool")
    spool_max_bytes: int = 512 * 1024 * 1024
    client_id: str = "kc-ingest"
    # None: a plain persistent subscription (survives a broker restart). Set a group to
    # split load over several workers ($share/...); Mosquitto 2.0 does not restore shared
    # subscriptions after a broker restart, so that mode can lose messages then.
    share_group: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 18081
    raw_retention: str = "30d"
    # Flush before this many messages are un-acked: the broker stops delivering once its
    # in-flight window (Mosquitto max_inflight_messages, 40000 in our config: about 4 batches) is full.
    max_unacked: int = 10000
    # ... and when nothing has arrived for this long (a broker with a smaller window stalls
    # the stream before max_unacked is reached; this keeps it moving)
    idle_flush_s: float = 0.02
    # Bound on decoded-but-not-yet-durable messages held in memory (backpressure beyond it).
    max_buffered: int = 20000
    # InfluxDB write requests in flight at once (batches are still acknowledged in order)
    write_concurrency: int = 2
    agg_1m_retention: str = "730d"
    agg_1h_retention: str = "INF"
    stats_interval_s: float = 10.0
    # "wire": the own MQTT 3.1.1 consumer (kotacerdas/mqttwire.py: one parse pass and one callback per
    # 1 MiB read, one write per batch of PUBACKs); "paho": paho-mqtt. paho is used anyway for TLS
    # (mqtt.tls_ca) and MQTT 5 (mqtt_v5).
    mqtt_client: Literal["wire", "paho"] = "wire"
    # MQTT 3.1.1 by default: paho skips v5 property parsing (~1/3 less CPU per message,
    # docs/benchmarks.md) and Mosquitto honours $share/ there too; true = MQTT 5
    mqtt_v5: bool = False


class AnalyticsSettings(BaseModel):
    interval_s: float = 60.0
    window_s: float = 24 * 3600.0
    http_host: str = "127.0.0.1"
    http_port: int = 18082
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    alert_email_to: dict[str, str] = Field(default_factory=dict)
    webhook_attempts: int = 4
    webhook_backoff_s: float = 0.5
    # alert rules and subscriptions (YAML, validated at start); None = the shipped analytics/rules.yaml
    rules_file: Path | None = None
    # expected (suspect) ranges per deployment and how they are learned (YAML, validated at start,
    # analytics/ranges.py); None = learn each series' span from its first 14 days
    ranges_file: Path | None = None
    # failed e-mails/webhooks are retried from a durable outbox with backoff (webhook_backoff_s doubling,
    # capped at delivery_max_backoff_s) until delivered or delivery_max_attempts were made
    delivery_max_attempts: int = 12
    delivery_max_backoff_s: float = 3600.0
    # bearer token required to acknowledge alerts over the HTTP API
    admin_token: SecretStr = SecretStr("change-me")
    publish_alerts_mqtt: bool = True
    # run a pass early when normalised telemetry arrives, at most every min_pass_interval_s
    stream_trigger: bool = True
    min_pass_interval_s: float = 5.0
    # tests written beside the default alarm set (analytics/alarmset.py OPT_IN: hampel, rate_of_change,
    # drift, ewma, cusum): off by default, they only added false alarms on the simulator's scenarios
    # (docs/analytics.md, "What the service writes"); an unknown name stops the service at start
    extra_tests: list[str] = Field(default_factory=list)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 18000
    rate_limit_per_minute: int = 600
    # open-data API: seconds a dataset answer is reused (0 = query InfluxDB on every request)
    cache_ttl_s: float = 10.0
    # a station is shown offline when its last message is older than this many report intervals
    stale_after_intervals: float = 3.0
    # DCAT dataset metadata
    publisher: str = "Pemerintah Kota (Dinas Lingkungan Hidup) - Kota Cerdas open data"
    publisher_url: str | None = None
    public_url: str | None = None  # base URL the API is reached at (links in metadata); None = the request's


class RoutingSettings(BaseModel):
    """City -> InfluxDB (kotacerdas/routing.py). A city not listed uses ``Settings.influx``.

    TOML: ``[routing.cities.bogor] url = "http://10.0.0.12:8086"`` (database etc. as in [influx]).
    """

    cities: dict[str, InfluxSettings] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KC_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    city: str = "depok"
    state_dir: Path = Path(".kc")
    # the device list (`kotacerdas simulate devices` / gateway registry export format: a JSON array of
    # {"device","kind","city","district","lat","lon"}) that gives stations their coordinates
    stations_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool = True
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    contract: ContractSettings = Field(default_factory=ContractSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    backbone: BackboneSettings = Field(default_factory=BackboneSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("KC_CONFIG", "kotacerdas.toml")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
            file_secret_settings,
        )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from all sources; keyword overrides win."""
    return Settings(**overrides)
