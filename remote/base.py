"""The seam between mcpgw and wherever configuration lives.

A ``RemoteClient`` is what the control plane needs of Nacos, and nothing
more: list the MCP servers, read / watch a config, list / watch a service's
instances.  Three implementations exist: ``nacos`` (nacos-sdk-python plus the
Nacos 3 admin API), ``files`` (a directory tree in the Nacos layout, watched
live: the embedded default) and ``memory`` (tests and replay).

Semantics every implementation keeps (they are Nacos' own):

- ``get_config`` returns ``None`` when the config does not exist.
- Listener callbacks are ``async`` and must only enqueue work: an
  implementation may hold a lock while it awaits them.  A deleted config is
  delivered as empty content (``""``), exactly like Nacos does.
- Adding a listener gives no initial event: callers read first, then listen,
  and de-duplicate by content.
- Instance callbacks receive the complete current list of the service.
- ``watch_listing`` callbacks fire (with no argument) when the set of MCP
  servers may have changed, so discovery can run at once instead of waiting
  for its next tick.
- Errors are ``registry.errors.SourceError`` subclasses, never SDK types.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

DEFAULT_NAMESPACE = "public"
DEFAULT_GROUP = "DEFAULT_GROUP"

VERSIONS_GROUP = "mcp-server-versions"
SERVER_GROUP = "mcp-server"
TOOLS_GROUP = "mcp-tools"


@dataclass(frozen=True, slots=True, order=True)
class ConfigKey:
    """Identifies one Nacos config: namespace (tenant), group and dataId."""

    namespace: str
    group: str
    data_id: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.group}/{self.data_id}"


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """Identifies one Nacos service: namespace, group and service name."""

    namespace: str
    group: str
    service: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.group}/{self.service}"


def _empty_metadata() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One backend instance exactly as Nacos describes it."""

    ip: str
    port: int
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    ephemeral: bool = True
    cluster_name: str = "DEFAULT"
    service_name: str = ""
    instance_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=_empty_metadata)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


MAX_WEIGHT = 10000.0
"""The largest instance weight Nacos accepts."""

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def host_problem(host: object) -> str | None:
    """Why ``host`` cannot be an instance address (``None`` if it can): an IP address or a DNS name.

    The host is put into the URL a call is sent to, so anything that URL
    syntax reads as more than a host (``@``, ``/``, ``:``, ``?``, ``#``, ...)
    would send the call, and its credentials, somewhere else.
    """
    if not isinstance(host, str) or not host:
        return "the ip must be a non-empty string"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        if len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels):
            return None
        return f"the ip {host!r} is neither an IP address nor a host name"
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return f"the ip {host!r} has an IPv6 zone, which a URL cannot carry; register a routable address"
    return None


def instance_problem(ip: object, port: object, weight: object) -> str | None:
    """Why an instance cannot take traffic as given (``None`` if it can); the numbers are Nacos' ranges."""
    problem = host_problem(ip)
    if problem is not None:
        return problem
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return f"the port {port!r} is not an integer between 1 and 65535"
    if (
        not isinstance(weight, int | float)
        or isinstance(weight, bool)
        or not math.isfinite(weight)
        or not 0 <= weight <= MAX_WEIGHT
    ):
        return f"the weight {weight!r} is not a finite number between 0 and {MAX_WEIGHT:g}"
    return None


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """One entry of the MCP server listing (Nacos' ``McpServerBasicInfo``)."""

    id: str
    name: str
    namespace: str = DEFAULT_NAMESPACE
    protocol: str = ""
    front_protocol: str = ""
    enabled: bool = True
    version: str = ""


def versions_key(server_id: str, namespace: str = DEFAULT_NAMESPACE) -> ConfigKey:
    return ConfigKey(namespace, VERSIONS_GROUP, f"{server_id}-mcp-versions.json")


def server_spec_key(server_id: str, version: str, namespace: str = DEFAULT_NAMESPACE) -> ConfigKey:
    return ConfigKey(namespace, SERVER_GROUP, f"{server_id}-{version}-mcp-server.json")


def tools_spec_key(server_id: str, version: str, namespace: str = DEFAULT_NAMESPACE) -> ConfigKey:
    return ConfigKey(namespace, TOOLS_GROUP, f"{server_id}-{version}-mcp-tools.json")


ConfigCallback = Callable[[ConfigKey, str], Awaitable[None]]
"""Called with the config's key and its new content ("" = deleted)."""

InstancesCallback = Callable[[ServiceKey, tuple[ServiceInstance, ...]], Awaitable[None]]
"""Called with the service's key and its complete current instance list."""

ListingCallback = Callable[[], Awaitable[None]]
"""Called when the set of MCP servers may have changed."""


@runtime_checkable
class ReportsListing(Protocol):
    """A source that can say how it lists MCP servers (Nacos: which API it chose, what was wrong)."""

    def listing_status(self) -> dict[str, Any]:
        """A JSON-ready description for /admin/state."""
        ...


@runtime_checkable
class RemoteClient(Protocol):
    """What the control plane needs of a configuration source."""

    async def start(self) -> None:
        """Connect; raise ``SourceError`` with a clear message if that is impossible."""

    async def stop(self) -> None:
        """Disconnect and cancel every watch."""

    async def list_mcp_servers(self, namespace: str = DEFAULT_NAMESPACE) -> list[McpServerInfo]:
        """Every MCP server of the namespace (all pages)."""
        ...

    async def get_config(self, key: ConfigKey) -> str | None:
        """The config's content, or ``None`` if it does not exist."""
        ...

    async def listen_config(self, key: ConfigKey, callback: ConfigCallback) -> None:
        """Call ``callback`` on every later change of the config (no initial event)."""

    async def stop_listening(self, key: ConfigKey, callback: ConfigCallback) -> None:
        """Undo ``listen_config``; unknown pairs are ignored."""

    async def list_instances(self, key: ServiceKey) -> list[ServiceInstance]:
        """All instances of the service (healthy or not); ``[]`` if it has none."""
        ...

    async def subscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        """Call ``callback`` with the full instance list on every later change."""

    async def unsubscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        """Undo ``subscribe``; unknown pairs are ignored."""

    async def watch_listing(self, callback: ListingCallback) -> None:
        """Call ``callback`` whenever the MCP server listing may have changed."""


@runtime_checkable
class ReportsProblems(Protocol):
    """A source that can say what it read but could not use (files, Nacos): shown on ``/admin/state``."""

    def problems(self) -> Mapping[str, str]:
        """Where (a file, a service, the listing) → why it was not used, or only partly."""
        ...


@runtime_checkable
class ReportsConnection(Protocol):
    """A source that can say whether it is reachable now (``mcpgw_source_connected``)."""

    def connected(self) -> Mapping[str, bool]:
        """Each link the source keeps (``nacos/config``, ``nacos/naming``, ``files``) → up now."""
        ...


def source_links(source: object) -> dict[str, bool]:
    """``source.connected()`` for a source that reports it, else nothing."""
    return dict(source.connected()) if isinstance(source, ReportsConnection) else {}


def source_problems(source: object) -> dict[str, str]:
    """``source.problems()`` for a source that reports them, else nothing."""
    return dict(source.problems()) if isinstance(source, ReportsProblems) else {}
