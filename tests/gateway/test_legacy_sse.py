"""The legacy HTTP+SSE transport, with the official SDK's SSE client: list, call, and list_changed on the stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from mcp.client import Client
from mcp.client.sse import sse_client

from tests.gateway import Inbox, text
from tests.gateway.edge import TOOLS, edge_gateway


def sse(url: str, inbox: Inbox | None = None) -> Client:
    return Client(sse_client(url), mode="legacy", cache=None, message_handler=inbox)


async def test_an_sse_client_lists_and_calls_a_servers_tools_and_hears_when_they_change(tmp_path: Any) -> None:
    async with edge_gateway(tmp_path) as edge:
        inbox = Inbox()
        async with asyncio.timeout(10), sse(edge.url + "/sse/weather", inbox) as session:
            listed = {tool.name for tool in (await session.list_tools()).tools}
            assert {"get_forecast", "echo"} <= listed
            result = await session.call_tool("echo", {"q": "over-sse"})
            assert result.is_error is not True and "over-sse" in text(result)
            assert edge.gateway.endpoints.session_count("weather") == 1

            tools_file = edge.gateway.settings.files_root / TOOLS
            doc = json.loads(tools_file.read_text())
            doc["tools"] = [t for t in doc["tools"] if t["name"] != "echo"]
            tools_file.write_text(json.dumps(doc))
            await inbox.changed.wait()
            assert "echo" not in {tool.name for tool in (await session.list_tools()).tools}
        # The stream closed: the session is gone from the endpoint and from the session bounds.
        async with asyncio.timeout(5):
            await edge.gateway.legacy_sse.idle.wait()
        assert edge.gateway.endpoints.session_count("weather") == 0 and len(edge.gateway.endpoints.sessions) == 0


async def test_the_aggregate_sse_endpoint_serves_every_servers_tools_by_their_prefixed_names(tmp_path: Any) -> None:
    async with edge_gateway(tmp_path) as edge, asyncio.timeout(10), sse(edge.url + "/sse") as session:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        assert {"weather_echo", "gateway-info_greet"} <= listed
        greeted = await session.call_tool("gateway-info_greet", {"name": "sse"})
        assert greeted.is_error is not True and "sse" in text(greeted)


async def test_unknown_sse_endpoints_and_sessions_are_refused_with_a_reason(tmp_path: Any) -> None:
    async with edge_gateway(tmp_path) as edge, httpx.AsyncClient(trust_env=False, timeout=5) as http:
        missing = await http.get(edge.url + "/sse/no-such-server")
        stranger = await http.post(edge.url + "/messages/weather/?session_id=" + "0" * 32,
                                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        async with asyncio.timeout(10), sse(edge.url + "/sse/weather") as session:
            await session.list_tools()
            garbled = await http.post(edge.url + "/messages/weather/?session_id=not-hex", json={})
            unknown = await http.post(edge.url + "/messages/weather/?session_id=" + "0" * 32,
                                      json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert missing.status_code == 404 and "no-such-server" in missing.json()["error"]["message"]
    assert stranger.status_code == 404
    assert garbled.status_code == 400 and unknown.status_code == 404
