"""The MCP endpoints over real HTTP, driven by the SDK's own client, against an in-test catalog."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp.client import Client, IncomingMessage
from mcp.client.subscriptions import ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcpgw.gateway.frontdoor import Identity
from mcpgw.gateway.mcp_endpoints import (
    InvalidArgumentsError,
    McpEndpoints,
    McpServeOptions,
    UnknownToolError,
    create_mcp_asgi,
)
from mcpgw.registry.errors import InvocationError
from tests.gateway import serving

INIT_PARAMS: dict[str, Any] = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"},
}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def tool(name: str) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"the {name} tool",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}},
    )


class FakeCatalog:
    """A catalog whose tools the test sets; ``swap`` announces the change like the registry does."""

    def __init__(self, tools: dict[str, Sequence[types.Tool]]) -> None:
        self.tools = dict(tools)
        self.calls: list[tuple[str, str, dict[str, Any] | None, str | None]] = []
        self._subscribers: list[Callable[[frozenset[str]], None]] = []

    def has_endpoint(self, endpoint: str) -> bool:
        return endpoint in self.tools

    def list_tools(self, endpoint: str, allowed: Callable[[str, str], bool] | None = None) -> Sequence[types.Tool]:
        return [t for t in self.tools[endpoint] if allowed is None or allowed(endpoint, t.name)]

    def resolve(self, endpoint: str, name: str) -> tuple[str, str] | None:
        return (endpoint, name) if name in {t.name for t in self.tools.get(endpoint, ())} else None

    async def call_tool(
        self, endpoint: str, name: str, arguments: dict[str, Any] | None, *, session_id: str | None,
        caller: Identity | None = None,
    ) -> types.CallToolResult:
        self.calls.append((endpoint, name, arguments, session_id))
        if name not in {t.name for t in self.tools[endpoint]}:
            raise UnknownToolError(f"Tool {name!r} is not served on endpoint {endpoint!r}.")
        if name == "strict":
            raise InvalidArgumentsError("Tool 'strict': argument 'city' is required.")
        if name == "down":
            raise InvocationError("Tool 'down': server 'a' has no healthy instance.")
        if name == "stuck":
            await asyncio.Event().wait()
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(arguments))])

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def swap(self, changes: dict[str, Sequence[types.Tool] | None]) -> None:
        for endpoint, tools in changes.items():
            if tools is None:
                self.tools.pop(endpoint, None)
            else:
                self.tools[endpoint] = tools
        for callback in list(self._subscribers):
            callback(frozenset(changes))


class Inbox:
    """Counts ``notifications/tools/list_changed`` received by one client."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.count += 1
            self.changed.set()

    def reset(self) -> None:
        self.count = 0
        self.changed.clear()


async def until_notified(inbox: Inbox, trigger: Callable[[], None]) -> None:
    """Trigger changes until one arrives: the client opens its GET stream after the handshake, on its own."""
    while not inbox.changed.is_set():
        trigger()
        try:
            async with asyncio.timeout(0.2):
                await inbox.changed.wait()
        except TimeoutError:
            continue


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(
        {
            "": [tool("a_echo"), tool("b_echo")],
            "a": [tool("echo"), tool("strict"), tool("down"), tool("stuck")],
            "b": [tool("echo")],
        }
    )


@pytest.fixture
async def gateway(catalog: FakeCatalog) -> AsyncIterator[tuple[str, McpEndpoints]]:
    app = create_mcp_asgi(catalog, options=McpServeOptions(tool_call_timeout=0.5))
    async with serving(app) as url:
        yield url, app.state.mcp_endpoints


def client(url: str, inbox: Inbox | None = None, mode: str = "legacy") -> Client:
    return Client(url, mode=mode, cache=None, message_handler=inbox)


async def test_aggregate_and_server_endpoints_each_list_their_own_tools(gateway: tuple[str, McpEndpoints]) -> None:
    url, _ = gateway
    async with asyncio.timeout(5):
        async with client(f"{url}/mcp") as aggregate, client(f"{url}/mcp/a") as server_a:
            assert [t.name for t in (await aggregate.list_tools()).tools] == ["a_echo", "b_echo"]
            assert [t.name for t in (await server_a.list_tools()).tools] == ["echo", "strict", "down", "stuck"]
            assert server_a.server_capabilities.tools is not None
            assert server_a.server_capabilities.tools.list_changed is True
            assert server_a.server_info is not None
            assert server_a.server_info.name == "mcpgw/a"


async def test_a_tool_call_returns_the_catalog_result_and_names_the_session(
    gateway: tuple[str, McpEndpoints], catalog: FakeCatalog
) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), client(f"{url}/mcp/a") as session:
        result = await session.call_tool("echo", {"city": "Hangzhou"})
    assert result.is_error is not True
    assert result.content == [types.TextContent(type="text", text='{"city": "Hangzhou"}')]
    [(endpoint, name, arguments, session_id)] = catalog.calls
    assert (endpoint, name, arguments) == ("a", "echo", {"city": "Hangzhou"})
    assert session_id


async def test_an_unknown_endpoint_answers_404_with_a_message_naming_it(gateway: tuple[str, McpEndpoints]) -> None:
    url, _ = gateway
    async with asyncio.timeout(5):
        async with httpx2.AsyncClient() as http:
            response = await http.post(f"{url}/mcp/nope", json=INIT, headers=HEADERS)
        assert response.status_code == 404
        assert "no MCP server named 'nope'" in response.json()["error"]["message"]
        refused = pytest.RaisesExc(MCPError, match="no MCP server named 'nope'")
        with pytest.RaisesGroup(refused, allow_unwrapped=True, flatten_subgroups=True):
            async with client(f"{url}/mcp/nope"):
                pass


async def test_an_unknown_tool_is_a_json_rpc_error(gateway: tuple[str, McpEndpoints]) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), client(f"{url}/mcp/b") as session:
        with pytest.raises(MCPError) as caught:
            await session.call_tool("strict", {})
    assert caught.value.code == types.INVALID_PARAMS
    assert caught.value.message == "Tool 'strict' is not served on endpoint 'b'."


async def test_invalid_arguments_upstream_failures_and_hangs_are_distinct_tool_errors(
    gateway: tuple[str, McpEndpoints],
) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), client(f"{url}/mcp/a") as session:
        invalid = await session.call_tool("strict", {})
        down = await session.call_tool("down", {})
        stuck = await session.call_tool("stuck", {})
    texts = []
    for result in (invalid, down, stuck):
        assert result.is_error is True
        [content] = result.content
        assert isinstance(content, types.TextContent)
        texts.append(content.text)
    assert texts[0] == "Tool 'strict': argument 'city' is required."
    assert texts[1] == "Tool 'down': server 'a' has no healthy instance."
    assert texts[2].startswith("Tool 'stuck' on /mcp/a did not answer within 0.5 s")


async def test_a_catalog_change_notifies_the_sessions_of_that_endpoint_and_no_other(
    gateway: tuple[str, McpEndpoints], catalog: FakeCatalog
) -> None:
    url, endpoints = gateway
    inbox_a, inbox_b = Inbox(), Inbox()
    async with asyncio.timeout(10):
        async with client(f"{url}/mcp/a", inbox_a) as session_a, client(f"{url}/mcp/b", inbox_b):
            await until_notified(inbox_a, lambda: catalog.swap({"a": catalog.tools["a"]}))
            await until_notified(inbox_b, lambda: catalog.swap({"b": catalog.tools["b"]}))
            inbox_a.reset()
            inbox_b.reset()
            told_b = endpoints.notification_count("b")

            catalog.swap({"a": [tool("forecast")]})
            await inbox_a.changed.wait()
            assert [t.name for t in (await session_a.list_tools()).tools] == ["forecast"]
            # The recipients of a change are chosen when it is announced, which
            # happened before a's session heard of it.
            assert endpoints.notification_count("b") == told_b

            # And from b's side: notifications to one session travel in order on
            # its GET stream, so one about a's change would come before this one.
            catalog.swap({"b": [tool("echo"), tool("alerts")]})
            await inbox_b.changed.wait()
            assert (inbox_a.count, inbox_b.count) == (1, 1)


async def test_a_listen_stream_of_the_2026_protocol_receives_tools_list_changed(
    gateway: tuple[str, McpEndpoints], catalog: FakeCatalog
) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), client(f"{url}/mcp/a", mode="auto") as session:
        assert session.protocol_version == "2026-07-28"
        assert [t.name for t in (await session.list_tools()).tools] == ["echo", "strict", "down", "stuck"]
        result = await session.call_tool("echo", {"city": "Paris"})
        assert result.content == [types.TextContent(type="text", text='{"city": "Paris"}')]
        async with session.listen(tools_list_changed=True) as subscription:
            catalog.swap({"a": [tool("forecast")]})
            assert isinstance(await anext(subscription), ToolsListChanged)


async def test_endpoints_follow_the_catalog_at_run_time(
    gateway: tuple[str, McpEndpoints], catalog: FakeCatalog
) -> None:
    url, endpoints = gateway
    async with asyncio.timeout(5):
        catalog.swap({"c": [tool("late")]})
        async with client(f"{url}/mcp/c") as session:
            assert [t.name for t in (await session.list_tools()).tools] == ["late"]
            assert endpoints.session_count("c") == 1
            catalog.swap({"c": None})
            with pytest.raises(MCPError, match="no MCP server named 'c'"):
                await session.list_tools()


async def test_a_session_is_only_valid_on_the_endpoint_that_created_it(gateway: tuple[str, McpEndpoints]) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), httpx2.AsyncClient() as http:
        opened = await http.post(f"{url}/mcp/a", json=INIT, headers=HEADERS)
        session_id = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        headers = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
        elsewhere = await http.post(f"{url}/mcp/b", json=listing, headers=headers)
        assert elsewhere.status_code == 404
        assert elsewhere.json()["error"]["message"] == "Session not found"


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
async def test_every_handshake_protocol_version_is_served_with_list_changed(
    gateway: tuple[str, McpEndpoints], version: str
) -> None:
    url, _ = gateway
    request = {**INIT, "params": {**INIT_PARAMS, "protocolVersion": version}}
    async with asyncio.timeout(5), httpx2.AsyncClient() as http:
        opened = await http.post(f"{url}/mcp", json=request, headers=HEADERS)
    result = opened.json()["result"]
    assert result["protocolVersion"] == version
    assert result["capabilities"]["tools"] == {"listChanged": True}


async def test_delete_ends_a_session(gateway: tuple[str, McpEndpoints]) -> None:
    url, _ = gateway
    async with asyncio.timeout(5), httpx2.AsyncClient() as http:
        opened = await http.post(f"{url}/mcp/a", json=INIT, headers=HEADERS)
        headers = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        assert (await http.delete(f"{url}/mcp/a", headers=headers)).status_code == 200
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        after = await http.post(f"{url}/mcp/a", json=listing, headers=headers)
        assert after.status_code == 404


async def test_in_front_of_serves_mcp_paths_itself_and_passes_every_other_path_and_the_lifespan_on(
    catalog: FakeCatalog,
) -> None:
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    endpoints = McpEndpoints(catalog)
    entered: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        entered.append("lifespan")
        async with endpoints.run():
            yield

    async def behind(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"behind {request.url.path}")

    app = Starlette(routes=[Route("/mcp/a/extra", behind), Route("/mcpx", behind), Route("/healthz", behind)],
                    lifespan=lifespan)
    async with asyncio.timeout(5), serving(endpoints.in_front_of(app)) as url:
        async with client(f"{url}/mcp/a") as session:
            assert (await session.call_tool("echo", {"x": 1})).is_error is not True
        assert entered == ["lifespan"]
        async with httpx2.AsyncClient() as http:
            for path in ("/mcp/a/extra", "/mcpx", "/healthz"):
                response = await http.get(f"{url}{path}")
                assert (response.status_code, response.text) == (200, f"behind {path}")
            missing = await http.post(f"{url}/mcp/nope", json=INIT, headers=HEADERS)
            assert missing.status_code == 404
            assert "no MCP server named 'nope'" in missing.json()["error"]["message"]
