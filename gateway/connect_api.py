"""The connect API: backends register themselves with the gateway when there is no Nacos.

    POST   /api/mcp/servers/connect                 {serverId, serverName, host, port, weight?, metadata?,
                                                     groupName?, namespaceId?, ttlSeconds?}
    DELETE /api/mcp/servers/{serverName}/{serverId}
    GET    /api/mcp/servers                         every instance the register holds, with its origin

``serverName`` is the backend *service* name, the one a server spec's
``serviceRef.serviceName`` refers to (with ``groupName`` for its
``serviceRef.groupName``); ``serverId`` identifies one instance of it.  The
instances go into the gateway's ``ServerRegister``, and ``RegisteringSource``
(remote.overlay) merges them into the instance lists of the matching
service, so they reach clusters through the same cascade as Nacos instances.
The register also mirrors the instances Nacos or the files tree lists for
the services the gateway watches: the listing shows both, each with its
``origin`` (``connect`` or ``source``), and counts both.  Only connected
instances can be disconnected here; a source instance is refused with 409,
since deleting it here would not remove it from the source.
In the DELETE path and in the GET answer a service outside ``DEFAULT_GROUP``
is named ``group@@service``, as Nacos names grouped services.

A connection may be a lease: with ``ttlSeconds`` (or the gateway's
``connect_ttl`` default) it ends by itself unless the same connect request
is sent again within that many seconds, so a backend that dies without
disconnecting (SIGKILL, a lost host) leaves its clusters instead of waiting
for outlier ejection.  Sending the request again is the heartbeat: it
answers 200 and renews the lease.  An expiry is applied like a DELETE.

"Immediately" is part of the contract: a POST or DELETE answers only after
the change has been delivered to the listeners of that service and they
have applied it (bounded by ``settle_timeout``; ``applied`` in the answer
says whether that bound was met), so the next tool call already sees it.

What a connect request may hold is bounded and spelled out, since every
field ends up in a URL or a path: ``host`` is an IP address or a DNS host
name (no port, scheme or path: ``127.0.0.1:9999`` or ``http://h/`` is
refused, naming the field), ``port`` a JSON integer; ``serverId``,
``serverName`` and ``groupName`` are made of ``NAME_CHARSET`` (letters,
digits, ``.``, ``_``, ``-``, ``:``; not starting with ``.`` or ``-``) so that
every connected server can be named in the DELETE path.  A body is at most
``max_body`` bytes and ``max_depth`` levels of arrays and objects deep.

Whoever can connect a backend can steer tool calls to any address, so the
API is guarded: with ``connect_token`` set, every request must carry
``Authorization: Bearer <token>``; without it, only loopback callers (a
backend on the gateway's own host, a sidecar) are accepted.  Metadata values
may be secrets: they are neither logged nor returned, only their keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.gateway.frontdoor import ADMIN_SCOPE_KEY
from mcpgw.registry.models import Instance
from mcpgw.registry.server_register import Origin, RegistrationError, ServerRegister
from mcpgw.remote.base import DEFAULT_GROUP, ServiceKey
from mcpgw.remote.overlay import RegisteringSource, register_name

log = structlog.get_logger("mcpgw.connect")

MAX_BODY = 64 * 1024  # a connect request is a few hundred bytes; anything far larger is a mistake or an attack
MAX_DEPTH = 8  # the body is an object holding one object (metadata) of strings: depth 2
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY = 256
MAX_METADATA_VALUE = 4096
MAX_TTL = 86400.0
MAX_WEIGHT = 10000.0  # what Nacos accepts, so a server moving between Nacos and the gateway keeps its weight


_MetadataKey = Annotated[str, Field(min_length=1, max_length=MAX_METADATA_KEY)]
_MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]

NAME_CHARSET = "letters, digits, '.', '_', '-' and ':', starting with a letter, a digit or '_'"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"must be made of {NAME_CHARSET}")
    return value


def _host(value: str) -> str:
    """An IP address or a DNS host name, nothing else (a port, scheme, path or user goes elsewhere or nowhere)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.split(".")
    if all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return value.lower()
    hint = ""
    if any(mark in value for mark in "/?#@"):
        hint = "; give only the host, without scheme, user, path or query"
    elif ":" in value and not value.startswith("["):
        hint = "; give the port in 'port'"
    raise ValueError(f"must be an IP address or a DNS host name (letters, digits, '-' and dots){hint}")


_Name = Annotated[str, AfterValidator(_name)]


class ConnectRequest(BaseModel):
    """The body of ``POST /api/mcp/servers/connect``; unknown fields are rejected (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    serverId: _Name = Field(min_length=1, max_length=256)
    serverName: _Name = Field(min_length=1, max_length=512)
    host: Annotated[str, AfterValidator(_host)] = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535, strict=True)
    weight: float = Field(default=1.0, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    metadata: dict[_MetadataKey, _MetadataValue] = Field(default_factory=dict, max_length=MAX_METADATA_ENTRIES)
    groupName: _Name | None = Field(default=None, min_length=1, max_length=256)
    namespaceId: str | None = Field(default=None, min_length=1)
    ttlSeconds: float | None = Field(default=None, ge=1, le=MAX_TTL, allow_inf_nan=False)
    """Lease: the connection ends unless this request is sent again within that many seconds."""


def _problem(status: int, message: str, problems: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if problems is not None:
        body["problems"] = problems
    return JSONResponse(body, status_code=status)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds ``limit`` bytes (declared or received)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth_problem(body: bytes, limit: int) -> str | None:
    """Where ``body`` nests arrays and objects deeper than ``limit`` (a sentence with the byte offset), if it does.

    A scan of the brackets outside strings, before any parsing: ``json.loads``
    of a 20,000-deep document would recurse until Python gives up.
    """
    depth = 0
    in_string = False
    escaped = False
    for offset, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return (f"the body nests arrays and objects more than {limit} levels deep (at byte {offset}); "
                        "a connect request is one object whose metadata is an object of strings")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _field(loc: tuple[int | str, ...]) -> str:
    # An empty metadata key shows as an empty part of the location: leave it out ("metadata.[key]").
    return ".".join(str(part) for part in loc if part != "") or "(body)"


def _instance_document(instance: Instance, origin: Origin) -> dict[str, Any]:
    return {
        "serverId": instance.id,
        "origin": origin,
        "host": instance.host,
        "port": instance.port,
        "scheme": instance.scheme,
        "weight": instance.weight,
        "healthy": instance.healthy,
        "enabled": instance.enabled,
        "metadataKeys": sorted(instance.metadata),
    }


class ConnectApi:
    """The three routes, over the gateway's register, its registering source and its adapter."""

    def __init__(
        self,
        register: ServerRegister,
        source: RegisteringSource,
        adapter: MCPServerAdapter | None = None,
        *,
        settle_timeout: float = 5.0,
        token: str | None = None,
        default_ttl: float | None = None,
        max_body: int = MAX_BODY,
        max_depth: int = MAX_DEPTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._register = register
        self._source = source
        self._adapter = adapter
        self._settle_timeout = settle_timeout
        self._token = token.encode() if token else None
        self._default_ttl = default_ttl
        self._max_body = max_body
        self._max_depth = max_depth
        self.clock = clock
        self._leases: dict[tuple[str, str], float] = {}
        """(service name, server id) → when its lease ends, on ``clock``."""
        self._leases_changed = asyncio.Event()

    # -- leases -----------------------------------------------------------------

    def lease_deadline(self, name: str, server_id: str) -> float | None:
        return self._leases.get((name, server_id))

    def expire_due(self) -> list[tuple[str, str]]:
        """Disconnect every connection whose lease has ended; returns them (service name, server id)."""
        now = self.clock()
        due = [key for key, deadline in self._leases.items() if deadline <= now]
        for name, server_id in due:
            del self._leases[(name, server_id)]
            if self._register.unregister(name, server_id):
                log.warning("connect.expired", service=name, server=server_id,
                            hint="the backend sent no connect request within its ttlSeconds")
        return due

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Ends the leases that run out, while the block runs."""
        task = asyncio.create_task(self._expire_loop(), name="connect-leases")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _expire_loop(self) -> None:
        while True:
            self.expire_due()
            self._leases_changed.clear()
            wait = min(self._leases.values(), default=None)
            try:
                timeout = None if wait is None else max(0.0, wait - self.clock())
                await asyncio.wait_for(self._leases_changed.wait(), timeout)
            except TimeoutError:
                pass

    def routes(self) -> list[Route]:
        return [
            Route("/api/mcp/servers/connect", self._guarded(self.connect), methods=["POST"]),
            Route("/api/mcp/servers/{serverName}/{serverId}", self._guarded(self.disconnect), methods=["DELETE"]),
            Route("/api/mcp/servers", self._guarded(self.list_servers), methods=["GET"]),
        ]

    def _guarded(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            refusal = self._refusal(request)
            return refusal if refusal is not None else await handler(request)

        return guarded

    def _refusal(self, request: Request) -> Response | None:
        if request.scope.get(ADMIN_SCOPE_KEY) is True:
            return None  # the front door verified the gateway's admin credential
        if self._token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self._token):
                return None
            log.warning("connect.unauthorized", client=request.client.host if request.client else None)
            return _problem(401, "the connect API needs the gateway's connect token: send "
                                 "'Authorization: Bearer <token>' (the gateway's connect_token setting)")
        if _is_loopback(request.client.host if request.client else None):
            return None
        log.warning("connect.refused_remote", client=request.client.host if request.client else None)
        return _problem(403, "the connect API accepts callers on other hosts only with a token: set the "
                             "gateway's connect_token (MCPGW_CONNECT_TOKEN) and send it as a bearer token")

    async def connect(self, request: Request) -> Response:
        body_bytes = await _bounded_body(request, self._max_body)
        if body_bytes is None:
            return _problem(413, f"the connect request is larger than {self._max_body} bytes "
                                 "(connect_max_body); send only serverId, serverName, host, port and the "
                                 "optional fields")
        too_deep = json_depth_problem(body_bytes, self._max_depth)
        if too_deep is not None:
            return _problem(400, f"{too_deep} (connect_max_depth)")
        try:
            raw = json.loads(body_bytes)
        except (ValueError, RecursionError) as exc:
            return _problem(400, f"the body is not valid JSON ({exc}); send a JSON object with serverId, "
                                 "serverName, host and port")
        try:
            body = ConnectRequest.model_validate(raw)
        except ValidationError as exc:
            problems = [{"field": _field(error["loc"]), "message": error["msg"]} for error in exc.errors()]
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return _problem(422, f"invalid connect request: {summary}", problems)
        namespace = body.namespaceId or self._source.namespace
        if namespace != self._source.namespace:
            message = (f"namespaceId {namespace!r} is not this gateway's namespace {self._source.namespace!r}: "
                       "connect to the gateway that serves that namespace, or leave namespaceId out")
            return _problem(422, f"invalid connect request: namespaceId: {message}",
                            [{"field": "namespaceId", "message": message}])
        key = ServiceKey(namespace, body.groupName or DEFAULT_GROUP, body.serverName)
        name = register_name(key)
        scheme: Literal["http", "https"] = "https" if body.metadata.get("protocol") == "https" else "http"
        try:
            created = self._register.connect(
                name, body.serverId, body.host, body.port, weight=body.weight, metadata=body.metadata, scheme=scheme
            )
        except RegistrationError as exc:
            return _problem(422, str(exc))
        ttl = body.ttlSeconds if body.ttlSeconds is not None else self._default_ttl
        if ttl is None:
            self._leases.pop((name, body.serverId), None)
        else:
            self._leases[(name, body.serverId)] = self.clock() + ttl
        self._leases_changed.set()
        log.info("connect.connected", service=name, server=body.serverId, address=f"{body.host}:{body.port}",
                 weight=body.weight, new=created, ttl=ttl, metadata_keys=sorted(body.metadata))
        applied = await self._settle(name)
        return JSONResponse(
            {"serverId": body.serverId, "serverName": name, "service": str(key), "created": created,
             "applied": applied, "instances": self._register.count(name), "ttlSeconds": ttl},
            status_code=201 if created else 200,
        )

    async def disconnect(self, request: Request) -> Response:
        name = request.path_params["serverName"]
        server_id = request.path_params["serverId"]
        if not self._register.unregister(name, server_id):
            if self._register.origin(name, server_id) == "source":
                return _problem(409, f"server {server_id!r} of service {name!r} comes from the gateway's source "
                                     "(Nacos or the files tree), not from the connect API: deregister it there")
            return _problem(404, f"no server {server_id!r} of service {name!r} is connected; "
                                 "GET /api/mcp/servers lists the connected ones")
        self._leases.pop((name, server_id), None)
        log.info("connect.disconnected", service=name, server=server_id)
        applied = await self._settle(name)
        return JSONResponse({"serverId": server_id, "serverName": name, "removed": True, "applied": applied,
                             "instances": self._register.count(name)})

    async def list_servers(self, request: Request) -> Response:
        now = self.clock()
        servers: dict[str, list[dict[str, Any]]] = {}
        for name, record in sorted(self._register.all().items()):
            documents = servers[name] = []
            for instance, origin in record.entries():
                document = _instance_document(instance, origin)
                deadline = self._leases.get((name, instance.id)) if origin == "connect" else None
                if deadline is not None:
                    document["expiresInSeconds"] = round(max(0.0, deadline - now), 3)
                documents.append(document)
        return JSONResponse({"namespace": self._source.namespace, "statistics": self._register.get_statistics(),
                             "servers": servers})

    async def _settle(self, name: str) -> bool:
        """Wait until the change reached the listeners of service ``name`` and they applied it."""
        try:
            async with asyncio.timeout(self._settle_timeout):
                await self._source.wait_delivered()
                if self._adapter is not None:
                    for listener in list(self._adapter.listeners.values()):
                        service = listener.service
                        if service is not None and self._source.name_of(service) == name:
                            await listener.wait_idle()
        except TimeoutError:
            log.warning("connect.settle_timeout", service=name, within=self._settle_timeout)
            return False
        return True
