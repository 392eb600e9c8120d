"""The MCP upstream pool against real MCP servers built with the SDK, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.sse import SseServerTransport
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from mcpgw.gateway.mcp_upstream import (
    McpUpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTransport,
    UpstreamUnavailable,
)
from tests.gateway import listening_socket, serving

TRANSPORTS: list[UpstreamTransport] = ["mcp-streamable", "mcp-sse"]


class Backend:
    """A small MCP server; ``initializations`` counts the sessions clients opened."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.initializations = 0
        self.server = Server("backend", on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.server.middleware.append(self._count_initialize)

    async def _count_initialize(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            self.initializations += 1
        return await call_next(ctx)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[types.Tool(name=name, input_schema={"type": "object"}) for name in ("add", "whoami", "slow")]
        )

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == "add":
            text = str(arguments["a"] + arguments["b"])
        elif params.name == "whoami":
            text = self.tag
        elif params.name == "slow":
            await asyncio.Event().wait()
            text = "never"
        else:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    def app(self, transport: UpstreamTransport) -> Starlette:
        if transport == "mcp-streamable":
            return self.server.streamable_http_app(json_response=True)
        sse = SseServerTransport("/messages/")
        server = self.server

        class SseEndpoint:
            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                async with sse.connect_sse(scope, receive, send) as (read_stream, write_stream):
                    await server.run(read_stream, write_stream, server.create_initialization_options())

        return Starlette(
            routes=[Route("/sse", endpoint=SseEndpoint()), Mount("/messages/", app=sse.handle_post_message)]
        )


def text_of(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


@pytest.fixture
async def pool() -> AsyncIterator[McpUpstreamPool]:
    upstreams = McpUpstreamPool(connect_timeout=5)
    yield upstreams
    await upstreams.close()


@contextlib.asynccontextmanager
async def backend(
    tag: str, transport: UpstreamTransport, sock: socket.socket | None = None
) -> AsyncIterator[tuple[str, Backend]]:
    server = Backend(tag)
    async with serving(server.app(transport), sock) as url:
        yield url, server


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_calls_and_listings_share_one_pooled_session(pool: McpUpstreamPool, transport: UpstreamTransport) -> None:
    async with asyncio.timeout(10), backend("one", transport) as (url, server):
        tools = await pool.list_tools(url, "", transport, timeout=5)
        first = await pool.call_tool(url, "", transport, "add", {"a": 2, "b": 3}, timeout=5)
        second = await pool.call_tool(url, "", transport, "whoami", None, timeout=5)
        assert [tool.name for tool in tools] == ["add", "whoami", "slow"]
        assert (text_of(first), text_of(second)) == ("5", "one")
        assert server.initializations == 1
        await pool.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_pool_reconnects_after_the_backend_restarts(
    pool: McpUpstreamPool, transport: UpstreamTransport
) -> None:
    first = listening_socket()
    port = first.getsockname()[1]
    async with asyncio.timeout(15):
        async with backend("before", transport, first) as (url, _):
            assert text_of(await pool.call_tool(url, "", transport, "whoami", None, timeout=5)) == "before"
        async with backend("after", transport, listening_socket(port)) as (url, restarted):
            assert text_of(await pool.call_tool(url, "", transport, "whoami", None, timeout=5)) == "after"
            assert restarted.initializations == 1
            await pool.close()


async def test_an_unreachable_backend_is_named_without_its_query_string(pool: McpUpstreamPool) -> None:
    closed = listening_socket()
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(UpstreamUnavailable) as caught:
        await pool.call_tool(f"http://127.0.0.1:{port}", "/mcp?token=s3cret", "mcp-streamable", "add", {}, timeout=5)
    message = str(caught.value)
    assert f"The MCP server at http://127.0.0.1:{port}/mcp is unreachable" in message
    assert "s3cret" not in message


async def test_a_backend_that_does_not_answer_in_time_is_a_timeout(pool: McpUpstreamPool) -> None:
    async with asyncio.timeout(10), backend("one", "mcp-streamable") as (url, _):
        with pytest.raises(UpstreamTimeout, match=r"did not answer tools/call 'slow' within 0.3 s"):
            await pool.call_tool(url, "/mcp", "mcp-streamable", "slow", {}, timeout=0.3)
        await pool.close()


async def test_a_json_rpc_error_of_the_backend_is_a_protocol_error(pool: McpUpstreamPool) -> None:
    async with asyncio.timeout(10), backend("one", "mcp-streamable") as (url, _):
        with pytest.raises(UpstreamProtocolError, match="rejected tools/call 'nope': Unknown tool: nope") as caught:
            await pool.call_tool(url, "/mcp", "mcp-streamable", "nope", {}, timeout=5)
        assert caught.value.code == types.INVALID_PARAMS
        await pool.close()


async def test_evicting_an_instance_closes_its_sessions(pool: McpUpstreamPool) -> None:
    async with asyncio.timeout(10), backend("one", "mcp-streamable") as (url, server):
        await pool.call_tool(url, "/mcp", "mcp-streamable", "whoami", None, timeout=5)
        await pool.evict(url)
        await pool.call_tool(url, "/mcp", "mcp-streamable", "whoami", None, timeout=5)
        assert server.initializations == 2
        await pool.close()
