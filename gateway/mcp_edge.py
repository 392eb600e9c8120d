"""The edge of the MCP endpoints: what is checked before a request reaches the SDK's session manager.

The SDK serves well-formed traffic from well-behaved clients.  A gateway
also meets the others, so every MCP request passes here first:

- **JSON-RPC envelopes** are checked (``envelope_problem``): not one object,
  a ``jsonrpc`` other than "2.0", an ``id`` that is not a string or an
  integer (an object, a list, a boolean, null), a method that is not a
  string, params that are not an object — each is answered with the
  JSON-RPC error the spec names (-32600 Invalid Request, with id null when
  the id itself is the problem; -32602 for params), instead of being
  accepted with 202 and never answered.
- **Request ids** in flight on one session are unique: a second request with
  the id of one still running is refused (-32600) rather than having the
  two answers crossed or lost (the SDK keys its reply streams by id).
- **Sessions** are bounded (``SessionTable``): per client address and in
  total.  At a bound the least recently used *idle* session (of that client
  first) is closed to make room, so a flood of ``initialize`` calls costs the
  flooder its own sessions, not everyone else theirs; only when every session
  is busy is the new one refused (429 for one client, 503 for all).  Idle
  sessions end after ``idle_timeout`` (the SDK's idle scope).
- **Draining** (SIGTERM): new sessions are refused with 503 while the calls
  in flight finish (see ``gateway.drain``).

Client-caused errors are never -32603 (Internal error): that code means a
gateway bug.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import pydantic_core
import structlog
from starlette.types import Message, Receive, Scope, Send

log = structlog.get_logger("mcpgw.mcp")

SERVER_BUSY = -32000
"""JSON-RPC's implementation-defined server error: the gateway is full or shutting down; retry later."""

MAX_BODY = 4 * 1024 * 1024
"""Bytes of one MCP request body (the SDK's own limit, enforced here before parsing)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the edge gives instead of the SDK: HTTP status, JSON-RPC code, message, id."""

    status: int
    code: int
    message: str
    request_id: str | int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": self.request_id,
                           "error": {"code": self.code, "message": self.message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the edge needs to know of one POSTed message."""

    method: str | None
    request_id: str | int | None
    """Set for requests (a method and an id), None for notifications and responses."""


def envelope_problem(message: Any) -> Reply | Envelope:
    """The JSON-RPC error for a message that is not a valid envelope, or what the message is."""
    if not isinstance(message, dict):
        return Reply(400, types.INVALID_REQUEST, "Invalid Request: the body must be one JSON-RPC message object "
                     "(batches are not supported by MCP)")
    has_id = "id" in message
    rid = message.get("id")
    shown_id = rid if _valid_id(rid) else None
    if message.get("jsonrpc") != "2.0":
        return Reply(400, types.INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', shown_id)
    if "method" in message:
        method = message["method"]
        if not isinstance(method, str):
            return Reply(400, types.INVALID_REQUEST, 'Invalid Request: "method" must be a string', shown_id)
        if has_id and not _valid_id(rid):
            return Reply(400, types.INVALID_REQUEST, f"Invalid Request: the id of {method!r} must be a string or "
                         f"an integer, not {_json_type(rid)}")
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            return Reply(400, types.INVALID_PARAMS, f'Invalid params: "params" of {method!r} must be an object, '
                         f"not {_json_type(params)}", shown_id)
        return Envelope(method, rid if has_id else None)
    if ("result" in message) == ("error" in message) or not _valid_id(rid):
        return Reply(400, types.INVALID_REQUEST, 'Invalid Request: a message needs a "method" (a request or a '
                     'notification), or an id and one of "result" or "error" (a response)', shown_id)
    return Envelope(None, None)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the connection says next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def parse_message(body: bytes) -> Any:
    """The JSON value of ``body``, or a -32700 ``Reply``."""
    try:
        return pydantic_core.from_json(body)
    except ValueError as exc:
        return Reply(400, types.PARSE_ERROR, f"Parse error: the body is not valid JSON ({exc})")


# -- sessions --------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Session:
    session_id: str
    client: str
    endpoint: str
    close: Callable[[], Awaitable[None]]
    in_flight: int = 0
    ids: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_total: int = 10_000
    max_per_client: int = 100


class SessionTable:
    """Every open handshake-era session of every endpoint, in order of last use."""

    def __init__(self, limits: SessionLimits, spawn: Callable[[Awaitable[None]], None]) -> None:
        self.limits = limits
        self._spawn = spawn
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._by_client: dict[str, collections.OrderedDict[str, _Session]] = {}
        self._opening: collections.Counter[str] = collections.Counter()
        self._opening_total = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def of_client(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def admit(self, client: str) -> Reply | None:
        """Make room for one more session of ``client`` (closing idle ones), or the refusal to send."""
        own = self._by_client.get(client)
        if len(own or ()) + self._opening[client] >= self.limits.max_per_client and (
            own is None or not self._evict_idle(own)
        ):
            return Reply(429, SERVER_BUSY, f"Too many open sessions for client {client}: all "
                         f"{self.limits.max_per_client} are busy (sessions.max_per_client); end one with "
                         "DELETE or retry later", headers=((b"retry-after", b"1"),))
        full = len(self._sessions) + self._opening_total >= self.limits.max_total
        if full and not self._evict_idle(self._sessions):
            return Reply(503, SERVER_BUSY, f"The gateway has {self.limits.max_total} open sessions, all busy "
                         "(sessions.max_total); retry later", headers=((b"retry-after", b"1"),))
        self._opening[client] += 1
        self._opening_total += 1
        return None

    def _evict_idle(self, sessions: collections.OrderedDict[str, _Session]) -> bool:
        for session in sessions.values():
            if session.in_flight == 0:
                self.evicted += 1
                log.info("mcp.session.evicted", session=session.session_id[:8], client=session.client,
                         endpoint=session.endpoint)
                self.closed(session.session_id)
                self._spawn(session.close())
                return True
        return False

    def opened(self, client: str, session_id: str | None, endpoint: str,
               close: Callable[[], Awaitable[None]]) -> None:
        """The admission of ``client`` ended: with a new session, or (``None``) without one."""
        self._opening[client] -= 1
        self._opening_total -= 1
        if self._opening[client] <= 0:
            del self._opening[client]
        if session_id is None or session_id in self._sessions:
            return
        session = _Session(session_id, client, endpoint, close)
        self._sessions[session_id] = session
        self._by_client.setdefault(client, collections.OrderedDict())[session_id] = session

    def closed(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        own = self._by_client.get(session.client)
        if own is not None:
            own.pop(session_id, None)
            if not own:
                del self._by_client[session.client]

    def begin(self, session_id: str, request_id: str | int | None) -> Reply | None:
        """A request on ``session_id`` starts (unless its id is already in flight there: the refusal)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if request_id is not None:
            key = str(request_id)
            if key in session.ids:
                return Reply(400, types.INVALID_REQUEST, f"Invalid Request: a request with id {request_id!r} is "
                             "already in flight on this session; give every request its own id", request_id)
            session.ids.add(key)
        session.in_flight += 1
        self._sessions.move_to_end(session_id)
        self._by_client[session.client].move_to_end(session_id)
        return None

    def end(self, session_id: str, request_id: str | int | None) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        session.in_flight -= 1
        if request_id is not None:
            session.ids.discard(str(request_id))


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
