"""Self-registration: a backend announces itself, in Nacos or to a gateway, for as long as it runs.

The design we follow has servers connect themselves instead of an operator
listing them: a backend (or a sidecar in front of it) registers one
*ephemeral* instance of its service, the gateway's subscription on that
service sees it within milliseconds, and the instance goes away when the
process stops.  Ephemeral is the point: Nacos ties such an instance to the
client's connection, so a process that dies without deregistering (SIGKILL,
OOM, a lost host) still disappears once the connection drops, instead of
leaving a persistent instance that takes traffic forever.

Everything about talking to Nacos (address parsing, the login that fails
fast on wrong credentials, the gRPC probe that fails fast when Nacos is
down, the SDK client per namespace with explicit cache and log directories,
re-registration after a reconnect, error translation) is ``NacosSource``'s;
this module only adds the lifecycle around one instance:

- ``registered(...)`` is an async context manager: validated inputs, a
  registration when entered, a deregistration when left (also on error or
  cancellation).  If the deregistration itself fails it is logged, not
  raised: closing the connection right after makes Nacos drop the ephemeral
  instance anyway.
- ``run_until_signal(...)`` is what ``mcpgw register`` runs: it holds the
  registration until SIGTERM or SIGINT (or a given event), then deregisters
  and returns normally, so the process exits 0.

Without Nacos, ``connected(...)`` does the same against one gateway's connect
API (gateway.connect_api).  There is no connection for the gateway to watch,
so the instance is a lease of ``ttl`` seconds that a heartbeat renews every
``ttl / 3`` seconds by sending the connect request again: two heartbeats may
be lost before the gateway lets the instance go.  The heartbeat never ends
the block: a failure is logged and the next tick tries again, and since a
renewal is a full connect request, a gateway that restarted (or let the
lease run out) gets the instance back at the next tick.  Leaving the block
disconnects; if that fails it is logged, and the lease ends it anyway.

The default ``ip`` is the local address the host would use to reach Nacos,
or the gateway (no packet is sent): the address the gateway can most likely
reach; ``127.0.0.1`` when there is no route.  Behind NAT or in a container
with a published port, pass the reachable one explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import structlog

from mcpgw.registry.errors import McpgwError, SourceError
from mcpgw.remote.base import DEFAULT_GROUP, DEFAULT_NAMESPACE, ServiceKey
from mcpgw.remote.nacos import NacosSource
from mcpgw.remote.overlay import register_name

log = structlog.get_logger(__name__)

MAX_WEIGHT = 10000.0  # Nacos rejects instance weights outside 0..10000
MAX_TTL = 86400.0  # the connect API's bounds of ttlSeconds
MIN_TTL = 1.0
LOOPBACK = "127.0.0.1"
_DISCARD_PORT = 9  # any port does: connecting a UDP socket only picks a route
CONNECT_PATH = "/api/mcp/servers/connect"
_HEARTBEAT_REFUSALS = frozenset({401, 403, 404, 409, 422})
"""Answers to a heartbeat that retrying alone will not fix: logged as errors."""

_Instance_co = TypeVar("_Instance_co", covariant=True)
_Instance = TypeVar("_Instance")


class InvalidRegistration(McpgwError, ValueError):
    """A self-registration that cannot be sent as given (bad port, weight, metadata, ...)."""


class GatewayUnreachable(McpgwError):
    """The gateway's connect API cannot be reached (refused, timed out); retrying later may help."""


class ConnectRefused(McpgwError):
    """The gateway answered the connect request with an error: a wrong token, an invalid request, ...

    ``status`` is the HTTP status, ``reason`` the gateway's own message.
    """

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Registration(Protocol[_Instance_co]):
    """Something ``run_until_signal`` can hold: a Nacos registration or a gateway connection."""

    def holding(self) -> contextlib.AbstractAsyncContextManager[_Instance_co]: ...


def _frozen(metadata: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(metadata))


@dataclass(frozen=True, slots=True)
class SelfRegistration:
    """What to register, and where; checked when built.

    ``ip=None`` means the host's outward address (see the module docstring).
    ``state_dir`` holds the SDK's cache and logs; ``None`` uses a temporary
    directory removed on exit.
    """

    server_addr: str
    service: str
    port: int
    ip: str | None = None
    weight: float = 1.0
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    group: str = DEFAULT_GROUP
    namespace: str = DEFAULT_NAMESPACE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    state_dir: Path | None = None
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise InvalidRegistration(
                f"cannot register service {self.service!r} with Nacos at {self.server_addr!r}: "
                f"{'; '.join(problems)}. Fix the arguments and try again."
            )
        object.__setattr__(self, "metadata", _frozen(self.metadata))

    @property
    def service_key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.group, self.service)

    def holding(self) -> contextlib.AbstractAsyncContextManager[RegisteredInstance]:
        return hold(self)


def _instance_problems(
    service: str, group: str, port: int, ip: str | None, weight: float, metadata: Mapping[str, str]
) -> list[str]:
    """What is wrong with an instance, wherever it is registered."""
    problems = []
    if not service.strip():
        problems.append("the service name is empty")
    if not group.strip():
        problems.append("the group is empty")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"port {port!r} is not an integer in 1-65535")
    if ip is not None and (not ip.strip() or any(c.isspace() for c in ip)):
        problems.append(f"ip {ip!r} is not an address")
    if not (isinstance(weight, int | float) and math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
        problems.append(f"weight {weight!r} is not a number in 0-{MAX_WEIGHT:g}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or not isinstance(value, str):
            problems.append(f"metadata entry {key!r} must map a non-empty text key to a text value")
    return problems


def _problems(spec: SelfRegistration) -> list[str]:
    problems = []
    if not spec.server_addr.strip():
        problems.append("the Nacos address is empty (give host:port, e.g. 127.0.0.1:8848)")
    if not spec.namespace.strip():
        problems.append("the namespace is empty")
    problems += _instance_problems(spec.service, spec.group, spec.port, spec.ip, spec.weight, spec.metadata)
    if bool(spec.username) != bool(spec.password):
        problems.append("give both a username and a password, or neither")
    if not spec.connect_timeout > 0:
        problems.append(f"connect timeout {spec.connect_timeout!r} is not a positive number of seconds")
    return problems


def parse_metadata(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; the value may itself contain ``=``; a repeated key is an error."""
    parsed: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise InvalidRegistration(f"metadata {item!r} is not key=value: write it as --metadata version=1.2")
        if key in parsed:
            raise InvalidRegistration(f"metadata key {key!r} is given twice: keep one --metadata {key}=...")
        parsed[key] = value
    return parsed


@dataclass(frozen=True, slots=True)
class RegisteredInstance:
    """The instance as registered: what a test or a log line needs to find it in Nacos."""

    server_addr: str
    service: ServiceKey
    ip: str
    port: int
    weight: float
    metadata: Mapping[str, str]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def __str__(self) -> str:
        return f"{self.address} in service {self.service} at Nacos {self.server_addr}"


def outward_ip(towards: str) -> str:
    """The local address used to reach ``towards`` (a host name or IP); ``127.0.0.1`` if there is no route.

    Connecting a UDP socket sends nothing; it only asks the kernel for a route.
    Blocking (it may resolve a name): call it off the event loop.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((towards, _DISCARD_PORT))
            address: str = probe.getsockname()[0]
    except OSError:
        return LOOPBACK
    return address if address and address != "0.0.0.0" else LOOPBACK


def _nacos_host(server_addr: str) -> str:
    first = server_addr.split(",")[0].strip().removeprefix("http://").removeprefix("https://")
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


@contextlib.contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="mcpgw-register-", ignore_cleanup_errors=True) as temporary:
        yield Path(temporary)


@contextlib.asynccontextmanager
async def hold(registration: SelfRegistration) -> AsyncIterator[RegisteredInstance]:
    """Register ``registration`` as an ephemeral instance for the duration of the block.

    Raises ``SourceUnavailable`` (Nacos unreachable), ``SourceAuthError``
    (wrong credentials, no permission) or ``SourceError`` (refused) before
    the block runs; never leaves a connection or a task behind.
    """
    ip = registration.ip
    if ip is None:
        ip = await asyncio.to_thread(outward_ip, _nacos_host(registration.server_addr))
    with _state_dir(registration.state_dir) as state_dir:
        source = NacosSource(
            registration.server_addr,
            namespace=registration.namespace,
            username=registration.username,
            password=registration.password,
            cache_dir=state_dir / "nacos-cache",
            log_dir=state_dir / "logs",
            connect_timeout=registration.connect_timeout,
        )
        await source.start()
        try:
            key = registration.service_key
            await source.register_instance(
                key, ip, registration.port, registration.weight, dict(registration.metadata), ephemeral=True
            )
            instance = RegisteredInstance(
                registration.server_addr, key, ip, registration.port, registration.weight, registration.metadata
            )
            log.info("registration.registered", service=str(key), address=instance.address,
                     weight=registration.weight, metadata_keys=sorted(registration.metadata))
            try:
                yield instance
            finally:
                await _deregister(source, instance, registration.connect_timeout)
        finally:
            await source.stop()


async def _deregister(source: NacosSource, instance: RegisteredInstance, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await source.deregister_instance(instance.service, instance.ip, instance.port, ephemeral=True)
    except (SourceError, TimeoutError) as exc:
        # Closing the connection (next) makes Nacos drop the ephemeral instance all the same.
        log.warning("registration.deregister_failed", service=str(instance.service), address=instance.address,
                    error=str(exc) or "timed out")
        return
    log.info("registration.deregistered", service=str(instance.service), address=instance.address)


def registered(
    server_addr: str,
    *,
    service: str,
    port: int,
    ip: str | None = None,
    weight: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    group: str = DEFAULT_GROUP,
    namespace: str = DEFAULT_NAMESPACE,
    username: str | None = None,
    password: str | None = None,
    state_dir: Path | None = None,
    connect_timeout: float = 5.0,
) -> contextlib.AbstractAsyncContextManager[RegisteredInstance]:
    """``async with registered("127.0.0.1:8848", service="weather-api", port=8000) as instance: ...``

    Raises ``InvalidRegistration`` at once for bad arguments; see ``hold`` for the rest.
    """
    return hold(
        SelfRegistration(
            server_addr, service, port, ip=ip, weight=weight, metadata=metadata or {}, group=group,
            namespace=namespace, username=username, password=password, state_dir=state_dir,
            connect_timeout=connect_timeout,
        )
    )


# -- with a gateway's connect API, no Nacos ---------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayConnection:
    """What to connect, and to which gateway; checked when built.

    ``ip=None`` means the host's outward address towards the gateway;
    ``server_id=None`` means ``ip:port``, stable across restarts of the same
    backend and unique per host and port.  ``timeout`` bounds each request.
    """

    gateway_url: str
    service: str
    port: int
    ip: str | None = None
    server_id: str | None = None
    weight: float = 1.0
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    group: str = DEFAULT_GROUP
    token: str | None = field(default=None, repr=False)
    ttl: float = 30.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = _connection_problems(self)
        if problems:
            raise InvalidRegistration(
                f"cannot connect service {self.service!r} to the gateway at {_shown(self.gateway_url)!r}: "
                f"{'; '.join(problems)}. Fix the arguments and try again."
            )
        object.__setattr__(self, "metadata", _frozen(self.metadata))

    def holding(self) -> contextlib.AbstractAsyncContextManager[ConnectedInstance]:
        return hold_connection(self)


def _shown(url: str) -> str:
    """``url`` without a ``user:password@`` part: what messages and logs may show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ["the gateway URL is not a URL (give http://host:port)"]
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return ["the gateway URL must be http://host:port or https://host:port"]
    problems = []
    if "@" in parts.netloc:
        problems.append("the gateway URL carries credentials: give the connect token as the token instead")
    if parts.query or parts.fragment:
        problems.append("the gateway URL must not have a query or fragment (give the gateway's base URL)")
    return problems


def _connection_problems(spec: GatewayConnection) -> list[str]:
    problems = _url_problems(spec.gateway_url)
    problems += _instance_problems(spec.service, spec.group, spec.port, spec.ip, spec.weight, spec.metadata)
    if "/" in spec.service or "/" in spec.group:
        problems.append("the service and group must not contain '/' (they are part of the disconnect URL)")
    if spec.server_id is not None and (not spec.server_id.strip() or "/" in spec.server_id):
        problems.append(f"server id {spec.server_id!r} must be non-empty and must not contain '/'")
    if spec.token is not None and (not spec.token or any(c.isspace() for c in spec.token)):
        problems.append("the token is empty or contains whitespace")
    if not (isinstance(spec.ttl, int | float) and math.isfinite(spec.ttl) and MIN_TTL <= spec.ttl <= MAX_TTL):
        problems.append(f"ttl {spec.ttl!r} is not a number of seconds in {MIN_TTL:g}-{MAX_TTL:g}")
    if not spec.timeout > 0:
        problems.append(f"timeout {spec.timeout!r} is not a positive number of seconds")
    return problems


@dataclass(frozen=True, slots=True)
class ConnectedInstance:
    """The instance as the gateway took it: what a log line or a disconnect needs."""

    gateway_url: str
    service: str
    """As the gateway names it: ``namespace/group/service``."""
    server_name: str
    """The connect API's name of the service: ``service``, or ``group@@service`` outside DEFAULT_GROUP."""
    server_id: str
    ip: str
    port: int
    weight: float
    metadata: Mapping[str, str]
    ttl: float

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def __str__(self) -> str:
        server = "" if self.server_id == self.address else f" (server id {self.server_id})"
        return f"{self.address}{server} in service {self.service} at gateway {self.gateway_url}"


def _gateway_reason(response: httpx.Response) -> str:
    """The gateway's own message (``{"error": ...}``), or the status line when the answer has none."""
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _failure(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def hold_connection(connection: GatewayConnection) -> AsyncIterator[ConnectedInstance]:
    """Connect ``connection`` to the gateway, renew its lease while the block runs, disconnect after.

    Raises ``GatewayUnreachable`` or ``ConnectRefused`` (quoting the
    gateway's message) before the block runs; never leaves a task or a
    connection behind.  Cancelled while the first request is in flight, the
    gateway may still have taken it: the lease then ends it within ``ttl``.
    """
    shown = _shown(connection.gateway_url)
    ip = connection.ip
    if ip is None:
        ip = await asyncio.to_thread(outward_ip, urlsplit(connection.gateway_url.strip()).hostname or LOOPBACK)
    server_id = connection.server_id or f"{ip}:{connection.port}"
    body = {"serverId": server_id, "serverName": connection.service, "host": ip, "port": connection.port,
            "weight": connection.weight, "metadata": dict(connection.metadata), "groupName": connection.group,
            "ttlSeconds": connection.ttl}
    headers = {"Authorization": f"Bearer {connection.token}"} if connection.token else {}
    async with httpx.AsyncClient(base_url=connection.gateway_url.strip(), headers=headers,
                                 timeout=connection.timeout, trust_env=False) as http:
        try:
            response = await http.post(CONNECT_PATH, json=body)
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(
                f"cannot reach the gateway at {shown} to connect service {connection.service!r}: "
                f"{_failure(exc)}. Check the URL and that the gateway runs, then try again."
            ) from exc
        if not response.is_success:
            reason = _gateway_reason(response)
            raise ConnectRefused(
                f"the gateway at {shown} refused to connect {server_id} to service {connection.service!r} "
                f"({response.status_code}): {reason}",
                status=response.status_code, reason=reason,
            )
        instance = _connected_instance(connection, response, shown, server_id, ip)
        log.info("registration.connected", gateway=shown, service=instance.service, server=server_id,
                 address=instance.address, weight=connection.weight, ttl=connection.ttl,
                 metadata_keys=sorted(connection.metadata))
        heartbeat = asyncio.create_task(_heartbeat(http, body, instance), name=f"heartbeat {server_id}")
        try:
            yield instance
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await _disconnect(http, instance)


def _connected_instance(
    connection: GatewayConnection, response: httpx.Response, shown: str, server_id: str, ip: str
) -> ConnectedInstance:
    key = ServiceKey(DEFAULT_NAMESPACE, connection.group, connection.service)
    try:
        answer: Any = response.json()
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    # The gateway's names win: its namespace, and the exact name its DELETE route expects.
    service = answer.get("service")
    server_name = answer.get("serverName")
    return ConnectedInstance(
        shown,
        service if isinstance(service, str) else str(key),
        server_name if isinstance(server_name, str) else register_name(key),
        server_id, ip, connection.port, connection.weight, connection.metadata, connection.ttl,
    )


async def _heartbeat(http: httpx.AsyncClient, body: dict[str, Any], instance: ConnectedInstance) -> None:
    interval = instance.ttl / 3
    fields = {"gateway": instance.gateway_url, "service": instance.service, "server": instance.server_id}
    while True:
        await asyncio.sleep(interval)
        try:
            response = await http.post(CONNECT_PATH, json=body)
        except httpx.HTTPError as exc:
            log.warning("registration.heartbeat_failed", **fields, error=_failure(exc), retry_in=interval)
            continue
        except Exception:
            # A heartbeat that escaped would stop renewing while the backend runs on: log it, keep beating.
            log.exception("registration.heartbeat_crashed", **fields, retry_in=interval)
            continue
        if response.status_code == 201:
            log.warning("registration.reconnected", **fields,
                        hint="the gateway had dropped this server (restarted, or the lease ran out)")
        elif response.status_code in _HEARTBEAT_REFUSALS:
            log.error("registration.heartbeat_refused", **fields, status=response.status_code,
                      error=_gateway_reason(response), retry_in=interval)
        elif not response.is_success:
            log.warning("registration.heartbeat_failed", **fields, status=response.status_code,
                        error=_gateway_reason(response), retry_in=interval)


async def _disconnect(http: httpx.AsyncClient, instance: ConnectedInstance) -> None:
    fields = {"gateway": instance.gateway_url, "service": instance.service, "server": instance.server_id}
    path = f"/api/mcp/servers/{quote(instance.server_name, safe='')}/{quote(instance.server_id, safe='')}"
    try:
        response = await http.delete(path)
    except httpx.HTTPError as exc:
        log.warning("registration.disconnect_failed", **fields, error=_failure(exc),
                    hint=f"the gateway ends the lease within {instance.ttl:g}s anyway")
        return
    if not response.is_success:
        log.warning("registration.disconnect_failed", **fields, status=response.status_code,
                    error=_gateway_reason(response), hint=f"the gateway ends the lease within {instance.ttl:g}s anyway")
        return
    log.info("registration.disconnected", **fields)


def connected(
    gateway_url: str,
    service: str,
    port: int,
    *,
    ip: str | None = None,
    server_id: str | None = None,
    weight: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    group: str = DEFAULT_GROUP,
    token: str | None = None,
    ttl: float = 30.0,
    timeout: float = 5.0,
) -> contextlib.AbstractAsyncContextManager[ConnectedInstance]:
    """``async with connected("http://127.0.0.1:8080", "weather-api", 8000) as instance: ...``

    Raises ``InvalidRegistration`` at once for bad arguments; see ``hold_connection`` for the rest.
    """
    return hold_connection(
        GatewayConnection(
            gateway_url, service, port, ip=ip, server_id=server_id, weight=weight, metadata=metadata or {},
            group=group, token=token, ttl=ttl, timeout=timeout,
        )
    )


async def run_until_signal(
    registration: Registration[_Instance],
    *,
    on_registered: Callable[[_Instance], None] | None = None,
    on_deregistered: Callable[[_Instance], None] | None = None,
    stop: asyncio.Event | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> _Instance:
    """Hold the registration (Nacos or gateway) until one of ``signals`` arrives (or ``stop`` is set), then end it.

    The handlers are installed before registering, so a signal during
    start-up also ends in a clean deregistration, and the previous handlers
    are restored afterwards.  Must run in the main thread's event loop.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with registration.holding() as instance:
            if on_registered is not None:
                on_registered(instance)
            await stop.wait()
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
    if on_deregistered is not None:
        on_deregistered(instance)
    return instance
