"""The alerting configuration file: rules and subscriptions, validated before use.

``load(path, departments)`` reads ``analytics/rules.yaml`` (shipped defaults) or the
operator's file and returns :class:`AlertConfig`; any error (unknown kind or severity,
``resolve_at > open_at``, severities not ascending, a template with an unknown
placeholder or bad format spec, a subscription for an unknown department) raises
:class:`AlertConfigError` listing every problem with its location.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from analytics.alerts import SEVERITIES, TEMPLATE_KEYS, Rule
from kotacerdas import standards

Severity = Literal["info", "warning", "critical"]
_SAMPLE = {"device": "d", "city": "c", "district": "x", "value": 1.5, "severity": "warning", "detail": "",
           "threshold": 1.0, "time": "2024-01-01T00:00:00Z", "unit": "", "concentration": "1 ug/m3",
           "averaging": "1 h"}
assert set(_SAMPLE) == set(TEMPLATE_KEYS)


class AlertConfigError(ValueError):
    """The alerting configuration is invalid; the message lists every problem."""


def threshold(v: object) -> float:
    """A number, or a fact's name in kotacerdas/standards.py so thresholds keep one home:
    ``"ISPU:Tidak Sehat"`` (where that ISPU band begins), ``"AQI_US:Unhealthy"``, or an operational
    constant such as ``"BIN_FILL_DUE"``."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, str):
        raise ValueError(f"expected a number or a standards name, got {v!r}")
    if ":" in v:
        table, _, label = v.partition(":")
        bands = {"ISPU": standards.ISPU_BANDS, "AQI_US": standards.AQI_US_BANDS}.get(table)
        match = [b for b in bands or () if b.label == label and b.lower is not None]
        if not match:
            raise ValueError(f"{v!r}: no such band (ISPU:<Baik..Berbahaya>, AQI_US:<Good..Hazardous>, not the first)")
        return float(match[0].lower)  # type: ignore[arg-type]
    val = getattr(standards, v, None) if v.isupper() else None
    if not isinstance(val, (int, float)) or isinstance(val, bool):
        raise ValueError(f"{v!r} is neither a number nor a threshold in kotacerdas/standards.py")
    return float(val)


Threshold = Annotated[float, BeforeValidator(threshold)]


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    parameter: str = ""
    unit: str = ""
    open_at: Threshold
    resolve_at: Threshold
    severities: list[tuple[Threshold, Severity]] = Field(min_length=1)
    text_id: str
    text_en: str
    resolved_id: str
    resolved_en: str

    @field_validator("text_id", "text_en", "resolved_id", "resolved_en")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(**_SAMPLE)
        except KeyError as exc:
            raise ValueError(f"unknown placeholder {exc}; allowed: {', '.join(TEMPLATE_KEYS)}") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"bad template: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RuleSpec":
        if not (math.isfinite(self.open_at) and math.isfinite(self.resolve_at)):
            raise ValueError("open_at and resolve_at must be finite numbers")
        if self.resolve_at > self.open_at:
            raise ValueError(f"resolve_at ({self.resolve_at:g}) must not exceed open_at ({self.open_at:g})")
        thr = [t for t, _ in self.severities]
        if thr != sorted(thr) or len(set(thr)) != len(thr):
            raise ValueError("severities must have strictly ascending thresholds")
        return self


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "webhook"]
    to: str = Field(min_length=3, max_length=512)  # e-mail address or webhook URL
    departments: list[str] = Field(default_factory=list)  # empty = all
    cities: list[str] = Field(default_factory=list)
    districts: list[str] = Field(default_factory=list)
    min_severity: Severity = "info"

    @model_validator(mode="after")
    def _target(self) -> "Subscription":
        if self.channel == "email" and ("@" not in self.to or " " in self.to):
            raise ValueError(f"not an e-mail address: {self.to!r}")
        if self.channel == "webhook" and not self.to.startswith(("http://", "https://")):
            raise ValueError(f"webhook target must be an http(s) URL: {self.to!r}")
        return self

    def wants(self, department: str, city: str, district: str, severity: str) -> bool:
        """Districts compare case-insensitively: operators type "pancoran mas" for "Pancoran Mas"."""
        return ((not self.departments or department in self.departments)
                and (not self.cities or city.lower() in {c.lower() for c in self.cities})
                and (not self.districts or district.lower() in {d.lower() for d in self.districts})
                and SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity))


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: dict[str, RuleSpec]
    subscriptions: list[Subscription] = Field(default_factory=list)


@dataclass(frozen=True)
class AlertConfig:
    rules: dict[str, Rule]
    subscriptions: tuple[Subscription, ...]


def _text(path: Path | None) -> tuple[str, str]:
    if path is None:
        return resources.files("analytics").joinpath("rules.yaml").read_text("utf-8"), "analytics/rules.yaml"
    return Path(path).read_text("utf-8"), str(path)


def load(path: Path | None, departments: dict[str, str]) -> AlertConfig:
    """Read and validate; ``departments`` maps catalogue kind -> department."""
    text, where = _text(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertConfigError(f"{where}: not valid YAML: {exc}") from None
    try:
        spec = FileSpec.model_validate(doc)
    except ValidationError as exc:
        found = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise AlertConfigError(f"{where}: {found}") from None
    problems = []
    for name, r in spec.rules.items():
        if r.kind not in departments:
            problems.append(f"rules.{name}.kind: unknown kind {r.kind!r} (catalogue: {', '.join(departments)})")
    known = set(departments.values())
    for i, sub in enumerate(spec.subscriptions):
        for d in sub.departments:
            if d not in known:
                problems.append(f"subscriptions.{i}.departments: unknown department {d!r} ({', '.join(sorted(known))})")
    if problems:
        raise AlertConfigError(f"{where}: " + "; ".join(problems))
    rules = {name: Rule(name, departments[r.kind], r.open_at, r.resolve_at,
                        tuple((float(t), s) for t, s in r.severities), r.text_id, r.text_en,
                        r.resolved_id, r.resolved_en, r.parameter, r.unit)
             for name, r in spec.rules.items()}
    return AlertConfig(rules, tuple(spec.subscriptions))
