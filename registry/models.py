"""Internal models of the gateway: what the converter produces and the data plane reads.

They are frozen: a change is a new object, which is what lets the whole
``GatewayState`` be swapped atomically and read without locks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

BackendKind = Literal["rest", "mcp-streamable", "mcp-sse"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def sanitize_name(raw: str) -> str:
    """A name safe for URLs, metric labels and cluster ids.

    Nacos service names may contain ``::`` and ``@@``
    (``mcp-endpoints@@amap-maps::1.0.0``); those become ``-``.
    """
    cleaned = _UNSAFE.sub("-", raw).strip("-.")
    return cleaned or "unnamed"


def _frozen_empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Instance:
    """One backend instance that can take traffic (or not: see ``routable``)."""

    id: str
    host: str
    port: int
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    scheme: str = "http"
    metadata: Mapping[str, str] = field(default_factory=_frozen_empty)

    @property
    def routable(self) -> bool:
        return self.healthy and self.enabled and self.weight > 0

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The backend instances of one server's ``serviceRef``.

    ``name`` is stable for as long as the server and its serviceRef are, so
    balancer and health statistics survive instance changes.
    """

    name: str
    service: str
    instances: tuple[Instance, ...] = ()

    @property
    def routable_instances(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.routable)


@dataclass(frozen=True, slots=True)
class Route:
    """How calls to one server's tools leave the gateway."""

    name: str
    server_id: str
    server_name: str
    backend: BackendKind
    cluster: str | None
    export_path: str = ""

    @property
    def endpoint(self) -> str:
        return f"/mcp/{self.name}"


@dataclass(frozen=True, slots=True)
class Tool:
    """One callable tool with everything needed to call it precompiled.

    ``binding`` is the converter's compiled REST binding (``None`` for proxied
    MCP tools) and ``validator`` the compiled argument validator; neither
    takes part in equality: ``fingerprint`` stands for the whole definition.
    """

    server_id: str
    server_name: str
    name: str
    description: str
    input_schema: Mapping[str, Any]
    route: str
    cluster: str | None
    fingerprint: str
    output_schema: Mapping[str, Any] | None = None
    annotations: Mapping[str, Any] | None = None
    binding: Any = field(default=None, compare=False, repr=False)
    validator: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ServerModels:
    """Everything the converter produces for one MCP server (one version)."""

    server_id: str
    name: str
    version: str
    protocol: str
    front_protocol: str
    description: str
    route: Route
    cluster: Cluster | None
    tools: tuple[Tool, ...]
    fingerprint: str
    template_config: Mapping[str, Any] = field(default_factory=_frozen_empty, compare=False, repr=False)
    """Values for ``{{ .config.* }}`` incl. credentials: never shown anywhere."""
    tools_from_backend: bool = False
    """A proxied MCP server whose spec lists no tools: the tool list comes from the backend."""
    warnings: tuple[str, ...] = ()
    """What was left out while the rest is served (an unusable instance, say), one sentence each."""
