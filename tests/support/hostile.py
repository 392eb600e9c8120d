"""A running gateway, a recording backend and two trap hosts, all on loopback: the stage of the hostile-input tests.

Three servers are served from a files tree:

- ``victim`` (REST, credential ``SECRET`` injected as ``X-API-Key``): tools
  whose url templates attackers would love (``{{ .args.u }}``,
  ``http://127.0.0.1:PORT{{ .args.p }}``, ``http://127.0.0.1{{ .args.h }}/x``),
  a path-argument tool, an echo (200 and 503) and a redirect;
- ``bystander`` and ``third`` (REST): one echo tool each, to show that
  nothing done to another server reaches them.

The backend listens on 127.0.0.1 and echoes what it received; the traps
listen on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback)
and record anything that reaches them, which no test may ever see.
Changes to the tree are applied with ``settle``: re-read the changed file
and wait until discovery and every listener are idle (bounded), so a test
never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import Settings
from mcpgw.remote.base import ConfigKey, ServiceKey, server_spec_key, tools_spec_key, versions_key
from tests.gateway import listening_socket, serving
from tests.support.builders import rest_tool, server_files, tools_doc
from tests.support.mcp_wire import McpWire

VICTIM = "0f6a1d2e-1111-4a6b-8c0e-000000000001"
BYSTANDER = "0f6a1d2e-2222-4a6b-8c0e-000000000002"
THIRD = "0f6a1d2e-3333-4a6b-8c0e-000000000003"
SERVERS = {VICTIM: "victim", BYSTANDER: "bystander", THIRD: "third"}
VERSION = "1.0.0"
SECRET = "sk-live-7f3a9c2b1e8d4f60"
CREDENTIAL = ConfigKey("public", "mcp-credentials", "victim-key.json")
SERVICE = ServiceKey("public", "DEFAULT_GROUP", "backend")
"""The victim's backend service; each server has its own (``SERVICES``), so one's instances file is its alone."""
SERVICES = {VICTIM: SERVICE, BYSTANDER: ServiceKey("public", "DEFAULT_GROUP", "bystander-backend"),
            THIRD: ServiceKey("public", "DEFAULT_GROUP", "third-backend")}


@dataclass
class Seen:
    """What one loopback host received."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self, *, trap: str | None = None) -> Starlette:
        async def record(request: Request) -> Response:
            raw_path = request.scope.get("raw_path") or b""
            seen = {"method": request.method, "path": request.url.path, "raw_path": raw_path.decode(errors="replace"),
                    "query": request.url.query,
                    "headers": dict(request.headers), "body": (await request.body()).decode(errors="replace")}
            self.requests.append(seen)
            path = request.url.path
            if path.startswith("/echo500"):
                return JSONResponse({"error": "backend exploded", "request": seen}, status_code=503)
            if path.startswith("/unservable-json"):
                # JSON that Python's parser takes but no strict encoder writes back.
                return Response(b'{"p": "\\ud800", "n": NaN}', media_type="application/json")
            if path.startswith("/redirect") and trap is not None:
                return RedirectResponse(f"{trap}/stolen", status_code=302)
            return JSONResponse({"request": seen})

        return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST", "PUT", "DELETE"])])


def _template(url: str, **request: Any) -> dict[str, Any]:
    return {"requestTemplate": {"url": url, "method": "GET", "security": {"id": "key"}, **request},
            "responseTemplate": {}}


def victim_tools(backend_port: int) -> str:
    schema = {"type": "object", "properties": {"u": {"type": "string"}, "p": {"type": "string"},
                                               "h": {"type": "string"}, "id": {"type": "string"}}}
    after_port = f"http://127.0.0.1:{backend_port}" + "{{ .args.p }}"
    tools = [
        rest_tool("url_from_arg", schema=schema, template=_template("{{ .args.u }}")),
        rest_tool("path_after_port", schema=schema, template=_template(after_port)),
        rest_tool("host_suffix", schema=schema, template=_template("http://127.0.0.1{{ .args.h }}/x")),
        rest_tool("item", schema=schema, template={**_template("/items/{id}"), "argsPosition": {"id": "path"}}),
        rest_tool("echo", schema=schema, template=_template("/echo/{{ .args.p }}")),
        rest_tool("echo_query_key", schema=schema, template={**_template("/echo"), "requestTemplate": {
            "url": "/echo", "method": "GET", "security": {"id": "query-key"}}}),
        rest_tool("echo500", schema=schema, template=_template("/echo500")),
        rest_tool("redirect", schema=schema, template=_template("/redirect")),
    ]
    security = [
        {"id": "key", "type": "apiKey", "in": "header", "name": "X-API-Key",
         "defaultCredential": "${nacos.victim-key.json/mcp-credentials}"},
        {"id": "query-key", "type": "apiKey", "in": "query", "name": "key",
         "defaultCredential": "${nacos.victim-key.json/mcp-credentials}"},
    ]
    return tools_doc(*tools, security=security)


def echo_tools() -> str:
    return tools_doc(rest_tool("echo", "/echo", args=("q",)))


def tree_files(backend_port: int) -> dict[ConfigKey, str]:
    files: dict[ConfigKey, str] = {CREDENTIAL: SECRET}
    files.update(server_files(VICTIM, "victim", VERSION, victim_tools(backend_port), service=SERVICE.service))
    files.update(server_files(BYSTANDER, "bystander", VERSION, echo_tools(), service=SERVICES[BYSTANDER].service))
    files.update(server_files(THIRD, "third", VERSION, echo_tools(), service=SERVICES[THIRD].service))
    return files


def config_path(tree: Path, key: ConfigKey) -> Path:
    return tree / "config" / key.namespace / key.group / key.data_id


def service_path(tree: Path, key: ServiceKey) -> Path:
    return tree / "naming" / key.namespace / key.group / f"{key.service}.json"


def file_of(server_id: str, kind: str) -> ConfigKey:
    """The config key of a server's versions, server or tools file."""
    if kind == "versions":
        return versions_key(server_id)
    return server_spec_key(server_id, VERSION) if kind == "server" else tools_spec_key(server_id, VERSION)


@dataclass
class Stage:
    url: str
    tree: Path
    gateway: Gateway
    backend: Seen
    traps: Seen
    backend_port: int
    trap_port: int
    http: httpx.AsyncClient

    def wire(self, endpoint: str = "/mcp") -> McpWire:
        return McpWire(self.http, self.url + endpoint)

    async def settle(self, *changed: ConfigKey | ServiceKey) -> None:
        """Re-read the changed files and wait (bounded) until the gateway has applied or rejected them."""
        async with asyncio.timeout(10):
            for key in changed:
                if isinstance(key, ConfigKey):
                    await self.gateway.source.get_config(key)
                else:
                    await self.gateway.source.list_instances(key)
            await self.gateway.adapter.quiesce()

    async def write(self, key: ConfigKey | ServiceKey, content: bytes | str) -> None:
        path = config_path(self.tree, key) if isinstance(key, ConfigKey) else service_path(self.tree, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        await self.settle(key)

    async def state(self) -> dict[str, Any]:
        answer = await self.http.get(self.url + "/admin/state")
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc


def write_tree(tree: Path, files: dict[ConfigKey, str], instances: list[dict[str, Any]]) -> None:
    for key, content in files.items():
        path = config_path(tree, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for service in SERVICES.values():
        naming = service_path(tree, service)
        naming.parent.mkdir(parents=True, exist_ok=True)
        naming.write_text(json.dumps(instances))


@contextlib.asynccontextmanager
async def stage(tmp: Path, **settings: Any) -> AsyncIterator[Stage]:
    """The gateway on the three-server tree, its backend and the two traps, all listening."""
    backend, traps = Seen(), Seen()
    backend_sock = listening_socket()
    backend_port = backend_sock.getsockname()[1]
    trap_a, trap_b = _trap_sockets()
    trap_port = trap_a.getsockname()[1]
    tree = tmp / "tree"
    write_tree(tree, tree_files(backend_port), [{"ip": "127.0.0.1", "port": backend_port}])
    gateway = Gateway(Settings.model_validate({"files": tree, "discovery_interval": 3600, "upstream_timeout": 2.0,
                                               "demo_backend": False, **settings}))
    trap_url = f"http://127.0.0.3:{trap_port}"
    async with (
        serving(backend.app(trap=trap_url), backend_sock),
        serving(traps.app(), trap_a),
        serving(traps.app(), trap_b),
        serving(gateway.asgi()) as url,
        httpx.AsyncClient(trust_env=False, timeout=10) as http,
    ):
        async with asyncio.timeout(10):
            await gateway.adapter.ready.wait()
        yield Stage(url, tree, gateway, backend, traps, backend_port, trap_port, http)


class StageOnItsOwnLoop:
    """The stage on a private event loop, for synchronous hypothesis tests that drive one stage example by example.

    (Hypothesis runs each example as a plain call; the stage's servers run
    whenever ``run`` runs the loop, and wait in their sockets' backlog between.)
    """

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._stage = stage(tmp)
        self.stage: Stage = self.run(self._stage.__aenter__())

    def run(self, coro: Any) -> Any:
        """Run ``coro`` to its end on the stage's loop, bounded."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def close(self) -> None:
        self.run(self._stage.__aexit__(None, None, None))
        self.loop.close()


def _listening(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def _trap_sockets() -> tuple[socket.socket, socket.socket]:
    """Listening on 127.0.0.2 and 127.0.0.3 at one port, so a rendered ``127.0.0.x:PORT`` names either."""
    for _ in range(50):
        first = _listening("127.0.0.2", 0)
        try:
            return first, _listening("127.0.0.3", first.getsockname()[1])
        except OSError:
            first.close()
    raise RuntimeError("no port free on both 127.0.0.2 and 127.0.0.3")
