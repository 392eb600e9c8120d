"""MCP servers that other writers put into Nacos, served by ``mcpgw serve --nacos`` (issue 10, item 4).

Everything else in the Nacos suite is written by mcpgw's own publisher; here
the writers are the two that operators actually use:

- **nacos-mcp-wrapper-python**, the official library with which an MCP server
  registers itself: a real FastMCP server (mcp 1.x, in the wrapper's own
  virtual environment, see ``tests/support/mcp_wrapper.py``) releases its
  spec through nacos-sdk-python's AI service over gRPC and registers an
  ephemeral instance in ``{name}::{version}``.  The double does not speak the
  AI module's gRPC requests, so these run against the real Nacos only.
- **the Nacos console**: the exact form fields the 3.1.0-bugfix console's
  "create MCP server" page posts (its ``handleData``, read from the bundle
  in ``nacos-console-3.1.0-bugfix.jar``), sent to the admin API.  A REST
  server names an existing service (``REF``) and carries a tool template
  with an apiKey scheme; an MCP server is given by its URL (``DIRECT``: Nacos
  creates ``mcp-endpoints@@{name}::{version}`` with a persistent instance and
  takes ``exportPath`` from the URL's path) or, as the console's edit page and
  nacos-mcp-router send it, by an existing service plus ``exportPath``.
  These run against the double and the real server.

The backends are real servers on loopback; the gateway is the production
wiring (``Gateway(Settings(nacos=...))``) driven by the official MCP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpgw.adapter.publish_targets import MCP_ADMIN_PATH
from mcpgw.gateway.app import Gateway
from mcpgw.gateway.mcp_upstream import UpstreamTransport
from mcpgw.gateway.settings import Settings
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.state import GatewayState
from mcpgw.remote.base import ServiceKey
from mcpgw.remote.nacos import NacosSource
from tests.gateway import listening_socket, serving, text
from tests.gateway.test_mcp_proxy_e2e import EXPORT_PATH, backend_on
from tests.gateway.test_mcp_proxy_e2e import Backend as McpBackend
from tests.gateway.test_nacos_serve import Registrar, Served, instance_ports, tool_names, unique
from tests.support.mcp_wrapper import (
    WrappedServer,
    WrapperTransport,
    WrapperUnavailable,
    wrapped_server,
    wrapper_python,
)
from tests.support.nacos_target import NacosTarget

BOUND = 10.0
"""A wait on the gateway or Nacos (the listing is polled once a second; a loaded 2-core machine)."""
WRAPPER_BOUND = 30.0
"""A wrapped server's start: an interpreter with mcp 1.x and nacos-sdk-python, its gRPC login and release."""
MCP_ENDPOINTS_GROUP = "mcp-endpoints"


# ---------------------------------------------------------------- the gateway, on the double or the real server


@contextlib.asynccontextmanager
async def gateway_on(target: NacosTarget, state_dir: Path) -> AsyncIterator[Served]:
    settings = Settings(
        nacos=target.server_addr,
        username=target.username,
        password=target.password,
        state_dir=state_dir,
        discovery_interval=0.5,
        upstream_timeout=5.0,
    )
    gateway = Gateway(settings)
    async with serving(gateway.asgi(), listening_socket()) as url:
        async with asyncio.timeout(BOUND):
            await gateway.adapter.ready.wait()
        yield Served(url, gateway)


@pytest.fixture
async def served(nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[Served]:
    async with gateway_on(nacos, tmp_path / "gateway") as running:
        yield running


@pytest.fixture
async def registrar(nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[Registrar]:
    async with Registrar(nacos, tmp_path / "registrations") as running:
        yield running


class Admin:
    """The Nacos admin API as the console's backend sees it; deletes what a test created on a real Nacos."""

    def __init__(self, source: NacosSource, target: NacosTarget) -> None:
        self.source = source
        self.target = target
        self.created: list[str] = []
        self.direct_services: list[tuple[str, str, int]] = []

    async def create(self, form: dict[str, str]) -> str:
        response = await self.source.admin_request("POST", MCP_ADMIN_PATH, form, "create an MCP server")
        answer = response.json()
        assert response.status_code == 200 and answer["code"] == 0, response.text
        server_id = str(answer["data"])
        self.created.append(server_id)
        return server_id

    async def forget_by_name(self, name: str) -> None:
        """Delete at the end a server another writer created (the wrapper never deletes its own)."""
        for info in await self.source.list_mcp_servers():
            if info.name == name:
                self.created.append(info.id)

    async def cleanup(self) -> None:
        if self.target.double is not None:
            return
        for server_id in self.created:
            with contextlib.suppress(McpgwError):
                await self.source.admin_request(
                    "DELETE", MCP_ADMIN_PATH, {"namespaceId": "public", "mcpId": server_id}, "delete a test server"
                )
        # Nacos 3.1 leaves the service it created for a DIRECT endpoint (and its persistent instance) behind.
        for service, ip, port in self.direct_services:
            where = {"namespaceId": "public", "groupName": MCP_ENDPOINTS_GROUP, "serviceName": service}
            with contextlib.suppress(McpgwError):
                await self.source.admin_request(
                    "DELETE", "/nacos/v3/admin/ns/instance",
                    {**where, "ip": ip, "port": str(port), "ephemeral": "false"}, "remove a test instance",
                )
                await self.source.admin_request("DELETE", "/nacos/v3/admin/ns/service", where, "remove a test service")


@pytest.fixture
async def admin(nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[Admin]:
    async with admin_on(nacos, tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def admin_on(target: NacosTarget, tmp_path: Path) -> AsyncIterator[Admin]:
    source = NacosSource(
        target.server_addr, username=target.username, password=target.password,
        cache_dir=tmp_path / "admin" / "cache", log_dir=tmp_path / "admin" / "logs",
    )
    await source.start()
    running = Admin(source, target)
    try:
        yield running
    finally:
        await running.cleanup()
        await source.stop()


# ---------------------------------------------------------------- what the Nacos 3.1.0-bugfix console posts


def console_form(
    name: str, *, protocol: str, front_protocol: str, export_path: str, endpoint: dict[str, Any],
    tool_spec: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The "create MCP server" page's form (``NewMcpServer.handleData``, then ``latest`` = publish now).

    The page pretty-prints the JSON it sends, fills the description from name and version, sends an empty
    ``id`` (Nacos generates one) and no ``mcpName``; the tool specification is the page's tool list plus the
    security schemes of its "advanced" section.
    """
    spec = {
        "protocol": protocol,
        "frontProtocol": front_protocol,
        "name": name,
        "id": "",
        "description": f"{name} v1.0.0",
        "versionDetail": {"version": "1.0.0"},
        "enabled": True,
        "remoteServerConfig": {"exportPath": export_path},
    }
    tools = {"tools": [], "toolsMeta": {}, **(tool_spec or {})}
    tools.setdefault("securitySchemes", [])
    return {
        "id": "",
        "serverSpecification": json.dumps(spec, indent=2),
        "toolSpecification": json.dumps(tools),
        "endpointSpecification": json.dumps(endpoint, indent=2),
        "latest": "true",
    }


def existing_service(service: ServiceKey, transport: str = "http") -> dict[str, Any]:
    """The console's "use an existing service" endpoint (the service picker answers ``group@@name``)."""
    return {"type": "REF", "data": {"namespaceId": service.namespace, "serviceName": service.service,
                                    "groupName": service.group, "transportProtocol": transport}}


def endpoint_url(url: str) -> tuple[dict[str, Any], str]:
    """The console's "MCP Server Endpoint" URL field: a DIRECT endpoint and the URL's path as ``exportPath``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    endpoint = {"type": "DIRECT", "data": {"address": parts.hostname, "port": str(port),
                                           "transportProtocol": parts.scheme}}
    return endpoint, parts.path or "/"


def console_rest_tools(credential: str) -> dict[str, Any]:
    """A tool as the console's tool editor saves it: its own keys in ``toolsMeta`` (Nacos drops them), the
    URL-params starter template with a ``security`` id typed in, and two schemes: the apiKey one in use and
    a second one added and left as the editor fills it in."""
    template = {
        "requestTemplate": {
            "url": "/v1/forecast",
            "method": "GET",
            "headers": [{"key": "Accept", "value": "application/json"}],
            "argsToUrlParam": True,
            "security": {"id": "securityScheme_1"},
        },
        "responseTemplate": {"body": "{{.}}"},
    }
    return {
        "tools": [{"name": "forecast", "description": "Weather forecast for a city", "inputSchema": {
            "type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
            "required": ["city"]}}],
        "toolsMeta": {"forecast": {"enabled": True, "invokeContext": {}, "templates": {"json-go-template": template},
                                   "transparentAuth": False, "securitySchemeId": "", "clientSecuritySchemeId": ""}},
        "securitySchemes": [
            {"id": "securityScheme_1", "type": "apiKey", "scheme": "", "in": "header", "name": "X-Api-Key",
             "defaultCredential": credential},
            {"id": "securityScheme_2", "type": "http", "scheme": "", "in": "", "name": "", "defaultCredential": ""},
        ],
    }


@dataclass
class RestBackend:
    """A REST backend that answers with who it is and the city it was asked about, and notes the API key."""

    label: str
    port: int = 0
    keys: list[str | None] = field(default_factory=list)

    def app(self) -> Starlette:
        async def forecast(request: Request) -> Response:
            self.keys.append(request.headers.get("x-api-key"))
            return JSONResponse({"backend": self.label, "city": request.query_params.get("city")})

        return Starlette(routes=[Route("/v1/forecast", forecast)])


# ---------------------------------------------------------------- the console's payloads, double and real


async def test_console_rest_server_with_an_api_key_scheme_is_served_and_the_backend_gets_the_key(
    served: Served, admin: Admin, registrar: Registrar
) -> None:
    name, service = unique("console-rest"), ServiceKey("public", "DEFAULT_GROUP", unique("weather-api"))
    backend = RestBackend("weather")
    sock = listening_socket()
    backend.port = sock.getsockname()[1]
    async with serving(backend.app(), sock), asyncio.timeout(BOUND):
        await registrar.register(service, backend.port)
        form = console_form(name, protocol="http", front_protocol="mcp-streamable", export_path="",
                            endpoint=existing_service(service), tool_spec=console_rest_tools("key-abc-123"))
        server_id = await admin.create(form)
        await served.until(lambda state: instance_ports(state, server_id) == {backend.port})

        async with served.client(name) as session:
            listed = {t.name: t for t in (await session.list_tools()).tools}
            result = await session.call_tool("forecast", {"city": "Hangzhou"})
    assert sorted(listed) == ["forecast"]
    assert "key-abc-123" not in json.dumps(listed["forecast"].model_dump())
    assert result.is_error is not True, text(result)
    assert text(result) == "map[backend:weather city:Hangzhou]"  # the console's default {{.}}, as Go prints it
    assert backend.keys == ["key-abc-123"]


EndpointKind = Literal["existing service", "endpoint URL"]


@pytest.mark.parametrize("kind", ["existing service", "endpoint URL"])
@pytest.mark.parametrize("transport", ["mcp-streamable", "mcp-sse"])
async def test_console_mcp_server_is_proxied_to_its_export_path_with_the_backends_tools(
    nacos: NacosTarget, served: Served, admin: Admin, registrar: Registrar,
    transport: UpstreamTransport, kind: EndpointKind,
) -> None:
    name = unique(f"console-{transport}")
    backend = McpBackend("native")
    async with backend_on(backend, transport) as port, asyncio.timeout(BOUND):
        if kind == "existing service":
            service = ServiceKey("public", "DEFAULT_GROUP", unique("calc-mcp"))
            await registrar.register(service, port)
            endpoint, export_path = existing_service(service), EXPORT_PATH[transport]
        else:
            endpoint, export_path = endpoint_url(f"http://127.0.0.1:{port}{EXPORT_PATH[transport]}")
            admin.direct_services.append((f"{name}::1.0.0", "127.0.0.1", port))
        form = console_form(name, protocol=transport, front_protocol=transport, export_path=export_path,
                            endpoint=endpoint)
        server_id = await admin.create(form)
        await served.until(lambda state: tool_names(state, name) == {"add", "fail", "whoami"})

        async with served.client(name) as session:
            added = await session.call_tool("add", {"a": 2, "b": 3})
            who = await session.call_tool("whoami", {})
        cluster = served.gateway.store.current.servers[server_id].cluster
    assert (text(added), text(who)) == ("5", "native")
    assert backend.calls == 2
    assert cluster is not None and [i.port for i in cluster.instances] == [port]
    if kind == "endpoint URL":
        assert cluster.service == f"public/{MCP_ENDPOINTS_GROUP}/{name}::1.0.0"
        assert [i.ephemeral for i in await admin.source.list_instances(
            ServiceKey("public", MCP_ENDPOINTS_GROUP, f"{name}::1.0.0"))] == [False]


# ---------------------------------------------------------------- nacos-mcp-wrapper-python, on the real server


@pytest.fixture(scope="session")
def wrapper() -> Path:
    try:
        return wrapper_python()
    except WrapperUnavailable as exc:
        pytest.skip(f"nacos-mcp-wrapper-python cannot run here: {exc}")


@pytest.fixture
async def real_served(real_nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[Served]:
    if real_nacos.process is not None and not real_nacos.process.running:
        await real_nacos.start()  # a restart test that failed before starting it again
    async with gateway_on(real_nacos, tmp_path / "gateway") as running:
        yield running


@pytest.fixture
async def real_admin(real_nacos: NacosTarget, tmp_path: Path) -> AsyncIterator[Admin]:
    async with admin_on(real_nacos, tmp_path) as running:
        yield running


def wrapped_id(served: Served, name: str) -> str | None:
    return next((sid for sid, s in served.gateway.store.current.servers.items() if s.name == name), None)


async def until_serving(served: Served, wrapped: WrappedServer, ports: set[int]) -> str:
    """Wait until the gateway serves the wrapped server's tools from exactly ``ports``; returns its id."""
    def ready(_state: GatewayState) -> bool:
        server_id = wrapped_id(served, wrapped.name)
        return server_id is not None and tool_names(served.gateway.store.current, wrapped.name) == {"add", "whoami"} \
            and instance_ports(served.gateway.store.current, server_id) == ports

    await wrapped.alive_until(served.until(ready))
    server_id = wrapped_id(served, wrapped.name)
    assert server_id is not None
    return server_id


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_server_registered_by_nacos_mcp_wrapper_is_listed_and_callable_through_the_gateway(
    real_nacos: NacosTarget, real_served: Served, real_admin: Admin, wrapper: Path, tmp_path: Path,
    transport: WrapperTransport,
) -> None:
    name = unique("wrapped")
    async with wrapped_server(wrapper, real_nacos, tmp_path, name=name, transport=transport, label="only") as wrapped:
        try:
            async with asyncio.timeout(WRAPPER_BOUND):
                server_id = await until_serving(real_served, wrapped, {wrapped.port})
            async with asyncio.timeout(BOUND), real_served.client(name) as session:
                listed = {t.name: t for t in (await session.list_tools()).tools}
                added = await session.call_tool("add", {"a": 40, "b": 2})
                who = await session.call_tool("whoami", {})
                invalid = await session.call_tool("add", {"a": "forty"})
            status = real_served.gateway.store.current.statuses[server_id]
        finally:
            await real_admin.forget_by_name(name)
    assert sorted(listed) == ["add", "whoami"]
    assert listed["add"].description == "Add two integers"
    assert sorted(listed["add"].input_schema["required"]) == ["a", "b"]
    assert (text(added), text(who)) == ("42", "only")
    assert invalid.is_error is True  # the schema the wrapper published is checked at the gateway
    assert status.applied_version == "1.0.0"


async def test_second_wrapped_process_joins_the_cluster_and_a_stopped_one_leaves_it(
    real_nacos: NacosTarget, real_served: Served, real_admin: Admin, wrapper: Path, tmp_path: Path,
) -> None:
    name = unique("wrapped")
    try:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                wrapped_server(wrapper, real_nacos, tmp_path, name=name, transport="streamable-http", label="first"))
            async with asyncio.timeout(WRAPPER_BOUND):
                await until_serving(real_served, first, {first.port})
            # The second finds the server in Nacos, checks it is compatible and only registers its instance.
            second = await stack.enter_async_context(
                wrapped_server(wrapper, real_nacos, tmp_path, name=name, transport="streamable-http", label="second"))
            async with asyncio.timeout(WRAPPER_BOUND):
                await until_serving(real_served, second, {first.port, second.port})
            async with asyncio.timeout(BOUND), real_served.client(name) as session:
                answered: set[str] = set()
                while answered != {"first", "second"}:  # balanced: both take calls (bounded by the timeout)
                    answered.add(text(await session.call_tool("whoami", {})))

            await first.stop()  # SIGTERM: the wrapper never deregisters, its connection ending removes it
            async with asyncio.timeout(BOUND):
                await until_serving(real_served, second, {second.port})
            async with asyncio.timeout(BOUND), real_served.client(name) as session:
                after = [text(await session.call_tool("whoami", {})) for _ in range(3)]
    finally:
        await real_admin.forget_by_name(name)
    assert after == ["second"] * 3
