"""What the tests of the gateway's edge share: a gateway on a copy of the demo tree with a controllable
backend, and a raw MCP client that can send anything (``Wire``), from any loopback address."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import DEMO_TREE, Settings
from tests.gateway import listening_socket, serving

WEATHER = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
TOOLS = f"config/public/mcp-tools/{WEATHER}-1.1.0-mcp-tools.json"
PROTOCOL = "2025-06-18"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@dataclass
class Backend:
    """A REST backend whose ``/slow`` answers only once ``release`` is set; ``arrived`` says a call is waiting."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            body = await request.body()
            self.received.append({"path": request.url.path, "headers": dict(request.headers), "body": body.decode()})
            if request.url.path == "/slow":
                self.waiting += 1
                self.arrived.set()
                try:
                    await self.release.wait()
                finally:
                    self.waiting -= 1
            if request.url.path == "/big":
                size = request.query_params.get("n", "0")
                return Response(b"x" * min(int(size) if size.isdigit() else 0, 1 << 20), media_type="text/plain")
            return JSONResponse({"path": request.url.path, "query": dict(request.query_params)})

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


def tool(name: str, template: dict[str, Any], properties: dict[str, Any] | None = None) -> tuple[dict[str, Any],
                                                                                                    dict[str, Any]]:
    """A tool and its toolsMeta entry for the weather server's tools file."""
    schema = {"type": "object", "properties": properties or {}}
    return ({"name": name, "description": name, "inputSchema": schema},
            {"enabled": True, "templates": {"json-go-template": template}})


EDGE_TOOLS = [
    tool("slow", {"requestTemplate": {"url": "/slow", "method": "POST"}, "responseTemplate": {}}),
    tool("header_arg", {"requestTemplate": {"url": "/echo", "method": "GET"}, "argsPosition": {"v": "header"},
                        "responseTemplate": {}}, {"v": {"type": "string"}}),
    tool("loop", {"requestTemplate": {"url": ""}, "responseTemplate": {"body": "{{ range .args.n }}x{{ end }}"}},
         {"n": {"type": "integer"}}),
    tool("big_answer", {"requestTemplate": {"url": "/big", "method": "GET", "argsToUrlParam": True},
                        "responseTemplate": {}}, {"n": {"type": "integer"}}),
    tool("echo", {"requestTemplate": {"url": "/echo", "method": "GET", "argsToUrlParam": True},
                  "responseTemplate": {}}, {"q": {"type": "string"}}),
]


@dataclass
class Edge:
    url: str
    gateway: Gateway
    backend: Backend

    def wire(self, path: str = "/mcp/weather", *, client_address: str = "127.0.0.1") -> Wire:
        return Wire(self.url + path, client_address)


@contextlib.asynccontextmanager
async def edge_gateway(tmp_path: Path, **settings: Any) -> AsyncIterator[Edge]:
    """The gateway on a copy of the demo tree whose weather server also has ``EDGE_TOOLS``."""
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    tools_file = tree / TOOLS
    doc = json.loads(tools_file.read_text())
    for listed, meta in EDGE_TOOLS:
        doc["tools"].append(listed)
        doc["toolsMeta"][listed["name"]] = meta
    tools_file.write_text(json.dumps(doc))
    backend = Backend()
    backend_sock = listening_socket()
    naming = tree / "naming/public/DEFAULT_GROUP/weather-api.json"
    port = backend_sock.getsockname()[1]
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": port, "weight": 1, "healthy": True, "enabled": True}]))
    gateway = Gateway(Settings(**{"files": tree, "discovery_interval": 3600, "upstream_timeout": 5.0, **settings}))
    async with serving(backend.app(), backend_sock), serving(gateway.asgi()) as url:
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        try:
            yield Edge(url, gateway, backend)
        finally:
            backend.release.set()


class Wire:
    """A raw MCP client over HTTP: it sends what it is told, from ``client_address``."""

    def __init__(self, url: str, client_address: str = "127.0.0.1") -> None:
        self.url = url
        self.http = httpx.AsyncClient(trust_env=False, timeout=10,
                                      transport=httpx.AsyncHTTPTransport(local_address=client_address))
        self.headers: dict[str, str] = dict(ACCEPT)
        self.session_id: str | None = None

    async def __aenter__(self) -> Wire:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def initialize(self) -> httpx.Response:
        response = await self.http.post(self.url, headers=ACCEPT, json=INITIALIZE)
        if response.status_code == 200:
            self.session_id = response.headers["mcp-session-id"]
            self.headers = {**ACCEPT, "mcp-session-id": self.session_id, "mcp-protocol-version": PROTOCOL}
            await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    async def post(self, message: Any = None, *, content: bytes | None = None) -> httpx.Response:
        data = content if content is not None else json.dumps(message).encode()
        return await self.http.post(self.url, headers=self.headers, content=data)

    async def call(self, name: str, arguments: dict[str, Any], request_id: int | str = 1) -> httpx.Response:
        return await self.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                "params": {"name": name, "arguments": arguments}})

    async def list_tools(self, request_id: int | str = 1) -> httpx.Response:
        return await self.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"})

    async def delete(self) -> httpx.Response:
        return await self.http.delete(self.url, headers=self.headers)


def result_text(response: httpx.Response) -> str:
    result = response.json()["result"]
    return "".join(c.get("text", "") for c in result["content"])
