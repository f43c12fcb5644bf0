"""The gateway's HTTP API (FastAPI, OpenAPI docs at /docs): registry, device status, config, health.

Reads are open on the loopback/ops network; every change (register, import,
decommission, rotate credentials, config push, command) needs the admin token as
``Authorization: Bearer <token>``: without it the answer is 401, with a wrong one 403.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from kotacerdas import contract, device_config
from kotacerdas.errors import ContractError
from kotacerdas.runtime import ops_router

from gateway.ledger import ledger
from gateway.registry import Registry, RegistryError

if TYPE_CHECKING:
    from gateway.service import Gateway


class DeviceIn(BaseModel):
    device: str = Field(examples=["air-depok-001"])
    kind: str = Field(examples=["air"])
    city: str = Field(examples=["depok"])
    district: str = "unknown"
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    department: str | None = None
    installed: str | None = Field(default=None, description="installation date, ISO 8601")
    calibration: dict[str, Any] | None = None


CONFIG_EXAMPLE = {"interval_s": 300, "thresholds": {"fill": [0, 80]}, "calibration": {"full_cm": 25.0},
                  "tasmota_map": {"SR04.Distance": "distance"}, "tz_offset_s": 28800}


if TYPE_CHECKING:
    Command = str  # mypy cannot read a Literal built from a tuple; at run time it is the exact set
else:
    # the commands a device understands, from the contract: FastAPI refuses others with 422 and lists
    # them as the OpenAPI enum
    Command = Literal[contract.COMMANDS]


class CommandIn(BaseModel):
    # update: args url/version/sha256/signature (contract.validate_update_args); `gateway rollout` sends
    # them in throttled waves, this endpoint sends one
    cmd: Command
    args: dict[str, Any] = Field(default_factory=dict)


def make_app(
    registry: Registry, admin_token: str, gateway: "Gateway | None" = None,
    on_change: Callable[[], object] | None = None,
) -> FastAPI:
    """``on_change`` runs after every credential-relevant registry change (re-provisions the broker)."""
    app = FastAPI(title="Kota Cerdas gateway", version="1",
                  description="Device registry, device lifecycle, config push and health of one gateway.")
    bearer = HTTPBearer(auto_error=False)
    lock = threading.Lock()

    def admin(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if cred is None:
            raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(cred.credentials.encode(), admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    def changed() -> None:
        if gateway:
            gateway.reload_devices(force=True)
        if on_change:
            on_change()

    def get_device(device: str):
        d = registry.get(device)
        if d is None:
            raise HTTPException(404, f"no device {device!r}")
        return d

    app.include_router(ops_router(gateway.metrics.registry if gateway else CollectorRegistry(),
                                  gateway.ready if gateway else (lambda: {"registry": True})))

    @app.get("/ledger", tags=["health"])
    def read_ledger() -> dict:
        """Messages received since start = stored + rejected by reason + ignored (see gateway.ledger)."""
        if gateway is None:
            raise HTTPException(503, "the ledger needs the running gateway")
        return ledger(gateway.metrics.registry)

    @app.get("/devices", tags=["registry"])
    def list_devices(kind: str | None = None, city: str | None = None, status: str | None = None) -> list[dict]:
        out = []
        for d in registry.all():
            if (kind and d.kind != kind) or (city and d.city != city) or (status and d.status != status):
                continue
            out.append(d.public())
        return out

    @app.get("/devices/{device}", tags=["registry"])
    def read_device(device: str) -> dict:
        d = get_device(device).public()
        d["lifecycle"] = gateway.device_state(device) if gateway else None
        return d

    @app.get("/devices/{device}/status", tags=["lifecycle"])
    def device_status(device: str) -> dict:
        d = get_device(device)
        st = gateway.device_state(device) if gateway else None
        return st or {"v": 1, "device": d.device, "kind": d.kind, "city": d.city, "district": d.district,
                      "state": "offline", "stale": False, "last_seen": None, "battery": None, "fw": None}

    @app.get("/status", tags=["lifecycle"])
    def all_status() -> list[dict]:
        if gateway is None:
            return []
        with gateway._lock_lifecycle:
            return [s.to_dict() for s in gateway.lifecycle.devices.values()]

    @app.post("/devices", status_code=201, tags=["registry"], dependencies=[Depends(admin)])
    def register(body: DeviceIn, response: Response, update: bool = False) -> dict:
        """Register a new device (201). An existing id is a 409 unless ``?update=true`` (then 200:
        metadata replaced, a decommissioned device re-activated, credentials kept)."""
        try:
            with lock:
                existed = registry.get(body.device) is not None
                if existed and not update:
                    raise HTTPException(409, f"device {body.device!r} exists; use ?update=true to change it")
                d, pw = registry.register(body.device, body.kind, body.city, district=body.district, lat=body.lat,
                                          lon=body.lon, department=body.department, installed=body.installed,
                                          calibration=body.calibration)
        except RegistryError as exc:
            raise HTTPException(422, str(exc)) from exc
        changed()
        if existed:
            response.status_code = 200
        return {**d.public(), "mqtt_username": d.device, "mqtt_password": pw}

    @app.post("/devices/import", tags=["registry"], dependencies=[Depends(admin)])
    def import_devices(body: list[DeviceIn]) -> dict:
        try:
            with lock:
                n, pws = registry.import_devices(b.model_dump() for b in body)
        except RegistryError as exc:
            raise HTTPException(422, str(exc)) from exc
        changed()
        return {"imported": n, "credentials": pws}

    @app.post("/devices/{device}/decommission", tags=["registry"], dependencies=[Depends(admin)])
    def decommission(device: str) -> dict:
        get_device(device)
        with lock:
            d = registry.decommission(device)
        changed()
        return d.public()

    @app.delete("/devices/{device}", tags=["registry"], dependencies=[Depends(admin)])
    def delete(device: str) -> dict:
        """Decommission (the record stays for the audit trail; its data is refused from now on)."""
        return decommission(device)

    @app.post("/devices/{device}/rotate-credentials", tags=["registry"], dependencies=[Depends(admin)])
    def rotate(device: str) -> dict:
        get_device(device)
        try:
            with lock:
                d, pw = registry.rotate_credentials(device)
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from exc
        changed()
        return {**d.public(), "mqtt_username": d.device, "mqtt_password": pw}

    @app.put("/devices/{device}/config", tags=["config"], dependencies=[Depends(admin)])
    def put_config(device: str, body: Annotated[Any, Body(examples=[CONFIG_EXAMPLE])]) -> dict:
        """Replace the device's config. ``interval_s``/``thresholds``/``calibration`` are checked with the
        firmware's own rules and published retained; ``tasmota_map``/``esphome_map``/``tz_offset_s``
        stay with the gateway's adapters. Anything the firmware would refuse is a 422 and not published."""
        d = get_device(device)
        try:
            cfg = device_config.validate(body, registry.catalogue[d.kind])
        except device_config.ConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        with lock:
            d = registry.set_config(device, cfg)
        published = bool(gateway and device_config.device_part(cfg))
        if gateway:
            gateway.reload_devices(force=True)
            if published:
                gateway.publish_to_device(d, contract.CH_CONFIG, gateway.config_payload(cfg), True)
        return {"device": device, "config": cfg, "published": published}

    @app.patch("/devices/{device}/config", tags=["config"], dependencies=[Depends(admin)])
    def patch_config(device: str, body: Annotated[Any, Body(examples=[{"interval_s": 120, "thresholds": {"pm25": None}}])]
                     ) -> dict:
        """Change part of the device's config: a JSON Merge Patch (RFC 7396) on the stored one (``null``
        removes a key, an object merges key by key), then checked and published as a PUT of the result."""
        d = get_device(device)
        if not isinstance(body, dict):
            raise HTTPException(422, "a merge patch of a device config must be a JSON object")
        return put_config(device, device_config.merge_patch(d.config, body))

    @app.post("/devices/{device}/cmd", status_code=202, tags=["config"], dependencies=[Depends(admin)])
    def command(device: str, body: CommandIn) -> dict:
        d = get_device(device)
        if not d.active:
            raise HTTPException(409, f"device {device!r} is decommissioned")
        cid = str(uuid.uuid4())
        if gateway is None:
            raise HTTPException(503, "commands need the running gateway")
        try:
            payload = contract.encode_cmd(cid, body.cmd, body.args, int(time.time() * 1000))
        except ContractError as exc:  # a command or update args the device would refuse: DROP, never queued
            raise HTTPException(422, str(exc)) from None
        gateway.publish_to_device(d, contract.CH_CMD, payload, False)
        return {"id": cid, "queued": True}

    @app.get("/devices/{device}/acks", tags=["config"])
    def acks(device: str) -> list[dict]:
        """The device's latest answers to commands (newest last)."""
        get_device(device)
        if gateway is None:
            return []
        with gateway._lock_lifecycle:
            return list(gateway.acks.get(device, ()))

    @app.exception_handler(RegistryError)
    def _registry_error(request: Request, exc: RegistryError) -> Response:
        return Response(json.dumps({"detail": str(exc)}), status_code=422, media_type="application/json")

    return app
