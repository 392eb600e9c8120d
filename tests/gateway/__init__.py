"""Tests of the data plane, and what they share: real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import mcp_types as types
import uvicorn
from mcp.client import IncomingMessage
from starlette.types import ASGIApp

from mcpgw.registry.state import StateStore


def listening_socket(port: int = 0) -> socket.socket:
    """A loopback socket already listening, so clients may connect before the server runs.

    Declared TCP: asyncio sets TCP_NODELAY only on sockets whose protocol says
    TCP, and without it every keep-alive answer waits ~40 ms for a delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn in this event loop; yields its base URL.

    The socket listens before uvicorn starts, so nothing has to wait for
    ``server.started``: early connections queue until the lifespan is up.
    """
    sock = sock or listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def text(result: types.CallToolResult) -> str:
    """The text content of a tool result, joined."""
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Inbox:
    """A client message handler that notes ``notifications/tools/list_changed``."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.changed.set()


async def state_until(store: StateStore, predicate: Callable[[], bool]) -> None:
    """Wait (the caller bounds it) until ``predicate`` holds; checked now and after every state swap."""
    changed = asyncio.Event()
    unsubscribe = store.subscribe(lambda _change: changed.set())
    try:
        while not predicate():
            await changed.wait()
            changed.clear()
    finally:
        unsubscribe()
