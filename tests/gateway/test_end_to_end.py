"""The whole gateway over real HTTP on loopback: files source → adapter → state → MCP → REST backend.

The backend is a recording Starlette app, so each test can assert what the
backend received (or that it received nothing).
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.demo_backend import create_demo_backend
from mcpgw.gateway.settings import DEMO_TREE, Settings
from tests.gateway import Inbox, listening_socket, serving, state_until, text

WEATHER = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
TOOLS_11 = f"config/public/mcp-tools/{WEATHER}-1.1.0-mcp-tools.json"


@dataclass
class Recorder:
    requests: list[dict[str, Any]] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        demo = create_demo_backend()

        async def record(request: Request) -> Response:
            body = await request.body()
            self.requests.append({"method": request.method, "path": request.url.path,
                                  "query": dict(request.query_params), "headers": dict(request.headers),
                                  "body": body.decode()})
            if request.url.path == "/fail":
                return JSONResponse({"error": "database down"}, status_code=503)
            if request.url.path == "/slow":
                await self.never.wait()
            if request.url.path.startswith("/echo"):
                return JSONResponse(self.requests[-1])
            return await delegate(request, body)

        async def delegate(request: Request, body: bytes) -> Response:
            captured: dict[str, Any] = {}

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    captured["status"] = message["status"]
                    captured["headers"] = message["headers"]
                elif message["type"] == "http.response.body":
                    captured["body"] = captured.get("body", b"") + message.get("body", b"")

            await demo(request.scope, receive, send)  # type: ignore[arg-type]
            headers = {k.decode(): v.decode() for k, v in captured["headers"] if k.decode() != "content-length"}
            return Response(captured["body"], status_code=captured["status"], headers=headers)

        return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST", "PUT", "DELETE"])])


def _describe_first_tool(description: str, doc: dict[str, Any]) -> None:
    doc["tools"][0]["description"] = description


@dataclass
class Running:
    url: str
    tree: Path
    gateway: Gateway
    backend: Recorder

    def client(self, path: str = "/mcp", inbox: Inbox | None = None) -> Client:
        return Client(self.url + path, mode="legacy", cache=None, message_handler=inbox)

    def edit_tools(self, edit: Callable[[dict[str, Any]], None]) -> None:
        path = self.tree / TOOLS_11
        doc = json.loads(path.read_text())
        edit(doc)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False) as http:
            data: dict[str, Any] = (await http.get(self.url + "/admin/state")).json()
            return data


def add_tool(doc: dict[str, Any], name: str, url: str, *, method: str = "GET", template: dict[str, Any] | None = None,
             schema: dict[str, Any] | None = None) -> None:
    doc["tools"].append({"name": name, "description": name,
                         "inputSchema": schema or {"type": "object", "properties": {"q": {"type": "string"}}}})
    doc["toolsMeta"][name] = {"enabled": True, "templates": {"json-go-template": template or {
        "requestTemplate": {"url": url, "method": method, "argsToUrlParam": True}, "responseTemplate": {}}}}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    recorder = Recorder()
    backend_sock = listening_socket()
    port = backend_sock.getsockname()[1]
    naming = tree / "naming/public/DEFAULT_GROUP/weather-api.json"
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": port, "weight": 1, "healthy": True, "enabled": True}]))
    gateway = Gateway(Settings(files=tree, discovery_interval=3600, upstream_timeout=1.0))
    async with serving(recorder.app(), backend_sock), serving(gateway.asgi()) as url:
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        yield Running(url, tree, gateway, recorder)
    recorder.never.set()




async def test_aggregate_and_per_server_endpoints_list_their_tools(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as agg, running.client("/mcp/weather") as weather:
        assert sorted(t.name for t in (await agg.list_tools()).tools) == [
            "gateway-info_greet", "weather_get_city", "weather_get_forecast", "weather_report_observation"]
        listed = {t.name: t for t in (await weather.list_tools()).tools}
    assert sorted(listed) == ["get_city", "get_forecast", "report_observation"]
    assert "demo-secret-key" not in json.dumps([t.model_dump() for t in listed.values()])


async def test_rest_tool_sends_query_args_and_api_key_and_renders_the_response_template(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as session:
        result = await session.call_tool("weather_get_forecast", {"city": "Hangzhou", "days": "2"})
    assert result.is_error is not True
    assert text(result).startswith("Forecast for Hangzhou:\n- 2026-01-01:")
    [sent] = running.backend.requests
    assert sent["query"] == {"city": "Hangzhou", "days": "2"}
    assert sent["headers"]["x-api-key"] == "demo-secret-key"


async def test_path_argument_is_url_encoded_and_output_schema_gives_structured_content(running: Running) -> None:
    async with asyncio.timeout(5), running.client("/mcp/weather") as session:
        result = await session.call_tool("get_city", {"name": "San Francisco"})
    assert running.backend.requests[0]["path"] == "/cities/San Francisco"
    assert result.structured_content == {"name": "San Francisco", "country": "United States", "population": 808000}


async def test_json_body_tool_maps_a_4xx_through_the_error_template(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as session:
        result = await session.call_tool("weather_report_observation", {"city": "Oslo", "temperature": 99})
    assert result.is_error is True
    assert text(result) == "The weather service refused the observation: temperature must be between -90 and 60 °C"
    assert json.loads(running.backend.requests[0]["body"]) == {"city": "Oslo", "temperature": 99}


async def test_direct_response_tool_answers_without_any_backend_call(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as session:
        result = await session.call_tool("gateway-info_greet", {"name": "Ada"})
    assert text(result) == "hello, Ada"
    assert running.backend.requests == []


async def test_invalid_arguments_are_rejected_before_the_backend_sees_anything(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as session:
        result = await session.call_tool("weather_get_forecast", {"days": "many"})
    assert result.is_error is True
    assert "city" in text(result) and "required" in text(result)
    assert running.backend.requests == []


async def test_unknown_tool_is_a_protocol_error_naming_it(running: Running) -> None:
    async with asyncio.timeout(5), running.client() as session:
        with pytest.raises(MCPError, match="nope"):
            await session.call_tool("nope", {})


async def test_hot_reload_new_tool_is_announced_and_callable(running: Running) -> None:
    inbox = Inbox()
    async with asyncio.timeout(10), running.client("/mcp/weather", inbox) as session:
        await session.list_tools()
        revision = 0
        while not inbox.changed.is_set():  # the client opens its notification stream on its own schedule
            revision += 1
            running.edit_tools(functools.partial(_describe_first_tool, f"rev {revision}"))
            try:
                async with asyncio.timeout(0.3):
                    await inbox.changed.wait()
            except TimeoutError:
                continue
        inbox.changed.clear()
        running.edit_tools(lambda d: add_tool(d, "echo", "/echo"))
        await inbox.changed.wait()
        assert "echo" in [t.name for t in (await session.list_tools()).tools]
        result = await session.call_tool("echo", {"q": "hi"})
    assert json.loads(text(result))["query"] == {"q": "hi"}


async def _wait_for(predicate: Callable[[], bool], gateway: Gateway) -> None:
    await state_until(gateway.store, predicate)


async def test_disabled_tool_is_not_listed_and_not_callable(running: Running) -> None:
    running.edit_tools(lambda d: d["toolsMeta"]["get_city"].update(enabled=False))
    async with asyncio.timeout(5):
        await _wait_for(lambda: "get_city" not in (running.gateway.store.current.tools("weather") or {}),
                        running.gateway)
        async with running.client("/mcp/weather") as session:
            assert "get_city" not in [t.name for t in (await session.list_tools()).tools]
            with pytest.raises(MCPError, match="get_city"):
                await session.call_tool("get_city", {"name": "Lisbon"})
    assert running.backend.requests == []


async def test_broken_tools_file_keeps_last_good_tools_and_shows_the_error(running: Running) -> None:
    (running.tree / TOOLS_11).write_text('{"tools": [')
    async with asyncio.timeout(5):
        await _wait_for(lambda: running.gateway.store.current.statuses[WEATHER].phase == "stale", running.gateway)
        state = await running.state()
        async with running.client("/mcp/weather") as session:
            result = await session.call_tool("get_city", {"name": "Lisbon"})
    error = state["servers"][WEATHER]["last_error"]
    assert error["file"] == f"{WEATHER}-1.1.0-mcp-tools.json" and "not valid JSON" in error["reason"]
    assert state["servers"][WEATHER]["applied_version"] == "1.1.0"
    assert result.structured_content == {"name": "Lisbon", "country": "Portugal", "population": 545000}


async def test_backend_5xx_is_an_error_result_naming_the_status(running: Running) -> None:
    running.edit_tools(lambda d: add_tool(d, "fail", "/fail", method="POST"))
    async with asyncio.timeout(5):
        await _wait_for(lambda: "fail" in (running.gateway.store.current.tools("weather") or {}), running.gateway)
        async with running.client("/mcp/weather") as session:
            result = await session.call_tool("fail", {})
    assert result.is_error is True
    assert "503" in text(result)
    assert len(running.backend.requests) == 1  # a POST is not idempotent: no retry


async def test_backend_timeout_is_a_clear_error_within_the_configured_timeout(running: Running) -> None:
    running.edit_tools(lambda d: add_tool(d, "slow", "/slow", method="POST"))
    async with asyncio.timeout(5):
        await _wait_for(lambda: "slow" in (running.gateway.store.current.tools("weather") or {}), running.gateway)
        async with running.client("/mcp/weather") as session:
            started = asyncio.get_running_loop().time()
            result = await session.call_tool("slow", {})
            elapsed = asyncio.get_running_loop().time() - started
    assert result.is_error is True
    assert "did not answer within 1 s" in text(result)
    assert elapsed < 3


async def test_no_instance_is_a_clear_error(running: Running) -> None:
    (running.tree / "naming/public/DEFAULT_GROUP/weather-api.json").write_text("[]")
    async with asyncio.timeout(5):
        await _wait_for(lambda: not running.gateway.store.current.servers[WEATHER].cluster.instances,  # type: ignore[union-attr]
                        running.gateway)
        async with running.client("/mcp/weather") as session:
            result = await session.call_tool("get_city", {"name": "Lisbon"})
    assert result.is_error is True
    assert "no healthy instance of public/DEFAULT_GROUP/weather-api" in text(result)


async def test_readyz_and_healthz_answer(running: Running) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(running.url + "/healthz")).status_code == 200
        ready = await http.get(running.url + "/readyz")
        metrics = await http.get(running.url + "/metrics")
    assert ready.json()["ready"] is True
    assert 'mcpgw_servers{phase="serving"} 2.0' in metrics.text
