"""The MCP serving layer: Streamable HTTP on ``/mcp`` and ``/mcp/{server}``, tools changing at run time.

The official SDK is built around one ``Server`` with a fixed set of handlers
behind one ``StreamableHTTPSessionManager``.  The gateway needs something else:
an aggregate endpoint plus one endpoint per MCP server, where servers (and so
endpoints) appear and disappear while the process runs, and where every
session must learn promptly that its tool list changed.

So each endpoint gets its own low-level ``Server`` and session manager, made
on the first request for it and stopped when the catalog stops serving it.
An endpoint costs one small task and a few objects until someone connects,
which is what lets hundreds of them exist.  Separate managers also bind every
session to the endpoint that created it: a session id from ``/mcp/a`` is
unknown on ``/mcp/b`` (the SDK answers 404) instead of silently reaching the
wrong tools.  The handlers do not hold tools; they read the catalog on every
request, so a state swap is visible to the very next call.

Change notification follows the two protocol eras the SDK serves:

- handshake era (2024-11-05 … 2025-11-25): a stateful session, created by
  ``initialize`` with JSON responses; ``notifications/tools/list_changed``
  goes on its GET SSE stream.  Sessions are tracked from their
  ``notifications/initialized`` until their connection is torn down (DELETE,
  idle timeout, crash or shutdown).
- 2026-07-28: stateless, one POST per request; change notifications travel
  only on ``subscriptions/listen`` streams, which the SDK's ``ListenHandler``
  serves from a per-endpoint bus.

How failures of ``tools/call`` reach the client (the spec lets a server
choose for invalid arguments; we choose what lets a model correct itself):

- ``UnknownToolError``: JSON-RPC error -32602, as the spec requires.
- ``InvalidArgumentsError``: a result with ``isError: true``, so that the
  model sees what was wrong and can correct its arguments.
- any other ``InvocationError`` (upstream unreachable, upstream timeout, no
  healthy instance): a result with ``isError: true`` and the error's message.
- no answer within ``tool_call_timeout``: a result with ``isError: true``.
- the endpoint stopped being served meanwhile: JSON-RPC error -32600.
- an unexpected exception (a gateway bug): JSON-RPC error -32603; the details
  go to the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio
import mcp_types as types
import structlog
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcpgw.gateway.frontdoor import AuditSettings, Identity, RateLimited, RateLimiter, identity_of
from mcpgw.gateway.mcp_edge import (
    MAX_BODY,
    SERVER_BUSY,
    Envelope,
    Reply,
    SessionLimits,
    SessionTable,
    client_of,
    envelope_problem,
    parse_message,
    read_body,
    replay,
)
from mcpgw.gateway.session_ids import SessionClaims, SessionIds, caller_digest
from mcpgw.registry.errors import InvocationError

log = structlog.get_logger("mcpgw.mcp")
audit_log = structlog.get_logger("mcpgw.audit")

_ANSWER_STOPPED_CALLS_WITHIN = 5.0
"""Seconds a drain waits, once it stopped the calls still running, for their answers to be written."""

AGGREGATE_ENDPOINT = ""
"""The endpoint name of the aggregate ``/mcp`` endpoint."""


class UnknownToolError(InvocationError):
    """The called tool is not visible on the endpoint: absent, disabled, or removed since the listing."""


class InvalidArgumentsError(InvocationError):
    """The arguments of a call do not satisfy the tool's ``inputSchema``."""


class ToolCatalog(Protocol):
    """What the serving layer needs to know about tools; the registry implements it.

    Endpoint names: ``""`` is the aggregate ``/mcp``, anything else the route
    name of one MCP server (``/mcp/{name}``).
    """

    def has_endpoint(self, endpoint: str) -> bool: ...

    def list_tools(self, endpoint: str, allowed: Callable[[str, str], bool] | None = None) -> Sequence[types.Tool]:
        """The endpoint's tools; with ``allowed``, only those ``allowed(server, tool)`` (a caller's view)."""
        ...

    def resolve(self, endpoint: str, name: str) -> tuple[str, str] | None:
        """(server name, tool name) of the tool listed as ``name`` on ``endpoint``, or None."""
        ...

    async def call_tool(
        self, endpoint: str, name: str, arguments: dict[str, Any] | None, *, session_id: str | None,
        caller: Identity | None = None,
    ) -> types.CallToolResult:
        """Run a tool.

        Tool-level failures come back as a result with ``isError``; protocol
        failures are raised as ``InvocationError`` subclasses (see the module
        docstring for how each is answered).
        """
        ...

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        """Call ``callback(changed endpoints)`` after each state swap; returns the unsubscribe function."""
        ...


@dataclass(frozen=True, slots=True)
class McpServeOptions:
    """Tunables of the MCP endpoints; the defaults suit a production gateway."""

    prefix: str = "/mcp"
    json_response: bool = True
    """Answer POSTs with JSON instead of an SSE stream (about twice as fast in this SDK)."""
    session_idle_timeout: float | None = 600.0
    """Seconds without a request (or an open GET stream) after which a session is closed."""
    sessions: SessionLimits = field(default_factory=SessionLimits)
    """Open sessions, over every endpoint: in total and per client address (``gateway.mcp_edge``)."""
    security: TransportSecuritySettings | None = None
    """Host/Origin checks against DNS rebinding; ``None`` accepts any host, as a network gateway must."""
    tool_call_timeout: float = 120.0
    """Backstop so that no client waits forever, whatever the invoker's own timeouts."""
    notify_timeout: float = 5.0
    """How long one slow session may hold a list-changed notification before it is given up."""
    server_version: str = "0.1.0"
    rate_limits: RateLimiter | None = None
    """Token buckets per caller and per tool (``gateway.frontdoor``); None: no limits."""
    audit: AuditSettings = field(default_factory=AuditSettings)
    session_ids: SessionIds | None = None
    """With a shared ``session_secret``: handshake sessions any replica accepts (``gateway.session_ids``)."""


_MINTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("mcpgw_minted_session_id", default=None)
"""The id the session being opened in this context gets, instead of the SDK's random one."""

_RESTORED = "mcpgw.restored"
_INITIALIZE_PARAMS = "mcpgw.initialize_params"
"""Scope key: the params of the ``initialize`` request being served (what a minted session id carries)."""
"""``Connection.state`` key of a session rebuilt from its id on this replica."""


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's manager, telling the gateway's session table when a session ends, able to end one, to open
    one under a minted id, and to rebuild a session another replica opened (``restore``)."""

    def __init__(self, *args: Any, on_discard: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_discard = on_discard

    def _new_transport(self, session_id: str) -> StreamableHTTPServerTransport:
        return StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=self.event_store,
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        minted = _MINTED.get()
        if minted is None:
            return super()._admit_session(requestor)
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        transport = self._new_transport(minted)
        if requestor is not None:
            self._session_owners[minted] = requestor
        self._server_instances[minted] = transport
        return transport

    def has_session(self, session_id: str) -> bool:
        return session_id in self._server_instances

    def _session_task(self, transport: StreamableHTTPServerTransport, session_id: str,
                      opened: Callable[[Connection], None]) -> Callable[..., Awaitable[None]]:
        """The server task of one session: what the SDK's ``serve_loop`` does, telling ``opened`` its connection
        (the SDK keeps it to itself), so that the gateway can follow it from the first moment."""

        async def run_server(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            async with transport.connect() as (read_stream, write_stream):
                task_status.started()
                try:
                    idle_scope = transport.idle_scope or anyio.CancelScope()
                    with idle_scope:
                        dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(
                            read_stream, write_stream, inline_methods=frozenset({"initialize"}))
                        connection = Connection.for_loop(dispatcher, session_id=session_id)
                        opened(connection)
                        await serve_connection(self.app, dispatcher, connection=connection,
                                               lifespan_state=self._lifespan_state)
                except Exception:
                    log.exception("mcp.session.crashed", session=session_id[:16])
                finally:
                    await self._discard_session(session_id, transport)

        return run_server

    async def open_minted(self, scope: Scope, receive: Receive, send: Send,
                          opened: Callable[[Connection], None]) -> None:
        """Open a session under the id minted in this context (``_MINTED``), like the SDK's opening request."""
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with self._session_creation_lock:
            transport = self._admit_session(requestor)
        if transport is None:
            await Reply(503, SERVER_BUSY, "Too many open sessions").send(send)
            return
        session_id = transport.mcp_session_id
        assert session_id is not None
        established = False
        try:
            assert self._task_group is not None
            await self._task_group.start(self._session_task(transport, session_id, opened))
            status: list[int] = []

            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            await transport.handle_request(scope, receive, watch)
            established = bool(status) and status[0] < 400
        finally:
            if not established:
                await self._discard_session(session_id, transport)

    async def restore(self, session_id: str, claims: SessionClaims, scope: Scope,
                      opened: Callable[[Connection], None]) -> None:
        """Serve ``session_id`` here as its handshake left it (the claims say how), without a new handshake."""
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with self._session_creation_lock:
            if session_id in self._server_instances:
                return  # a concurrent request of the same client rebuilt it first
            transport = self._new_transport(session_id)
            if requestor is not None:
                self._session_owners[session_id] = requestor
            self._server_instances[session_id] = transport
        client_params = types.InitializeRequestParams.model_validate({
            "protocolVersion": claims.protocol_version,
            "capabilities": dict(claims.capabilities),
            "clientInfo": {"name": "unknown", "version": "?", **dict(claims.client_info)},
        })

        def handshake_done(connection: Connection) -> None:
            connection.protocol_version = claims.protocol_version
            connection.client_params = client_params
            connection.initialized.set()
            connection.state[_RESTORED] = True
            opened(connection)

        try:
            assert self._task_group is not None
            await self._task_group.start(self._session_task(transport, session_id, handshake_done))
        except BaseException:
            await self._discard_session(session_id, transport)
            raise

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self._on_discard(session_id)
        await super()._discard_session(session_id, transport)

    async def close_session(self, session_id: str) -> None:
        transport = self._server_instances.get(session_id)
        if transport is not None:
            await self._discard_session(session_id, transport)


@dataclass(eq=False)
class _Endpoint:
    """One served endpoint: its SDK server, session manager and live sessions."""

    name: str
    server: _EndpointServer
    manager: _SessionManager
    bus: InMemorySubscriptionBus
    listen: ListenHandler
    connections: set[Connection] = field(default_factory=set)
    notifying: set[Connection] = field(default_factory=set)
    notifications: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = False


class _EndpointServer(Server[dict[str, Any]]):
    """A low-level server that advertises ``tools.listChanged``.

    The session manager builds initialize results from
    ``create_initialization_options()`` without arguments, so the flag has to
    be the default here.
    """

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def _connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection:
    # The SDK hands handlers a per-request ServerSession that keeps the
    # session's Connection private; the Connection is the only object that
    # outlives the request, can notify later, and says (exit_stack) when the
    # session ends.  Covered by the list_changed tests: an SDK that renames it
    # fails them.
    connection: Connection = ctx.session._connection
    return connection


def _identity_of(ctx: ServerRequestContext[Any, Any]) -> Identity | None:
    request = ctx.request
    return identity_of(request.scope) if isinstance(request, Request) else None


def _view(identity: Identity | None) -> Callable[[str, str], bool] | None:
    """The filter of ``identity``'s tools, or None when it may call every tool."""
    return None if identity is None or identity.allow == ("*",) else identity.may_call


RATE_LIMITED = -32029
"""JSON-RPC error code of a call refused by a rate limit (in the implementation-defined server range)."""

_RATE_CHECKED = "mcpgw.rate_checked"


def _rate_limit_error(exc: RateLimited) -> MCPError:
    return MCPError(RATE_LIMITED, f"{exc}: the gateway's rate_limits setting", data={
        "limit": exc.limit, "retryAfterSeconds": round(exc.retry_after, 3)})


def _session_id_of(ctx: ServerRequestContext[Any, Any]) -> str | None:
    request = ctx.request
    if isinstance(request, Request):
        # Streamable HTTP names the session in a header; the legacy SSE transport in the query.
        return request.headers.get(MCP_SESSION_ID_HEADER) or request.query_params.get("session_id")
    return None


def _audit(endpoint: str, tool: str, identity: Identity | None, outcome: str, seconds: float,
           arguments: dict[str, Any] | None) -> None:
    """The audit log's line for one call: who, what, how it ended, how long; arguments only when enabled."""
    extra = {"arguments": arguments} if arguments is not None else {}
    audit_log.info("audit.call", identity=identity.key if identity else None, endpoint=endpoint, tool=tool,
                   outcome=outcome, duration_ms=round(seconds * 1000, 3), **extra)


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


class _Front:
    __slots__ = ("_app", "_endpoints")

    def __init__(self, endpoints: McpEndpoints, app: ASGIApp) -> None:
        self._endpoints = endpoints
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._endpoints._endpoint_for(_route_path(scope)) is not None:
            await self._endpoints(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def _header(scope_or_message: Scope | Message, name: bytes) -> str | None:
    for key, value in scope_or_message.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _quietly(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        log.exception("mcp.session.close_failed")


async def _send_json_error(send: Send, status: int, code: int, message: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class McpEndpoints:
    """The ASGI application serving every MCP endpoint of the gateway.

    Requests are served only inside ``async with endpoints.run():`` (put it in
    the lifespan of the enclosing app).  ``routes()`` gives the Starlette
    routes to add to an app; ``create_mcp_asgi`` builds a standalone app.
    """

    def __init__(self, catalog: ToolCatalog, options: McpServeOptions | None = None) -> None:
        self._catalog = catalog
        self._options = options or McpServeOptions()
        self._prefix = self._options.prefix.rstrip("/")
        self._endpoints: dict[str, _Endpoint] = {}
        self._task_group: asyncio.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sessions = SessionTable(self._options.sessions, self._spawn)
        self.draining = False
        """Set when the gateway drains (SIGTERM): new sessions are refused with 503."""
        self._drain_expired = False
        self._call_bounds: set[asyncio.Timeout] = set()
        self._posts = 0
        self._posts_idle = asyncio.Event()
        self._posts_idle.set()
        self._owners: dict[str, str] = {}
        """Session id → the key of the identity that opened it: another identity's request answers 404."""
        self._views: dict[Connection, tuple[Identity, tuple[types.Tool, ...]]] = {}
        """Sessions with a restricted view: their identity and the tool names they were last shown."""

    def routes(self) -> list[Route]:
        """Starlette routes for the aggregate and the per-server endpoints (all methods)."""
        app: ASGIApp = self
        return [Route(self._prefix, endpoint=app), Route(self._prefix + "/{name}", endpoint=app)]

    def in_front_of(self, app: ASGIApp) -> ASGIApp:
        """An ASGI app giving MCP paths straight to these endpoints and everything else to ``app``.

        The hot path then skips the router and the middleware stack of a
        Starlette ``app``, which cost about a tenth of the gateway's CPU per
        call; lifespan and every other path still go through ``app``.
        """
        return _Front(self, app)

    @property
    def rate_limits(self) -> RateLimiter | None:
        return self._options.rate_limits

    @property
    def security(self) -> TransportSecuritySettings | None:
        return self._options.security

    def has_endpoint(self, endpoint: str) -> bool:
        return self._catalog.has_endpoint(endpoint)

    async def ready_endpoint(self, name: str) -> tuple[Server[dict[str, Any]], asyncio.Event] | None:
        """The running low-level server of endpoint ``name`` and the event set when it stops (for other transports)."""
        served = await self._ready_endpoint(name)
        return None if served is None else (served.server, served.stop)

    def path_of(self, endpoint: str) -> str:
        return self._prefix if endpoint == AGGREGATE_ENDPOINT else f"{self._prefix}/{endpoint}"

    def served_endpoints(self) -> list[str]:
        """The endpoints a client has opened since the start ("" = the aggregate)."""
        return list(self._endpoints)

    def session_count(self, endpoint: str) -> int:
        """Initialized handshake-era sessions currently open on ``endpoint``."""
        served = self._endpoints.get(endpoint)
        return len(served.connections) if served is not None else 0

    def notification_count(self, endpoint: str) -> int:
        """``tools/list_changed`` notifications queued for sessions of ``endpoint`` since it started."""
        served = self._endpoints.get(endpoint)
        return served.notifications if served is not None else 0

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve until the block exits; then every session is closed."""
        if self._task_group is not None:
            raise RuntimeError("McpEndpoints.run() is already active; enter it once, in the app lifespan")
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as task_group:
            self._task_group = task_group
            unsubscribe = self._catalog.subscribe(self._on_catalog_change)
            try:
                yield
            finally:
                unsubscribe()
                self._task_group = None
                for served in self._endpoints.values():
                    self._stop(served)
                self._endpoints.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        endpoint = self._endpoint_for(_route_path(scope))
        if endpoint is None or not self._catalog.has_endpoint(endpoint):
            shown = endpoint if endpoint is not None else _route_path(scope)
            await _send_json_error(
                send,
                404,
                types.INVALID_REQUEST,
                f"No MCP endpoint at {scope['path']}: this gateway serves no MCP server named {shown!r}. "
                f"Check the name; a server appears at {self._prefix}/<name> once it is published "
                "and enabled in the registry.",
            )
            return
        served = await self._ready_endpoint(endpoint)
        if served is None:
            await _send_json_error(
                send,
                503,
                SERVER_BUSY,
                f"The MCP endpoint {self.path_of(endpoint)} is not running (the gateway is starting or "
                "stopping); retry in a moment.",
            )
            return
        await self._through_the_edge(served, scope, receive, send)

    async def _through_the_edge(self, served: _Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request (``gateway.mcp_edge``), then let the SDK's manager serve it."""
        session_id = _header(scope, b"mcp-session-id")
        if scope["method"] == "POST":
            self._posts += 1
            self._posts_idle.clear()
            try:
                await self._post_through_the_edge(served, session_id, scope, receive, send)
            finally:
                self._posts -= 1
                if self._posts == 0:
                    self._posts_idle.set()
            return
        await self._to_the_manager(served, session_id, Envelope(None, None), scope, receive, send)

    async def _post_through_the_edge(
        self, served: _Endpoint, session_id: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = await read_body(receive, MAX_BODY)
        if body is None:
            await Reply(413, types.INVALID_REQUEST, f"Request body too large: an MCP message is at most "
                        f"{MAX_BODY} bytes").send(send)
            return
        parsed = parse_message(body)
        checked = parsed if isinstance(parsed, Reply) else envelope_problem(parsed)
        if isinstance(checked, Reply):
            await checked.send(send)
            return
        limiter = self._options.rate_limits
        if limiter is not None and limiter.active and checked.method == "tools/call" and isinstance(parsed, dict):
            refusal = self._rate_refusal(limiter, served.name, parsed, checked, scope)
            if refusal is not None:
                await refusal.send(send)
                return
        if checked.method == "initialize" and isinstance(parsed, dict):
            scope[_INITIALIZE_PARAMS] = parsed.get("params")
        await self._to_the_manager(served, session_id, checked, scope, replay(body, receive), send)

    def _rate_refusal(self, limiter: RateLimiter, endpoint: str, message: dict[str, Any], envelope: Envelope,
                      scope: Scope) -> Reply | None:
        """HTTP 429 with Retry-After for a call over a limit (answered before the SDK sees it)."""
        params = message.get("params") or {}
        name = params.get("name") if isinstance(params, dict) else None
        resolved = self._catalog.resolve(endpoint, name) if isinstance(name, str) else None
        if resolved is None:
            return None  # an unknown tool: the SDK's handler answers it
        identity = identity_of(scope)
        if resolved is not None and identity is not None and not identity.may_call(*resolved):
            return None  # answered as unknown by the handler, never as limited (that would reveal the tool)
        try:
            limiter.admit(identity, *resolved)
        except RateLimited as exc:
            log.info("mcp.call.rate_limited", endpoint=self.path_of(endpoint), tool=name, limit=exc.limit)
            return Reply(429, RATE_LIMITED, f"{exc}: the gateway's rate_limits setting", envelope.request_id,
                         headers=((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()),))
        scope[_RATE_CHECKED] = True
        return None

    async def _to_the_manager(
        self, served: _Endpoint, session_id: str | None, envelope: Envelope, scope: Scope, receive: Receive,
        send: Send,
    ) -> None:
        if session_id is None:
            if envelope.method == "initialize":
                await self._open_session(served, scope, receive, send)
            else:
                await served.manager.handle_request(scope, receive, send)
            return
        identity = identity_of(scope)
        ids = self._options.session_ids
        if ids is not None and not served.manager.has_session(session_id):
            refusal = await self._restore(served, ids, session_id, identity, scope)
            if refusal is not None:
                await refusal.send(send)
                return
        owner = self._owners.get(session_id)
        if owner is not None and identity is not None and owner != identity.key:
            # A session is bound to the credential that opened it; to anyone else it does not exist.
            await Reply(404, types.INVALID_REQUEST, "Session not found", envelope.request_id).send(send)
            return
        refusal = self.sessions.begin(session_id, envelope.request_id)
        if refusal is not None:
            await refusal.send(send)
            return
        try:
            await served.manager.handle_request(scope, receive, send)
        finally:
            self.sessions.end(session_id, envelope.request_id)

    async def _open_session(self, served: _Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining:
            await Reply(503, SERVER_BUSY, "The gateway is shutting down and opens no new sessions; connect "
                        "to another instance", headers=((b"connection", b"close"),)).send(send)
            return
        client = client_of(scope)
        refusal = self.sessions.admit(client)
        if refusal is not None:
            log.warning("mcp.session.refused", client=client, endpoint=self.path_of(served.name),
                        status=refusal.status)
            await refusal.send(send)
            return
        opened: list[str] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                found = _header(message, b"mcp-session-id")
                if found is not None:
                    opened.append(found)
            await send(message)

        manager = served.manager
        ids = self._options.session_ids
        identity = identity_of(scope)
        minted = _MINTED.set(ids.mint(served.name, scope.get(_INITIALIZE_PARAMS),
                                      caller_digest(identity.key if identity else None)) if ids else None)
        try:
            if ids is not None:
                # Followed from the start: with replicas, notifications/initialized may reach another one.
                await manager.open_minted(scope, receive, watch,
                                          lambda connection: self._track(served, connection, identity))
            else:
                await manager.handle_request(scope, receive, watch)
        finally:
            _MINTED.reset(minted)
            session_id = opened[0] if opened else None
            self.sessions.opened(client, session_id, served.name, lambda: manager.close_session(session_id or ""))
            identity = identity_of(scope)
            if session_id is not None and identity is not None:
                self._owners[session_id] = identity.key

    async def _restore(self, served: _Endpoint, ids: SessionIds, session_id: str, identity: Identity | None,
                       scope: Scope) -> Reply | None:
        """Rebuild a session another replica opened, from its signed id; the refusal to send, if any.

        An id that is not genuine, expired, of another endpoint or of another
        caller gets the 404 of an unknown session, as the specification says.
        """
        claims = ids.verify(session_id, served.name)
        if claims is None or claims.caller != caller_digest(identity.key if identity else None):
            if session_id.startswith("mcpgw1."):
                log.info("mcp.session.not_restored", endpoint=self.path_of(served.name),
                         reason="invalid, expired, or of another endpoint or caller")
            return None  # the SDK answers it as the unknown session it is
        client = client_of(scope)
        refusal = self.sessions.admit(client)
        if refusal is not None:
            return refusal
        try:
            await served.manager.restore(session_id, claims, scope,
                                         lambda connection: self._track(served, connection, identity))
        finally:
            self.sessions.opened(client, session_id, served.name,
                                 lambda: served.manager.close_session(session_id))
        if identity is not None:
            self._owners[session_id] = identity.key
        log.info("mcp.session.restored", endpoint=self.path_of(served.name), protocol=claims.protocol_version)
        return None

    async def drain(self, grace: float) -> None:
        """Refuse new sessions, give the requests in flight ``grace`` seconds, then end the calls still running.

        A tool call ended here is answered with an error result saying the
        gateway is shutting down (its backend is not blamed); then every
        endpoint stops, closing its sessions and their GET streams.
        """
        self.draining = True
        log.info("mcp.drain.started", posts_in_flight=self._posts, calls_in_flight=len(self._call_bounds),
                 grace_s=grace)
        try:
            async with asyncio.timeout(grace):
                await self._posts_idle.wait()
        except TimeoutError:
            self._drain_expired = True
            log.warning("mcp.drain.expired", calls_stopped=len(self._call_bounds), grace_s=grace)
            now = asyncio.get_running_loop().time()
            for bound in list(self._call_bounds):
                bound.reschedule(now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ANSWER_STOPPED_CALLS_WITHIN):
                    await self._posts_idle.wait()
        for served in list(self._endpoints.values()):
            self._stop(served)
        log.info("mcp.drain.done")

    def _session_closed(self, session_id: str) -> None:
        self._owners.pop(session_id, None)
        self.sessions.closed(session_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        task_group = self._task_group
        if task_group is not None:
            task_group.create_task(_quietly(work))

    def _endpoint_for(self, path: str) -> str | None:
        if path in (self._prefix, self._prefix + "/"):
            return AGGREGATE_ENDPOINT
        head = self._prefix + "/"
        if path.startswith(head):
            name = path[len(head) :].rstrip("/")
            if name and "/" not in name:
                return name
        return None

    async def _ready_endpoint(self, name: str) -> _Endpoint | None:
        served = self._endpoints.get(name)
        if served is None:
            task_group = self._task_group
            if task_group is None:
                return None
            served = self._make_endpoint(name)
            self._endpoints[name] = served
            task_group.create_task(self._serve_endpoint(served), name=f"mcp-endpoint:{name or '<aggregate>'}")
        await served.ready.wait()
        return served if served.running else None

    def _make_endpoint(self, name: str) -> _Endpoint:
        bus = InMemorySubscriptionBus()
        listen = ListenHandler(bus)
        catalog = self._catalog
        path = self.path_of(name)
        options = self._options
        bounds = self._call_bounds

        def gone() -> MCPError:
            return MCPError(
                types.INVALID_REQUEST,
                f"The MCP endpoint {path} is no longer served by this gateway (its server was removed or "
                "disabled); reconnect to another endpoint.",
            )

        async def list_tools(
            ctx: ServerRequestContext[dict[str, Any]], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            if not catalog.has_endpoint(name):
                raise gone()
            return types.ListToolsResult(tools=list(catalog.list_tools(name, _view(_identity_of(ctx)))))

        async def call_tool(
            ctx: ServerRequestContext[dict[str, Any]], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            if not catalog.has_endpoint(name):
                raise gone()
            tool = params.name
            identity = _identity_of(ctx)
            started = time.perf_counter()
            outcome = "error"
            try:
                limiter = options.rate_limits
                request = ctx.request
                checked = isinstance(request, Request) and request.scope.get(_RATE_CHECKED)
                if limiter is not None and limiter.active and not checked:
                    resolved = catalog.resolve(name, tool)
                    if resolved is not None and (identity is None or identity.may_call(*resolved)):
                        limiter.admit(identity, *resolved)
                async with asyncio.timeout(options.tool_call_timeout) as bound:
                    bounds.add(bound)
                    try:
                        result = await catalog.call_tool(name, tool, params.arguments, session_id=_session_id_of(ctx),
                                                         caller=identity)
                        outcome = "tool_error" if result.is_error else "ok"
                        return result
                    finally:
                        bounds.discard(bound)
            except RateLimited as exc:
                outcome = "rate_limited"
                raise _rate_limit_error(exc) from exc
            except UnknownToolError as exc:
                outcome = "unknown_tool"
                raise MCPError(types.INVALID_PARAMS, str(exc)) from exc
            except InvalidArgumentsError as exc:
                outcome = "invalid_arguments"
                return _error_result(str(exc))
            except InvocationError as exc:
                outcome = "failed"
                return _error_result(str(exc))
            except TimeoutError:
                outcome = "timeout"
                if self._drain_expired:
                    return _error_result(
                        f"The gateway is shutting down and stopped tool {tool!r} on {path} after its drain time; "
                        "the backend may or may not have completed it. Retry on another gateway instance."
                    )
                log.warning("mcp.call.timeout", endpoint=path, tool=tool, seconds=options.tool_call_timeout)
                return _error_result(
                    f"Tool {tool!r} on {path} did not answer within {options.tool_call_timeout:g} s and the "
                    "gateway stopped waiting; retry later, or ask the operator to check the backend."
                )
            except Exception as exc:
                outcome = "crashed"
                log.exception("mcp.call.crashed", endpoint=path, tool=tool)
                raise MCPError(
                    types.INTERNAL_ERROR,
                    f"The gateway failed internally while calling tool {tool!r} on {path}; "
                    "the details are in the gateway log.",
                ) from exc
            finally:
                if options.audit.enabled:
                    _audit(path, tool, identity, outcome, time.perf_counter() - started,
                           params.arguments if options.audit.include_arguments else None)

        def input_schema(tool: str) -> dict[str, Any] | None:
            for listed in catalog.list_tools(name):
                if listed.name == tool:
                    return listed.input_schema
            return None

        server = _EndpointServer(
            "mcpgw" if name == AGGREGATE_ENDPOINT else f"mcpgw/{name}",
            version=options.server_version,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_subscriptions_listen=listen,
            get_tool_input_schema=input_schema,
        )
        manager = _SessionManager(
            app=server,
            json_response=options.json_response,
            security_settings=options.security,
            session_idle_timeout=options.session_idle_timeout,
            max_sessions=None,  # bounded over all endpoints and per client by the session table
            on_discard=self._session_closed,
        )
        served = _Endpoint(name=name, server=server, manager=manager, bus=bus, listen=listen)

        async def track_session(ctx: ServerRequestContext[dict[str, Any]], params: types.NotificationParams) -> None:
            self._track(served, _connection_of(ctx), _identity_of(ctx))

        server.add_notification_handler("notifications/initialized", types.NotificationParams, track_session)
        return served

    def _track(self, served: _Endpoint, connection: Connection, identity: Identity | None) -> None:
        """From now on ``connection`` hears of its endpoint's tool changes (in its caller's view), once its
        handshake is done."""
        if connection in served.connections:
            return
        served.connections.add(connection)
        connection.exit_stack.callback(served.connections.discard, connection)
        view = _view(identity)
        if identity is not None and view is not None:
            self._views[connection] = (identity, tuple(self._catalog.list_tools(served.name, view)))
            connection.exit_stack.callback(self._views.pop, connection, None)

    async def _serve_endpoint(self, served: _Endpoint) -> None:
        # A failure here must not escape: it would cancel the task group that
        # serves every other endpoint.
        try:
            async with served.manager.run():
                served.running = True
                served.ready.set()
                log.info("mcp.endpoint.started", endpoint=self.path_of(served.name))
                await served.stop.wait()
        except Exception:
            log.exception("mcp.endpoint.failed", endpoint=self.path_of(served.name))
        finally:
            served.running = False
            served.ready.set()
            if self._endpoints.get(served.name) is served:
                del self._endpoints[served.name]
            log.info("mcp.endpoint.stopped", endpoint=self.path_of(served.name))

    def _stop(self, served: _Endpoint) -> None:
        served.listen.close()
        served.stop.set()

    def _on_catalog_change(self, changed: frozenset[str]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # The catalog may swap from any thread; all endpoint state lives on the loop.
        loop.call_soon_threadsafe(self._announce, changed)

    def _announce(self, changed: frozenset[str]) -> None:
        task_group = self._task_group
        if task_group is None:
            return
        for name in changed:
            served = self._endpoints.get(name)
            if served is None:
                continue
            if not self._catalog.has_endpoint(name):
                del self._endpoints[name]
                self._stop(served)
                continue
            task_group.create_task(served.bus.publish(ToolsListChanged()))
            views: dict[tuple[str, ...], tuple[types.Tool, ...]] = {}
            for connection in served.connections - served.notifying:
                if not connection.initialize_accepted:
                    continue  # opened, its handshake not done: nothing to announce yet
                viewed = self._views.get(connection)
                if viewed is not None:
                    # A session that sees only some tools hears of a change only when
                    # what it would list changed (a tool added, removed or redescribed).
                    identity, shown = viewed
                    now = views.get(identity.allow)
                    if now is None:
                        now = views[identity.allow] = tuple(self._catalog.list_tools(name, identity.may_call))
                    if now == shown:
                        continue
                    self._views[connection] = (identity, now)
                # One notification in flight per session is enough: the client
                # reads the list after it arrives, which is after this change.
                served.notifying.add(connection)
                served.notifications += 1
                task_group.create_task(self._notify(served, connection))

    async def _notify(self, served: _Endpoint, connection: Connection) -> None:
        try:
            async with asyncio.timeout(self._options.notify_timeout):
                await connection.send_tool_list_changed()
        except TimeoutError:
            log.warning("mcp.notify.slow_session", endpoint=self.path_of(served.name), session=connection.session_id)
        except Exception:
            log.exception("mcp.notify.failed", endpoint=self.path_of(served.name), session=connection.session_id)
        finally:
            served.notifying.discard(connection)


def create_mcp_asgi(
    catalog: ToolCatalog, *, json_response: bool = True, options: McpServeOptions | None = None
) -> Starlette:
    """A standalone ASGI app serving the MCP endpoints, with the lifespan they need.

    To add MCP to an existing Starlette app instead, use ``McpEndpoints``:
    add ``endpoints.routes()`` and enter ``endpoints.run()`` in its lifespan.
    """
    endpoints = McpEndpoints(catalog, replace(options or McpServeOptions(), json_response=json_response))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoints.run():
            yield

    app = Starlette(routes=list(endpoints.routes()), lifespan=lifespan)
    app.state.mcp_endpoints = endpoints
    return app
