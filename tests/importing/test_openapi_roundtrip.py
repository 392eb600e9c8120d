"""``mcpgw import openapi`` round trips: real public OpenAPI documents imported, published to a files tree, served,
and called with the official MCP client against a loopback backend that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.client import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.cli import main
from mcpgw.gateway.settings import Settings
from tests.gateway import listening_socket, serving

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openapi"


@dataclass
class Recorder:
    """A REST backend that answers every request with a JSON object and keeps what it got."""

    answer: Any = field(default_factory=lambda: [{"id": 1, "name": "Rex", "tag": "dog"}])
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            body = await request.body()
            self.requests.append({"method": request.method, "path": request.url.path,
                                  "raw_path": request.scope["raw_path"].decode(),
                                  "query": dict(request.query_params), "headers": dict(request.headers),
                                  "body": json.loads(body) if body else None})
            return JSONResponse(self.answer)

        return Starlette(routes=[Route("/{path:path}", handle,
                                       methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])])


@dataclass
class Served:
    url: str
    server: str
    backend: Recorder
    document: dict[str, Any]

    def client(self) -> Client:
        return Client(f"{self.url}/mcp/{self.server}", mode="legacy", cache=None)


async def import_and_publish(tmp_path: Path, source: Path, *extra: str) -> tuple[Path, dict[str, Any]]:
    """What an operator runs: ``mcpgw import openapi`` then ``mcpgw publish --files`` (the CLI's own event loop)."""
    out = tmp_path / "imported.yaml"
    assert await asyncio.to_thread(
        main, ["import", "openapi", str(source), "--service", "api-backend", "-o", str(out), *extra]) == 0
    tree = tmp_path / "tree"
    assert await asyncio.to_thread(main, ["publish", str(out), "--files", str(tree)]) == 0
    return tree, yaml.safe_load(out.read_text())


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, source: Path, *extra: str, configs: dict[str, Any] | None = None
                ) -> AsyncIterator[Served]:
    tree, document = await import_and_publish(tmp_path, source, *extra)
    for path, content in (configs or {}).items():
        (tree / "config/public" / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / "config/public" / path).write_text(json.dumps(content))
    backend = Recorder()
    sock = listening_socket()
    naming = tree / "naming/public/DEFAULT_GROUP/api-backend.json"
    naming.parent.mkdir(parents=True, exist_ok=True)
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": sock.getsockname()[1], "weight": 1}]))
    gateway = Gateway(Settings(files=tree, discovery_interval=3600, upstream_timeout=5.0))
    async with serving(backend.app(), sock), serving(gateway.asgi()) as url:
        async with asyncio.timeout(10):
            await gateway.adapter.ready.wait()
        status = next(iter(gateway.store.current.statuses.values()))
        assert status.phase == "serving", status
        yield Served(url, document["server"]["name"], backend, document)


@pytest.mark.parametrize("fixture", ["petstore-3.0.yaml", "petstore-3.1.yaml", "petstore-2.0.yaml",
                                     "petstore-separate/spec/openapi.yaml"])
async def test_petstore_imports_publishes_serves_and_calls(tmp_path: Path, fixture: str) -> None:
    async with serve(tmp_path, FIXTURES / fixture) as served, served.client() as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"listPets", "createPets", "showPetById"}
        assert tools["listPets"].annotations is not None and tools["listPets"].annotations.read_only_hint is True
        assert tools["createPets"].annotations.read_only_hint is False  # type: ignore[union-attr]
        assert tools["showPetById"].input_schema["required"] == ["petId"]
        listed = await session.call_tool("listPets", {"limit": 2})
        shown = await session.call_tool("showPetById", {"petId": "../admin 7"})
    assert not listed.is_error and not shown.is_error
    first, second = served.backend.requests
    assert (first["method"], first["path"], first["query"]) == ("GET", "/v1/pets", {"limit": "2"})
    # The path argument stays one path segment, whatever it holds.
    assert (second["method"], second["raw_path"]) == ("GET", "/v1/pets/..%2Fadmin%207")
    text = listed.content[0].text  # type: ignore[union-attr]
    assert "its fields:" in text and "[].name (string)" in text
    assert json.loads(text.split("The answer:\n", 1)[1]) == served.backend.answer


async def test_a_large_real_api_imports_and_its_bodies_and_queries_reach_the_backend(tmp_path: Path) -> None:
    """The Docker Engine API (Swagger 2.0, 107 operations): queries, path arguments and a flattened JSON body."""
    async with serve(tmp_path, FIXTURES / "docker-engine-2.0.yaml") as served, served.client() as session:
        names = {t.name for t in (await session.list_tools()).tools}
        listed = await session.call_tool("ContainerList", {"all": True, "limit": 5})
        created = await session.call_tool("ContainerCreate", {"name": "web", "Image": "nginx:1.27",
                                                              "Cmd": ["nginx", "-g", "daemon off;"],
                                                              "Env": ["A=1"]})
        stopped = await session.call_tool("ContainerStop", {"id": "web", "t": 3})
    assert len(names) >= 100 and {"ContainerList", "ContainerCreate", "SystemPing", "ImageList"} <= names
    assert len(served.document["tools"]) == len(names)
    assert not (listed.is_error or created.is_error or stopped.is_error)
    container_list, container_create, container_stop = served.backend.requests
    assert (container_list["method"], container_list["path"]) == ("GET", "/v1.53/containers/json")
    assert container_list["query"] == {"all": "true", "limit": "5"}
    assert (container_create["method"], container_create["path"], container_create["query"]) == (
        "POST", "/v1.53/containers/create", {"name": "web"})
    assert container_create["body"] == {"Image": "nginx:1.27", "Cmd": ["nginx", "-g", "daemon off;"],
                                        "Env": ["A=1"]}
    assert container_create["headers"]["content-type"].startswith("application/json")
    assert (container_stop["method"], container_stop["path"], container_stop["query"]) == (
        "POST", "/v1.53/containers/web/stop", {"t": "3"})


RECURSIVE = {
    "openapi": "3.1.0",
    "info": {"title": "Trees", "version": "2.1"},
    "servers": [{"url": "https://trees.example.com/api"}],
    "components": {
        "securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Tree-Key"}},
        "schemas": {
            "Node": {"type": "object", "required": ["value"], "properties": {
                "id": {"type": "integer", "readOnly": True},
                "value": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}},
            "Forest": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        },
    },
    "security": [{"key": []}],
    "paths": {
        "/trees": {"post": {"operationId": "plant", "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
            "responses": {"201": {"description": "planted", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Node"}}}}}}},
        "/forests/{name}": {"put": {"operationId": "replant", "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Forest"}}}},
            "responses": {"204": {"description": "done"}}}},
    },
}


async def test_a_recursive_schema_becomes_defs_and_the_credential_is_read_from_its_nacos_config(
    tmp_path: Path,
) -> None:
    source = tmp_path / "trees.json"
    source.write_text(json.dumps(RECURSIVE))
    credential = {"mcp-credentials/trees-key.json": {"data": "s3cret-tree-key"}}
    async with serve(tmp_path, source, configs=credential) as served, served.client() as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        plant = tools["plant"].input_schema
        nested = {"value": "oak", "children": [{"value": "acorn", "children": [{"value": "seed"}]}]}
        planted = await session.call_tool("plant", nested)
        refused = await session.call_tool("plant", {"value": "oak", "children": [{"children": []}]})
        replanted = await session.call_tool("replant", {"name": "north", "body": [nested]})
    # The recursion is a $defs entry; the top-level node's own fields are the arguments.
    assert plant["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert set(plant["$defs"]["Node"]["properties"]) == {"value", "children"}  # readOnly id is not asked for
    assert plant["required"] == ["value"] and "id" not in plant["properties"]
    assert not planted.is_error and not replanted.is_error
    assert refused.is_error  # the inner node lacks its required value: refused by the gateway, not sent
    first, second = served.backend.requests
    assert (first["method"], first["path"], first["body"]) == ("POST", "/api/trees", nested)
    assert first["headers"]["x-tree-key"] == "s3cret-tree-key"
    assert (second["method"], second["path"], second["body"]) == ("PUT", "/api/forests/north", [nested])
    scheme = served.document["securitySchemes"][0]
    assert scheme["defaultCredential"] == "{{ ${nacos.trees-key.json/mcp-credentials}.data }}"
    assert "s3cret" not in json.dumps(served.document)
