"""Gateway settings: defaults < YAML file < environment (MCPGW_*) < command-line flags.

One frozen model validated at start-up, so a bad value is a one-line error
before anything listens, never a surprise later.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

import mcpgw
from mcpgw.converter.template import RenderLimits
from mcpgw.gateway.circuit import CircuitLimits
from mcpgw.gateway.frontdoor import AuditSettings, AuthSettings, RateLimitSettings, check_forward_headers
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
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class OutlierSettings(_Section):
    """Passive outlier detection and panic mode (``registry.balancing.OutlierPolicy``)."""

    consecutive_failures: int = 5
    """Failures in a row that eject an instance (passive outlier detection)."""
    base_ejection_s: float = 10.0
    """First ejection's length in seconds; each further ejection of the same instance lasts longer."""
    max_ejection_s: float = 300.0
    """Longest ejection in seconds."""
    max_ejection_percent: float = 50.0
    """At most this share of a cluster's instances is ejected at once."""
    panic_threshold_percent: float = 50.0
    """Below this share of usable instances, health is ignored and all instances get calls (panic mode)."""

    @model_validator(mode="after")
    def _valid(self) -> OutlierSettings:
        self.policy()
        return self

    def policy(self) -> OutlierPolicy:
        return OutlierPolicy(**self.model_dump())


class RetryBudgetSettings(_Section):
    """Retries may add ``percent`` of a cluster's calls over ``window_s``, plus ``min_retries_per_s``."""

    percent: float = 20.0
    """Retries may add this percentage of a cluster's calls in the window."""
    min_retries_per_s: float = 5.0
    """Retries per second always allowed, whatever the traffic."""
    window_s: float = 10.0
    """Seconds over which calls and retries are counted."""

    @model_validator(mode="after")
    def _valid(self) -> RetryBudgetSettings:
        self.policy()
        return self

    def policy(self) -> RetryBudgetPolicy:
        return RetryBudgetPolicy(**self.model_dump())


class HealthCheckSettings(_Section):
    """Active HTTP health checks; a service's fields override ``balancing.health_check``'s, then the defaults."""

    enabled: bool | None = None
    """Run active checks (default: off for ``balancing.health_check``, on for a service that has a block)."""
    path: str | None = None
    """Path probed with GET on each instance; 2xx or 3xx passes (default ``/health``)."""
    interval_s: float | None = None
    """Seconds between probes of one instance (default 10)."""
    timeout_s: float | None = None
    """Seconds one probe may take (default 2)."""
    healthy_threshold: int | None = None
    """Passing probes in a row that make an unhealthy instance healthy again (default 2)."""
    unhealthy_threshold: int | None = None
    """Failing probes in a row that make an instance unhealthy (default 3)."""

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
    """Attempts in flight to one cluster; more wait for a slot."""
    max_pending: int = Field(default=1024, ge=0)
    """Attempts waiting for a slot; more fail at once with an error naming the limit."""

    def limits(self) -> CircuitLimits:
        return CircuitLimits(self.max_requests, self.max_pending)


class ToolSettings(_Section):
    """Limits of one tool's calls (``timeout`` covers every attempt, ``try_timeout`` one)."""

    timeout: float | None = Field(default=None, gt=0)
    """Seconds a call may take, every attempt included (default: ``upstream_timeout``)."""
    try_timeout: float | None = Field(default=None, gt=0)
    """Seconds one attempt may take, so a retry has time left (default: no bound but ``timeout``)."""

    def limits(self) -> LimitsOverride:
        return LimitsOverride(timeout=self.timeout, try_timeout=self.try_timeout)


class ServiceSettings(ToolSettings):
    """Settings of the clusters of one Nacos service (``name``, ``group@@name``, ``ns/group/name`` or cluster)."""

    strategy: str | None = None
    """This service's balancing strategy (default: ``balancing.strategy``)."""
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
    """Balancing strategy of every cluster: smooth_weighted_round_robin, round_robin, random, weighted_random,
    least_connections, response_time, consistent_hash (on the MCP session id), or one a package adds (entry point
    group ``mcpgw.balancers``).
    """
    try_timeout: float | None = Field(default=None, gt=0)
    """Seconds one attempt may take, so a retry has time left (default: no bound but ``timeout``)."""
    outlier: OutlierSettings = Field(default_factory=OutlierSettings)
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    health_check: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    """The default for every cluster; off unless ``enabled: true``."""
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    """The default limits of every cluster's circuit breaker."""
    services: dict[str, ServiceSettings] = Field(default_factory=dict)
    """Per service (name, ``group@@name``, ``namespace/group/name`` or cluster name)."""
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
    """Seconds one render may take."""

    def limits(self) -> RenderLimits:
        return RenderLimits(self.max_steps, self.max_output_bytes, self.max_seconds)


class SessionSettings(_Section):
    """MCP sessions (handshake era): bounded in total and per client address, reclaimed when idle.

    At a bound, the least recently used idle session (of that client, or of
    all) is closed to make room; only when every session is busy is the new
    one refused.
    """

    max_total: int = Field(default=10_000, ge=1)
    """Open sessions over all endpoints and transports."""
    max_per_client: int = Field(default=100, ge=1)
    """Open sessions of one client address."""
    idle_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    """Seconds without a request (and without an open GET stream) after which a session is closed."""
    max_age: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)
    """With ``session_secret``: seconds a session id stays valid on the replicas that did not open it."""


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


_SECTIONS = ("balancing", "templates", "sessions", "http", "auth", "rate_limits", "audit", "forward_headers")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    files: Path | None = None
    """Serve a files tree in the Nacos layout (``--files``), watched live; with neither ``files`` nor ``nacos``: the
    bundled demo.
    """
    nacos: str | None = Field(default=None, description="HOST:PORT of a Nacos 3 server")
    namespace: str = "public"
    """Nacos namespace to serve."""
    username: str | None = None
    """Nacos user (when Nacos has authentication on)."""
    password: str | None = Field(default=None, repr=False)
    """Nacos password; never logged (prefer ``MCPGW_PASSWORD`` to the flag, which other users can see in ``ps``)."""
    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` for every interface)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0: any free port)."""
    discovery_interval: float = Field(default=10.0, gt=0)
    """Seconds between full discovery passes (list the servers, start and stop their listeners); changes to known
    servers arrive by push, not by this loop.
    """
    listing_poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between polls of Nacos' MCP server listing (Nacos pushes no event when servers come and go)."""
    aggregate_naming: Literal["prefix", "bare"] = "prefix"
    """How ``/mcp`` names tools: ``prefix`` (``{server}{separator}{tool}``) or ``bare`` (the tool's own name; a name
    two servers share is left out and reported).
    """
    aggregate_separator: str = Field(default="_", min_length=1, max_length=3)
    """Between server and tool name on ``/mcp`` with ``prefix`` naming."""
    tool_name_max_length: int = Field(default=64, ge=16, le=128)
    """Longest tool name listed (many clients accept 64); a longer one is listed as its beginning, ``-`` and 8 hex
    digits of its SHA-256 (the same on every replica), and the server's warnings say so.
    """
    upstream_timeout: float = Field(default=30.0, gt=0)
    """Default seconds a tool call may take, every attempt included (per service or tool: ``balancing``)."""
    session_secret: str | None = Field(default=None, repr=False, min_length=16)
    """Shared by the replicas behind one balancer: handshake-era session ids are signed with it, so any replica
    accepts a session another one opened (``MCPGW_SESSION_SECRET``; at least 16 characters; never logged).
    Without it a session lives only where it was opened (a balancer then needs affinity).
    """
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
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    forward_headers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Caller headers forwarded to backends, per ``server`` or ``server/tool`` (``{weather: [Authorization]}``);
    nothing else from a client ever reaches a backend."""
    state_dir: Path = Path(".mcpgw")
    """Where the Nacos SDK keeps its cache and logs (relative to the working directory)."""
    log_format: Literal["console", "json"] = "console"
    """``console`` (readable) or ``json`` (one JSON object per line, at every level)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe level logged."""

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

    @field_validator("forward_headers")
    @classmethod
    def _forwarding(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return check_forward_headers(value)

    @property
    def serves_demo(self) -> bool:
        return self.files is None and self.nacos is None

    @property
    def files_root(self) -> Path:
        return self.files if self.files is not None else DEMO_TREE

    @property
    def start_demo_backend(self) -> bool:
        return self.demo_backend if self.demo_backend is not None else self.serves_demo


ENV_PREFIX = "MCPGW_"

_TEST_VARIABLES = frozenset({"MCPGW_REAL_NACOS", "MCPGW_WRAPPER_PYTHON", "MCPGW_CHROMIUM", "MCPGW_TEST_NACOS",
                             "MCPGW_ADMIN_TOKEN"})
"""MCPGW_* variables that are not settings and not worth a warning: the test suite's, and the admin token
``mcpgw state`` presents."""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


class _FileSource(PydanticBaseSettingsSource):
    """The YAML settings file: keys as the settings' names (``-`` or ``_``), sections as nested mappings."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.data: dict[str, Any] = {}
        if path is None:
            return
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror}; check the --config path") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"config file {path} must be a YAML mapping of settings (key: value), "
                                f"not a {type(data).__name__}")
        self.data = {str(k).replace("-", "_"): v for k, v in data.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class _EnvironmentSource(EnvSettingsSource):
    """``MCPGW_*`` variables, from ``environ`` (the process environment unless a test gives its own)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _layered(file: _FileSource, environ: Mapping[str, str]) -> type[BaseSettings]:
    """``Settings`` read through pydantic-settings: flags (init) > environment > file > defaults."""

    class Layered(BaseSettings, Settings):
        # Sections in the environment are JSON or YAML text, decoded by Settings' own validator.
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, enable_decoding=False,
                                          extra="forbid", frozen=True)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, _EnvironmentSource(settings_cls, environ), file)

    return Layered


def load_settings(
    config_file: Path | None, overrides: dict[str, Any], env: Mapping[str, str] | None = None
) -> Settings:
    """The settings from defaults < ``config_file`` < ``MCPGW_*`` environment < ``overrides`` (the flags).

    Every problem is reported at once, each naming where the value came from:
    the flag, the environment variable, or the file and key.
    """
    environ = os.environ if env is None else env
    flags = {k: v for k, v in overrides.items() if v is not None}
    file = _FileSource(Settings, config_file)  # type: ignore[arg-type]  # only its path and data are used
    try:
        layered = _layered(file, environ)(**flags)
    except ValidationError as exc:
        lines = [_describe(error, flags, environ, file) for error in exc.errors()]
        raise SettingsError("\n".join(lines)) from exc
    settings = Settings.model_validate(dict(layered))
    if settings.files is not None and settings.nacos is not None:
        raise SettingsError("choose one source: --files DIR or --nacos HOST:PORT (or MCPGW_FILES / MCPGW_NACOS, "
                            "or the file's files / nacos keys), not both")
    return settings


def unknown_environment(env: Mapping[str, str] | None = None) -> list[str]:
    """``MCPGW_*`` variables that name no setting (a typo, or a setting of another version): to warn about."""
    environ = os.environ if env is None else env
    known = {env_name(name) for name in Settings.model_fields} | _TEST_VARIABLES
    return sorted(name for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)


def _describe(error: Any, flags: Mapping[str, Any], environ: Mapping[str, str], file: _FileSource) -> str:
    loc = [str(part) for part in error["loc"]]
    top = loc[0] if loc else ""
    dotted = ".".join(loc) or "settings"
    if error["type"] == "extra_forbidden":
        known = list(Settings.model_fields) if len(loc) == 1 else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; the README's settings table lists every setting"
        return f"config file {file.path}: unknown setting {dotted!r}{hint}"
    expected = _expected(error)
    if top in flags:
        return f"flag --{top.replace('_', '-')}: {expected}"
    variable = env_name(top)
    if any(name.upper() == variable for name in environ):
        inner = f" (at {'.'.join(loc[1:])})" if len(loc) > 1 else ""
        return f"environment variable {variable}{inner}: {expected}"
    if top in file.data:
        return f"config file {file.path}, key {dotted}: {expected}"
    return f"setting {dotted}: {expected}"


def _expected(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if isinstance(given, dict | list) or given is None else f" (got {repr(given)[:80]})"
    return message[0].lower() + message[1:] + shown


FLAGS: Mapping[str, str] = {
    "files": "--files DIR", "nacos": "--nacos HOST:PORT", "namespace": "--namespace", "username": "--username",
    "password": "--password", "host": "--host", "port": "--port", "demo_backend": "--no-demo-backend",
}
"""The settings ``mcpgw serve`` also takes as flags."""


def settings_table() -> str:
    """Every setting as a Markdown table (the README's, kept in step with this model by a test)."""
    rows = ["| setting (file key) | environment | flag | default | what it does |", "|---|---|---|---|---|"]
    for name, key, field in _leaves(Settings, ""):
        top = name.split(".", 1)[0]
        variable = f"`{env_name(top)}`" + ("" if name == top else " (the section as JSON/YAML)")
        flag = FLAGS.get(name, "")
        default = _shown_default(field)
        description = " ".join((field.description or "").split()).replace("``", "`").replace("|", "\\|")
        rows.append(f"| `{key}` | {variable} | {f'`{flag}`' if flag else ''} | {default} | {description} |")
    return "\n".join(rows) + "\n"


def _leaves(model: type[BaseModel], prefix: str) -> list[tuple[str, str, FieldInfo]]:
    found: list[tuple[str, str, FieldInfo]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation)
        nested = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if typing.get_origin(annotation) is dict and nested is not None:
            found.extend(_leaves(nested, f"{prefix}{name}.<name>."))
        elif typing.get_origin(annotation) is tuple and nested is not None:
            found.extend(_leaves(nested, f"{prefix}{name}[]."))
        elif nested is not None:
            found.extend(_leaves(nested, f"{prefix}{name}."))
        else:
            found.append((f"{prefix}{name}", f"{prefix}{name}", field))
    return found


def _shown_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return ""
    if field.is_required():
        return "required"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"
