"""Nacos credential references end to end: files source → gateway → official MCP client → a real REST backend.

The tools spec is the one Nacos' console and documentation give for a
credential, ``{{ ${nacos.weatherKey/credentials}.data }}`` in a header, with
the config ``credentials/weatherKey`` holding ``{"data": "key-abc-123"}``.
The backend is a Starlette app on loopback that records the header it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mcp.client import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcpgw.adapter.publish import Publisher
from mcpgw.adapter.publish_documents import load_documents
from mcpgw.adapter.publish_targets import FilesTarget
from mcpgw.converter.validate import validate_path
from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import Settings
from mcpgw.remote.base import ConfigKey, tools_spec_key
from tests.gateway import listening_socket, serving, state_until, text
from tests.support.builders import rest_tool, server_files, tools_doc

SID = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
CREDENTIAL = ConfigKey("public", "credentials", "weatherKey")
FIRST, SECOND = "key-abc-123", "key-xyz-789"
EXAMPLE_HEADER = {"key": "X-App-Key", "value": "{{ ${nacos.weatherKey/credentials}.data }}"}


@dataclass
class Backend:
    keys: list[str | None] = field(default_factory=list)

    def app(self) -> Starlette:
        async def forecast(request: Request) -> JSONResponse:
            self.keys.append(request.headers.get("x-app-key"))
            return JSONResponse({"city": request.query_params.get("city"), "summary": "sunny"})

        return Starlette(routes=[Route("/forecast", forecast)])


@dataclass
class Served:
    url: str
    tree: Path
    gateway: Gateway
    backend: Backend

    async def call(self, path: str = "/mcp/weather", tool: str = "get_forecast") -> str:
        async with Client(self.url + path, mode="legacy", cache=None) as session:
            result = await session.call_tool(tool, {"city": "Hangzhou"})
        assert result.is_error is not True, text(result)
        return text(result)

    async def exposed(self, path: str = "/mcp/weather") -> str:
        """Everything a client or an operator can read: tools/list and /admin/state."""
        async with Client(self.url + path, mode="legacy", cache=None) as session:
            listed = (await session.list_tools()).tools
        async with httpx.AsyncClient(trust_env=False) as http:
            state = (await http.get(self.url + "/admin/state")).text
        return json.dumps([t.model_dump() for t in listed]) + state

    def status(self, server_id: str = SID) -> Any:
        return self.gateway.store.current.statuses[server_id]


def write(tree: Path, key: ConfigKey, content: str | None) -> None:
    path = tree / "config" / key.namespace / key.group / key.data_id
    if content is None:
        path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)


def example_tools() -> str:
    return tools_doc(rest_tool("get_forecast", args=("city",), template={
        "requestTemplate": {"url": "/forecast", "method": "GET", "argsToUrlParam": True, "headers": [EXAMPLE_HEADER]},
        "responseTemplate": {"body": "{{ .city }}: {{ .summary }}"},
    }))


@contextlib.asynccontextmanager
async def serve(tree: Path) -> AsyncIterator[Served]:
    backend = Backend()
    sock = listening_socket()
    naming = tree / "naming/public/DEFAULT_GROUP/weather-api.json"
    naming.parent.mkdir(parents=True, exist_ok=True)
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": sock.getsockname()[1], "weight": 1,
                                   "healthy": True, "enabled": True}]))
    gateway = Gateway(Settings(files=tree, discovery_interval=3600, upstream_timeout=2.0))
    async with serving(backend.app(), sock), serving(gateway.asgi()) as url:
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        yield Served(url, tree, gateway, backend)


def console_tree(tree: Path) -> None:
    """The three configs as Nacos' console writes them, and the referenced credential config."""
    for key, content in server_files(SID, "weather", "1.0.0", example_tools(), service="weather-api").items():
        write(tree, key, content)
    write(tree, CREDENTIAL, json.dumps({"data": FIRST}))


async def test_the_documentation_example_validates_is_served_and_a_rotation_reaches_the_next_call(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    console_tree(tree)
    assert validate_path(tree) == []  # what `mcpgw validate TREE` runs
    assert validate_path(tree / "config/public/mcp-tools" / tools_spec_key(SID, "1.0.0").data_id) == []

    async with serve(tree) as served, asyncio.timeout(10):
        assert await served.call() == "Hangzhou: sunny"
        assert served.backend.keys == [FIRST]
        assert FIRST not in await served.exposed()

        before = served.status().revision
        write(tree, CREDENTIAL, json.dumps({"data": SECOND}))
        await state_until(served.gateway.store, lambda: served.status().revision != before)
        await served.call()
        await served.call("/mcp", "weather_get_forecast")

        assert served.backend.keys == [FIRST, SECOND, SECOND]
        exposed = await served.exposed()
    assert FIRST not in exposed and SECOND not in exposed


async def test_a_deleted_credential_config_keeps_the_last_good_value_and_shows_where_it_is_referenced(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    console_tree(tree)

    async with serve(tree) as served, asyncio.timeout(10):
        await served.call()
        write(tree, CREDENTIAL, None)
        await state_until(served.gateway.store, lambda: served.status().phase == "stale")
        await served.call()
        async with httpx.AsyncClient(trust_env=False) as http:
            state = (await http.get(served.url + "/admin/state")).json()

    assert served.backend.keys == [FIRST, FIRST]
    error = state["servers"][SID]["last_error"]
    assert error["file"] == tools_spec_key(SID, "1.0.0").data_id and error["tool"] == "get_forecast"
    assert error["path"] == "$.toolsMeta.get_forecast.templates.json-go-template.requestTemplate.headers[0].value"
    assert "weatherKey (group credentials) does not exist" in error["reason"]
    assert FIRST not in json.dumps(state)


async def test_a_published_document_with_the_example_reference_is_served_with_the_configs_value(
    tmp_path: Path,
) -> None:
    tree, docs = tmp_path / "tree", tmp_path / "docs"
    docs.mkdir()
    (docs / "weather.yaml").write_text(json.dumps({
        "server": {"name": "weather", "version": "1.0.0", "protocol": "http",
                   "serviceRef": {"serviceName": "weather-api"}},
        "tools": [{"name": "get_forecast", "description": "forecast",
                   "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
                   "template": {"requestTemplate": {"url": "/forecast", "method": "GET", "argsToUrlParam": True,
                                                    "headers": [EXAMPLE_HEADER]},
                                "responseTemplate": {"body": "{{ .summary }}"}}}],
    }))
    write(tree, CREDENTIAL, json.dumps({"data": FIRST}))
    [outcome] = await Publisher(FilesTarget(tree)).publish_all(load_documents(docs))
    assert outcome.action == "published" and outcome.warnings == ()

    async with serve(tree) as served, asyncio.timeout(10):
        assert await served.call() == "sunny"
    assert served.backend.keys == [FIRST]


async def test_publishing_against_a_config_without_the_referenced_field_warns_where(tmp_path: Path) -> None:
    tree, docs = tmp_path / "tree", tmp_path / "docs"
    docs.mkdir()
    (docs / "weather.yaml").write_text(json.dumps({
        "server": {"name": "weather", "version": "1.0.0", "protocol": "http",
                   "serviceRef": {"serviceName": "weather-api"}},
        "tools": [{"name": "get_forecast", "description": "forecast", "inputSchema": {"type": "object"},
                   "template": {"requestTemplate": {"url": "/forecast", "headers": [EXAMPLE_HEADER]}}}],
    }))
    write(tree, CREDENTIAL, json.dumps({"token": FIRST}))

    [outcome] = await Publisher(FilesTarget(tree)).publish_all(load_documents(docs))

    assert outcome.action == "published"
    [warning] = outcome.warnings
    assert "has no field 'data'" in warning and "tool get_forecast" in warning and "headers[0].value" in warning
    assert FIRST not in warning
