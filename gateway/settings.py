"""Gateway settings: defaults < YAML file < environment (MCPGW_*) < command-line flags.

One frozen model validated at start-up, so a bad value is a one-line error
before anything listens, never a surprise later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import mcpgw
from mcpgw.converter.template import RenderLimits
from mcpgw.gateway.circuit import CircuitLimits
from mcpgw.registry.balancing import (
    DEFAULT_STRATEGY,
    BalancingPolicy,
    CallLimits,
    LimitsOverride,
    OutlierPolicy,
    RetryBudgetPolicy,
    TimeoutPolicy,
    lookup_cluster,
    strategy_name,
)
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.health import HealthCheckPolicy
from mcpgw.registry.models import Cluster

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The folder the ``mcpgw`` import package's modules live in (the repository root in a checkout)."""
DEMO_TREE = (Path(mcpgw.__file__).parent / "demo_tree").resolve()
"""The bundled demo tree: ``fixtures/nacos-configs/demo`` in a checkout, package data when installed."""


class SettingsError(McpgwError):
    """A setting that cannot be used; the message names it."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OutlierSettings(_Section):
    """Passive outlier detection and panic mode (``registry.balancing.OutlierPolicy``)."""

    consecutive_failures: int = 5
    base_ejection_s: float = 10.0
    max_ejection_s: float = 300.0
    max_ejection_percent: float = 50.0
    panic_threshold_percent: float = 50.0

    @model_validator(mode="after")
    def _valid(self) -> OutlierSettings:
        self.policy()
        return self

    def policy(self) -> OutlierPolicy:
        return OutlierPolicy(**self.model_dump())


class RetryBudgetSettings(_Section):
    """Retries may add ``percent`` of a cluster's calls over ``window_s``, plus ``min_retries_per_s``."""

    percent: float = 20.0
    min_retries_per_s: float = 5.0
    window_s: float = 10.0

    @model_validator(mode="after")
    def _valid(self) -> RetryBudgetSettings:
        self.policy()
        return self

    def policy(self) -> RetryBudgetPolicy:
        return RetryBudgetPolicy(**self.model_dump())


class HealthCheckSettings(_Section):
    """Active HTTP health checks; a service's fields override ``balancing.health_check``'s, then the defaults."""

    enabled: bool | None = None
    path: str | None = None
    interval_s: float | None = None
    timeout_s: float | None = None
    healthy_threshold: int | None = None
    unhealthy_threshold: int | None = None

    def merged(self, under: HealthCheckSettings | None) -> HealthCheckSettings:
        base = under.model_dump(exclude_none=True) if under is not None else {}
        return HealthCheckSettings(**(base | self.model_dump(exclude_none=True)))

    def policy(self) -> HealthCheckPolicy:
        return HealthCheckPolicy(**self.model_dump(exclude_none=True, exclude={"enabled"}))

    @model_validator(mode="after")
    def _valid(self) -> HealthCheckSettings:
        self.policy()
        return self


class CircuitBreakerSettings(_Section):
    """Envoy's circuit breaker for a cluster (``gateway.circuit``): attempts in flight, and waiting for a slot."""

    max_requests: int = Field(default=1024, ge=1)
    max_pending: int = Field(default=1024, ge=0)

    def limits(self) -> CircuitLimits:
        return CircuitLimits(self.max_requests, self.max_pending)


class ToolSettings(_Section):
    """Limits of one tool's calls (``timeout`` covers every attempt, ``try_timeout`` one)."""

    timeout: float | None = Field(default=None, gt=0)
    try_timeout: float | None = Field(default=None, gt=0)

    def limits(self) -> LimitsOverride:
        return LimitsOverride(timeout=self.timeout, try_timeout=self.try_timeout)


class ServiceSettings(ToolSettings):
    """Settings of the clusters of one Nacos service (``name``, ``group@@name``, ``ns/group/name`` or cluster)."""

    strategy: str | None = None
    health_check: HealthCheckSettings | None = None
    """Present: checks run for this service unless it says ``enabled: false``."""
    circuit_breaker: CircuitBreakerSettings | None = None
    """Replaces ``balancing.circuit_breaker`` for this service's clusters."""

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        return None if value is None else strategy_name(value)


class BalancingSettings(_Section):
    """The ``balancing`` section: strategies, outlier detection, retry budget, health checks, timeouts.

    The default call timeout is the top-level ``upstream_timeout``.
    """

    strategy: str = DEFAULT_STRATEGY
    try_timeout: float | None = Field(default=None, gt=0)
    outlier: OutlierSettings = Field(default_factory=OutlierSettings)
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    health_check: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    """The default for every cluster; off unless ``enabled: true``."""
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    """The default limits of every cluster's circuit breaker."""
    services: dict[str, ServiceSettings] = Field(default_factory=dict)
    tools: dict[str, ToolSettings] = Field(default_factory=dict)
    """Keyed ``server/tool``: the server's name (or id) and the tool's name in its spec."""

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        return strategy_name(value, where="as balancing.strategy")

    @field_validator("tools")
    @classmethod
    def _tool_keys(cls, value: dict[str, ToolSettings]) -> dict[str, ToolSettings]:
        for key in value:
            server, _, tool = key.partition("/")
            if not server or not tool:
                raise ValueError(f"tool key {key!r} must be 'server/tool' (server name or id, then the tool name)")
        return value

    @model_validator(mode="after")
    def _valid_health_checks(self) -> BalancingSettings:
        for service in self.services.values():
            if service.health_check is not None:
                service.health_check.merged(self.health_check).policy()
        return self

    def policy(self) -> BalancingPolicy:
        return BalancingPolicy(
            strategy=self.strategy,
            outlier=self.outlier.policy(),
            overrides={name: s.strategy for name, s in self.services.items() if s.strategy is not None},
            retry_budget=self.retry_budget.policy(),
        )

    def timeout_policy(self, timeout: float) -> TimeoutPolicy:
        """Call limits with ``timeout`` (the top-level ``upstream_timeout``) as the default."""
        return TimeoutPolicy(
            default=CallLimits(timeout, self.try_timeout),
            services={name: s.limits() for name, s in self.services.items()},
            tools={key: t.limits() for key, t in self.tools.items()},
        )

    def circuit_for(self, cluster: Cluster | None) -> CircuitLimits:
        """The circuit breaker limits of ``cluster``: its service's, else the default."""
        service = lookup_cluster(self.services, cluster)
        if service is not None and service.circuit_breaker is not None:
            return service.circuit_breaker.limits()
        return self.circuit_breaker.limits()

    def health_check_for(self, cluster: Cluster) -> HealthCheckPolicy | None:
        """The active health check of ``cluster``, or ``None`` when it is not checked."""
        service = lookup_cluster(self.services, cluster)
        if service is not None and service.health_check is not None:
            if service.health_check.enabled is False:
                return None
            return service.health_check.merged(self.health_check).policy()
        return self.health_check.policy() if self.health_check.enabled else None


# -- budgets against hostile input (issue 11: limits of templates, sessions, HTTP, circuits) -----------


class TemplateSettings(_Section):
    """What one template render may spend (``converter.template.RenderLimits``)."""

    max_steps: int = Field(default=1_000_000, ge=1)
    """``range`` iterations and function calls (and the size of what functions build)."""
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Characters written, and the size of any string, list or map built while rendering."""
    max_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    def limits(self) -> RenderLimits:
        return RenderLimits(self.max_steps, self.max_output_bytes, self.max_seconds)


class SessionSettings(_Section):
    """MCP sessions (handshake era): bounded in total and per client address, reclaimed when idle.

    At a bound, the least recently used idle session (of that client, or of
    all) is closed to make room; only when every session is busy is the new
    one refused.
    """

    max_total: int = Field(default=10_000, ge=1)
    max_per_client: int = Field(default=100, ge=1)
    idle_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    """Seconds without a request (and without an open GET stream) after which a session is closed."""


class HttpSettings(_Section):
    """Limits of the HTTP/1.1 connections the gateway accepts (``gateway.http_protocol``)."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """The request line and headers together; more answers 431."""
    max_headers: int = Field(default=100, ge=1)
    """Header fields in one request; more answers 431."""
    header_timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    """Seconds a client has to send a complete request head once it connected or started one; then 408."""
    keep_alive_timeout: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    """Seconds an idle keep-alive connection stays open."""


_SECTIONS = ("balancing", "templates", "sessions", "http")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: Path | None = None
    nacos: str | None = Field(default=None, description="HOST:PORT of a Nacos 3 server")
    namespace: str = "public"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    discovery_interval: float = Field(default=10.0, gt=0)
    listing_poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between polls of Nacos' MCP server listing (Nacos pushes no event when servers come and go)."""
    aggregate_naming: Literal["prefix", "bare"] = "prefix"
    aggregate_separator: str = Field(default="_", min_length=1, max_length=3)
    upstream_timeout: float = Field(default=30.0, gt=0)
    connect_token: str | None = Field(default=None, repr=False, min_length=16)
    """Bearer token the connect API requires; without it, only loopback callers may connect backends."""
    connect_ttl: float | None = Field(default=None, ge=1, le=86400)
    """Lease of a connected backend when its request gives no ttlSeconds; None: it stays until disconnected."""
    balancing: BalancingSettings = Field(default_factory=BalancingSettings)
    templates: TemplateSettings = Field(default_factory=TemplateSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    upstream_max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """A REST backend's answer larger than this is refused (the call fails with a message naming the limit)."""
    connect_max_body: int = Field(default=64 * 1024, ge=1024)
    """Bytes of one connect API request body; more answers 413."""
    connect_max_depth: int = Field(default=8, ge=2, le=64)
    """Nesting of arrays and objects in a connect API request body; deeper answers 400."""
    drain_timeout: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    """On SIGTERM: seconds in-flight tool calls have to finish before they are answered with an error."""
    demo_backend: bool | None = None
    """Start the bundled demo REST backend; default: when serving the bundled demo tree."""
    state_dir: Path = Path(".mcpgw")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator(*_SECTIONS, mode="before")
    @classmethod
    def _section_from_text(cls, value: Any) -> Any:
        # MCPGW_BALANCING (and the other sections) arrive as text: JSON or YAML.
        if not isinstance(value, str):
            return value
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"must be a JSON or YAML mapping ({type(exc).__name__})") from exc

    @property
    def serves_demo(self) -> bool:
        return self.files is None and self.nacos is None

    @property
    def files_root(self) -> Path:
        return self.files if self.files is not None else DEMO_TREE

    @property
    def start_demo_backend(self) -> bool:
        return self.demo_backend if self.demo_backend is not None else self.serves_demo


_ENV_PREFIX = "MCPGW_"


def load_settings(config_file: Path | None, overrides: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = yaml.safe_load(config_file.read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"config file {config_file} must be a YAML mapping of settings")
        merged.update({k.replace("-", "_"): v for k, v in data.items()})
    environ = os.environ if env is None else env
    for field_name in Settings.model_fields:
        value = environ.get(_ENV_PREFIX + field_name.upper())
        if value is not None:
            merged[field_name] = value
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from exc
    if settings.files is not None and settings.nacos is not None:
        raise SettingsError("choose one source: --files DIR or --nacos HOST:PORT, not both")
    return settings
