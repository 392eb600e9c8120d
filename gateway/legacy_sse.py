"""The legacy HTTP+SSE transport (protocol 2024-11-05) for clients that speak nothing newer.

Some clients (older IDE plugins, agents built on the first SDKs, anything made
for Higress' ``/sse`` endpoints) open a GET event stream, read an
``endpoint`` event naming where to POST, and then send each JSON-RPC message
there, receiving every answer on the stream. The SDK ships that transport
(``SseServerTransport``); this module puts it in front of the same endpoint
servers the Streamable HTTP transport uses, so nothing about tools differs:

- ``GET /sse`` (all tools) and ``GET /sse/{server}`` open a session; their
  message endpoints are ``POST /messages/?session_id=…`` and
  ``POST /messages/{server}/?session_id=…``.
- A session runs the endpoint's own low-level server, so it is tracked like a
  Streamable HTTP session once initialized and gets
  ``notifications/tools/list_changed`` on its stream when its tools change.
- It counts against the same session bounds (``sessions.max_total``,
  ``sessions.max_per_client``; an idle one may be evicted to make room), is
  refused while the gateway drains, and ends when its endpoint stops being
  served or the gateway stops.
- Message bodies are bounded like Streamable HTTP's, and the transport
  security settings (Host / Origin checks) are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import mcp_types as types
import structlog
from mcp.server.sse import SseServerTransport
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpgw.gateway.mcp_edge import MAX_BODY, SERVER_BUSY, Reply, client_of

if TYPE_CHECKING:
    from mcpgw.gateway.mcp_endpoints import McpEndpoints

log = structlog.get_logger(__name__)

SSE_PREFIX = "/sse"
MESSAGES_PREFIX = "/messages"


@dataclass(eq=False)
class _SseEndpoint:
    transport: SseServerTransport
    sessions: dict[UUID, asyncio.Event] = field(default_factory=dict)
    """Open sessions by id: setting the event ends the session."""


class LegacySse:
    """ASGI apps for ``/sse[/{server}]`` and ``/messages[/{server}]/``, sharing ``endpoints``' servers."""

    def __init__(self, endpoints: McpEndpoints) -> None:
        self._endpoints = endpoints
        self._served: dict[str, _SseEndpoint] = {}
        self.idle = asyncio.Event()
        """Set while no SSE session is open (drain and tests wait on it)."""
        self.idle.set()

    def routes(self) -> list[Route]:
        connect: ASGIApp = _Connect(self)
        post: ASGIApp = _Post(self)
        return [
            Route(SSE_PREFIX, endpoint=connect, methods=["GET"]),
            Route(SSE_PREFIX + "/{name}", endpoint=connect, methods=["GET"]),
            Route(MESSAGES_PREFIX, endpoint=post, methods=["POST"]),
            Route(MESSAGES_PREFIX + "/", endpoint=post, methods=["POST"]),
            Route(MESSAGES_PREFIX + "/{name}", endpoint=post, methods=["POST"]),
            Route(MESSAGES_PREFIX + "/{name}/", endpoint=post, methods=["POST"]),
        ]

    def session_count(self) -> int:
        return sum(len(served.sessions) for served in self._served.values())

    def _transport(self, name: str) -> _SseEndpoint:
        served = self._served.get(name)
        if served is None:
            path = MESSAGES_PREFIX + "/" + (f"{name}/" if name else "")
            served = _SseEndpoint(SseServerTransport(path, security_settings=self._endpoints.security,
                                                     max_request_body_size=MAX_BODY))
            self._served[name] = served
        return served

    async def connect(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoints = self._endpoints
        shown = f"{SSE_PREFIX}/{name}" if name else SSE_PREFIX
        if not endpoints.has_endpoint(name):
            await Reply(404, types.INVALID_REQUEST, f"No MCP endpoint at {shown}: this gateway serves no MCP "
                        f"server named {name!r}. A server appears at {SSE_PREFIX}/<name> once it is published "
                        "and enabled in the registry.").send(send)
            return
        if endpoints.draining:
            await Reply(503, SERVER_BUSY, "The gateway is shutting down and opens no new sessions; connect to "
                        "another instance", headers=((b"connection", b"close"),)).send(send)
            return
        running = await endpoints.ready_endpoint(name)
        if running is None:
            await Reply(503, SERVER_BUSY, f"The MCP endpoint {shown} is not running (the gateway is starting or "
                        "stopping); retry in a moment.").send(send)
            return
        server, stopped = running
        client = client_of(scope)
        refusal = endpoints.sessions.admit(client)
        if refusal is not None:
            log.warning("mcp.session.refused", client=client, endpoint=shown, status=refusal.status,
                        transport="sse")
            await refusal.send(send)
            return
        served = self._transport(name)
        end = asyncio.Event()
        session_key: str | None = None
        try:
            async with served.transport.connect_sse(scope, receive, send) as (read, write):
                session = next(reversed(served.transport._read_stream_writers))  # the one just made
                served.sessions[session] = end
                self.idle.clear()
                session_key = f"sse:{session.hex}"
                endpoints.sessions.opened(client, session_key, name, end_session(end))
                log.info("mcp.sse.opened", endpoint=shown, session=session.hex[:8], client=client)
                try:
                    await _until_any(server.run(read, write, server.create_initialization_options()),
                                     stopped.wait(), end.wait())
                finally:
                    served.sessions.pop(session, None)
                    await write.aclose()
                    log.info("mcp.sse.closed", endpoint=shown, session=session.hex[:8])
        except ValueError:
            pass  # refused by the transport's Host/Origin check: it has answered already
        finally:
            if session_key is None:
                endpoints.sessions.opened(client, None, name, end_session(end))
            else:
                endpoints.sessions.closed(session_key)
            if self.session_count() == 0:
                self.idle.set()

    async def post(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        served = self._served.get(name)
        if served is None:
            await Reply(404, types.INVALID_REQUEST, "Could not find session: open one with GET "
                        f"{SSE_PREFIX}{'/' + name if name else ''} first").send(send)
            return
        await served.transport.handle_post_message(scope, receive, send)

    def stop_all(self) -> None:
        for served in self._served.values():
            for end in served.sessions.values():
                end.set()


def end_session(end: asyncio.Event) -> Any:
    async def close() -> None:
        end.set()

    return close


async def _until_any(*work: Any) -> None:
    """Run ``work`` side by side until the first finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Connect:
    def __init__(self, sse: LegacySse) -> None:
        self._sse = sse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._sse.connect(scope.get("path_params", {}).get("name", ""), scope, receive, send)


class _Post:
    def __init__(self, sse: LegacySse) -> None:
        self._sse = sse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._sse.post(scope.get("path_params", {}).get("name", ""), scope, receive, send)
