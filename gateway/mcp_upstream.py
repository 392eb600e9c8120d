"""Calls to native MCP backends (``mcp-streamable``, ``mcp-sse``), over pooled SDK client sessions.

A tool served from a native MCP server is proxied: the gateway is an MCP
client of the backend instance the balancer picked.  Opening an MCP session
costs an ``initialize`` round trip (and for SSE a long-lived GET), so the pool
keeps one initialized session per backend endpoint (instance address +
``exportPath`` + transport) and shares it between calls.

The SDK's client sessions are anyio structures that must be entered and left
by the same task, so each pooled session lives in a task of its own; callers
only send requests over it.  A session is replaced when it breaks:

- its transport ends (an SSE stream closed, a streamable-HTTP POST that
  could not connect) — noticed by the owner task, the next call reconnects;
- the backend no longer knows the session (it restarted: HTTP 404 "session
  not found") — the call is retried once on a new session, which is safe
  because the backend refused it without running it.

A call whose connection drops after the request may have reached the backend
is *not* retried: a tool call is not assumed to be idempotent.

The pool also says when a backend's tools may have changed — it sent
``notifications/tools/list_changed``, or a session had to be re-established
(a restarted backend may be a new release) — so ``McpBackendTools``, the
control plane's view of backend tool lists, can have them listed again.

Every failure becomes an ``InvocationError`` subclass whose message names the
backend address without credentials or query string (``exportPath`` may carry
a token), says what happened and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import mcp_types as types
import structlog
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcpgw.registry.errors import InvocationError
from mcpgw.registry.models import Instance, Route

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp.client.session import IncomingMessage
    from mcp.shared._stream_protocols import ReadStream
    from mcp.shared.message import SessionMessage

log = structlog.get_logger("mcpgw.upstream")

UpstreamTransport = Literal["mcp-streamable", "mcp-sse"]

_DEFAULT_EXPORT_PATH: Final[dict[str, str]] = {"mcp-streamable": "/mcp", "mcp-sse": "/sse"}
_LIST_PAGE_CAP: Final = 100
_LISTING_ATTEMPTS: Final = 3
_RESULT = TypeVar("_RESULT")


class UpstreamUnavailable(InvocationError):
    """The backend MCP server cannot be reached, or the connection to it was lost."""


class UpstreamTimeout(InvocationError):
    """The backend MCP server did not answer in time."""


class UpstreamProtocolError(InvocationError):
    """The backend answered with a JSON-RPC error or with something that is not valid MCP."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def endpoint_url(base_url: str, export_path: str, transport: UpstreamTransport) -> str:
    """The backend's MCP endpoint: instance base URL + ``exportPath`` (or the transport's usual path)."""
    path = export_path or _DEFAULT_EXPORT_PATH[transport]
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def public_address(url: str) -> str:
    """``url`` without user info, query or fragment: what may appear in messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _root_cause(exc: BaseException) -> BaseException:
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, asyncio.CancelledError)]
    return leaves[0] if leaves else exc


def _describe(exc: BaseException) -> str:
    # Exception texts can embed the full URL (with its query); only say what kind of failure it was.
    cause = _root_cause(exc)
    if isinstance(cause, httpx2.HTTPStatusError):
        return f"it answered HTTP {cause.response.status_code}"
    if isinstance(cause, httpx2.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(cause, httpx2.TimeoutException | TimeoutError):
        return "the connection timed out"
    if isinstance(cause, MCPError):
        return f"JSON-RPC error {cause.code}: {cause.message}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


def _never_reached_backend(exc: BaseException | None) -> bool:
    return exc is not None and isinstance(_root_cause(exc), httpx2.ConnectError)


def _is_unknown_session(exc: MCPError) -> bool:
    # The spec's answer to a request for a session the server does not know is
    # HTTP 404; the SDK client turns it into a JSON-RPC error and keeps only the
    # text, which differs between server SDKs ("Session not found", "Session
    # terminated", "Unknown session ID", ...).
    text = exc.message.lower()
    return "session" in text and any(word in text for word in ("not found", "terminated", "unknown", "expired"))


class _WatchedReadStream:
    """The transport's read stream, relayed, reporting when it ends.

    The SDK client does not say when its transport is gone (an SSE stream
    closed by a restarting backend looks like an idle session); the end of
    the read stream is the one reliable sign.
    """

    def __init__(self, inner: ReadStream[SessionMessage | Exception], ended: asyncio.Event) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError):
            self._ended.set()
            raise

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched_transport(
    url: str, transport: UpstreamTransport, ended: asyncio.Event
) -> AsyncIterator[TransportStreams]:
    opened = streamable_http_client(url) if transport == "mcp-streamable" else sse_client(url)
    async with opened as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, ended), write_stream


class _PooledSession:
    """One initialized client session, owned by its own task."""

    def __init__(
        self,
        url: str,
        transport: UpstreamTransport,
        *,
        connect_timeout: float,
        client_info: types.Implementation,
        on_tools_changed: Callable[[str], None],
        replaces: bool,
    ) -> None:
        self.url = url
        self.address = public_address(url)
        self.transport: UpstreamTransport = transport
        self._connect_timeout = connect_timeout
        self._client_info = client_info
        self._on_tools_changed = on_tools_changed
        self._replaces = replaces
        self._client: Client | None = None
        self._ready = asyncio.Event()
        # Set when the session must go: closed by the pool, or its transport ended.
        self._ended = asyncio.Event()
        self.failure: BaseException | None = None
        self.task = asyncio.create_task(self._own(), name=f"mcp-upstream:{self.address}")

    @property
    def usable(self) -> bool:
        return not (self.task.done() or self._ended.is_set())

    async def _own(self) -> None:
        # Everything is caught: this task's failure is data for the callers.
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout(self._connect_timeout):
                    client = await stack.enter_async_context(
                        Client(
                            _watched_transport(self.url, self.transport, self._ended),
                            mode="legacy",
                            cache=None,
                            client_info=self._client_info,
                            read_timeout_seconds=self._connect_timeout,
                            message_handler=self._on_message,
                        )
                    )
                self._client = client
                self._ready.set()
                log.info("upstream.session.opened", address=self.address, transport=self.transport)
                if self._replaces:
                    self._on_tools_changed(self.url)
                await self._ended.wait()
        except Exception as exc:
            self.failure = exc
            log.warning("upstream.session.failed", address=self.address, reason=_describe(exc))
        finally:
            self._client = None
            self._ready.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            log.info("upstream.tools_changed", address=self.address)
            self._on_tools_changed(self.url)

    async def client(self) -> Client:
        await self._ready.wait()
        client = self._client
        if client is None:
            reason = _describe(self.failure) if self.failure is not None else "the session was closed"
            raise UpstreamUnavailable(
                f"The MCP server at {self.address} is unreachable ({reason}); check that the instance "
                "is running and reachable from the gateway."
            )
        return client

    async def wait_ended(self, within: float) -> None:
        await asyncio.wait({self.task}, timeout=within)

    def close_soon(self) -> None:
        self._ended.set()

    async def aclose(self, grace: float) -> None:
        self._ended.set()
        done, _ = await asyncio.wait({self.task}, timeout=grace)
        if not done:
            self.task.cancel()
            await asyncio.wait({self.task})


class McpUpstreamPool:
    """Pooled MCP client sessions to native MCP backends, one per (instance endpoint, transport)."""

    def __init__(
        self, *, connect_timeout: float = 10.0, client_name: str = "mcpgw", client_version: str = "0.1.0"
    ) -> None:
        self._connect_timeout = connect_timeout
        self._client_info = types.Implementation(name=client_name, version=client_version)
        self._sessions: dict[tuple[str, UpstreamTransport], _PooledSession] = {}
        self._retired: set[_PooledSession] = set()
        self._opened: set[tuple[str, UpstreamTransport]] = set()
        self._tools_watchers: list[Callable[[str], None]] = []
        self._closed = False

    def on_tools_changed(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(endpoint_url)`` when that backend's tools may have changed; returns unsubscribe."""
        self._tools_watchers.append(callback)

        def unsubscribe() -> None:
            if callback in self._tools_watchers:
                self._tools_watchers.remove(callback)

        return unsubscribe

    def _tools_changed(self, url: str) -> None:
        for callback in list(self._tools_watchers):
            try:
                callback(url)
            except Exception:
                log.exception("upstream.tools_watcher_failed", address=public_address(url))

    async def call_tool(
        self,
        base_url: str,
        export_path: str,
        transport: UpstreamTransport,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        timeout: float,  # noqa: ASYNC109 - the deadline is part of the call and is also sent to the backend
    ) -> types.CallToolResult:
        """Call ``name`` on the backend; tool failures come back as results with ``isError``."""
        request = types.CallToolRequest(params=types.CallToolRequestParams(name=name, arguments=arguments))

        async def send(client: Client) -> types.CallToolResult:
            return await client.session.send_request(
                request, types.CallToolResult, request_read_timeout_seconds=timeout
            )

        return await self._run(
            endpoint_url(base_url, export_path, transport), transport, f"tools/call {name!r}", send, timeout
        )

    async def list_tools(
        self,
        base_url: str,
        export_path: str,
        transport: UpstreamTransport,
        *,
        timeout: float,  # noqa: ASYNC109 - same contract as call_tool
    ) -> list[types.Tool]:
        """Every tool the backend lists, all pages."""

        async def send(client: Client) -> list[types.Tool]:
            tools: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(_LIST_PAGE_CAP):
                page = await client.session.send_request(
                    types.ListToolsRequest(params=types.PaginatedRequestParams(cursor=cursor)),
                    types.ListToolsResult,
                    request_read_timeout_seconds=timeout,
                )
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            return tools

        return await self._run(endpoint_url(base_url, export_path, transport), transport, "tools/list", send, timeout)

    async def evict(self, base_url: str) -> None:
        """Close the sessions to an instance that left (every path and transport under ``base_url``)."""
        root = base_url.rstrip("/")
        leaving = [key for key in self._sessions if key[0] == root or key[0].startswith(root + "/")]
        sessions = [self._sessions.pop(key) for key in leaving]
        self._opened.difference_update(leaving)
        await asyncio.gather(*(session.aclose(self._connect_timeout) for session in sessions))

    async def close(self) -> None:
        """Close every session; the pool cannot be used afterwards."""
        self._closed = True
        sessions = [*self._sessions.values(), *self._retired]
        self._sessions.clear()
        self._retired.clear()
        self._opened.clear()
        await asyncio.gather(*(session.aclose(self._connect_timeout) for session in sessions))

    def _session(self, url: str, transport: UpstreamTransport) -> _PooledSession:
        if self._closed:
            raise UpstreamUnavailable(
                "The MCP upstream pool is closed (the gateway is shutting down); retry on another gateway."
            )
        key = (url, transport)
        session = self._sessions.get(key)
        if session is None or not session.usable:
            if session is not None:
                self._retire(session)
            session = _PooledSession(
                url, transport, connect_timeout=self._connect_timeout, client_info=self._client_info,
                on_tools_changed=self._tools_changed, replaces=key in self._opened,
            )
            self._sessions[key] = session
            self._opened.add(key)
        return session

    def _retire(self, session: _PooledSession) -> None:
        key = (session.url, session.transport)
        if self._sessions.get(key) is session:
            del self._sessions[key]
        session.close_soon()
        # Kept until its task ends so that close() can still wait for it.
        self._retired.add(session)
        session.task.add_done_callback(lambda _: self._retired.discard(session))

    async def _run(
        self,
        url: str,
        transport: UpstreamTransport,
        what: str,
        send: Callable[[Client], Awaitable[_RESULT]],
        deadline: float,
    ) -> _RESULT:
        address = public_address(url)
        try:
            async with asyncio.timeout(deadline):
                return await self._attempt(url, transport, what, send)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"The MCP server at {address} did not answer {what} within {deadline:g} s; "
                "it may be overloaded or stuck. Retry later or raise the tool timeout."
            ) from exc

    async def _attempt(
        self,
        url: str,
        transport: UpstreamTransport,
        what: str,
        send: Callable[[Client], Awaitable[_RESULT]],
        *,
        may_retry: bool = True,
    ) -> _RESULT:
        session = self._session(url, transport)
        client = await session.client()
        try:
            return await send(client)
        except MCPError as exc:
            if _is_unknown_session(exc):
                self._retire(session)
                if may_retry:
                    log.info("upstream.session.expired", address=session.address)
                    return await self._attempt(url, transport, what, send, may_retry=False)
                raise UpstreamUnavailable(
                    f"The MCP server at {session.address} dropped the new session too ({exc.message}); "
                    "it may be restarting. Retry in a moment."
                ) from exc
            if exc.code == types.CONNECTION_CLOSED:
                await session.wait_ended(self._connect_timeout)
                self._retire(session)
                if may_retry and _never_reached_backend(session.failure):
                    return await self._attempt(url, transport, what, send, may_retry=False)
                raise UpstreamUnavailable(
                    f"The connection to the MCP server at {session.address} was lost during {what} "
                    f"({_describe(session.failure or exc)}); the call may or may not have run. "
                    "Retry if it is safe to repeat."
                ) from exc
            raise UpstreamProtocolError(
                f"The MCP server at {session.address} rejected {what}: {exc.message} (JSON-RPC error {exc.code}).",
                code=exc.code,
            ) from exc
        except ValidationError as exc:
            raise UpstreamProtocolError(
                f"The MCP server at {session.address} answered {what} with a result that is not valid MCP "
                f"({exc.error_count()} schema errors); check the server's MCP SDK version."
            ) from exc


class McpBackendTools:
    """The tool lists of proxied MCP servers' backends, for the control plane.

    Implements ``adapter.listener.BackendTools`` over the pool, so a listing
    shares the pooled session that calls use and the pool's notice that a
    backend's tools may have changed reaches the server's listener.
    """

    def __init__(self, pool: McpUpstreamPool, *, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout
        self._watchers: dict[str, Callable[[], None]] = {}
        self._listed_from: dict[str, frozenset[str]] = {}
        pool.on_tools_changed(self._changed)

    async def list_tools(self, route: Route, instances: Sequence[Instance]) -> list[dict[str, Any]]:
        """The backend's tools as MCP ``Tool`` JSON, from the first of (at most 3 of) ``instances`` that answers."""
        transport = route.backend
        if transport == "rest":
            raise UpstreamProtocolError(
                f"Server {route.server_name} is a REST-to-MCP server; only proxied MCP servers list their tools."
            )
        self._listed_from[route.server_id] = frozenset(
            endpoint_url(instance.base_url, route.export_path, transport) for instance in instances
        )
        failure: InvocationError | None = None
        for instance in instances[:_LISTING_ATTEMPTS]:
            try:
                tools = await self._pool.list_tools(
                    instance.base_url, route.export_path, transport, timeout=self._timeout
                )
            except InvocationError as exc:
                log.info("upstream.listing_failed", server=route.server_name, instance=instance.id, error=str(exc))
                failure = exc
                continue
            return [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in tools]
        raise failure or UpstreamUnavailable(
            f"Server {route.server_name} has no instance to list its tools from; register a healthy instance."
        )

    def watch(self, server_id: str, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` when an instance the server's tools were listed from may have other tools now."""
        self._watchers[server_id] = on_change

        def unwatch() -> None:
            if self._watchers.get(server_id) is on_change:
                del self._watchers[server_id]
                self._listed_from.pop(server_id, None)

        return unwatch

    def _changed(self, url: str) -> None:
        for server_id, urls in list(self._listed_from.items()):
            watcher = self._watchers.get(server_id)
            if watcher is not None and url in urls:
                watcher()
