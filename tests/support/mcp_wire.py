"""A minimal MCP client at the wire level, for tests that must see exactly what the gateway answers.

The SDK's client turns a JSON-RPC error into an exception and an HTTP 500
into another; hostile-input tests need the envelope itself: the HTTP status,
``result`` or ``error.code``.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

PROTOCOL = "2025-06-18"
_ACCEPT = "application/json, text/event-stream"


class McpWire:
    """One handshake-era session on one endpoint (``open`` first)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url
        self._ids = itertools.count(1)
        self.session: str | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"accept": _ACCEPT, "content-type": "application/json"}
        if self.session is not None:
            headers |= {"mcp-session-id": self.session, "mcp-protocol-version": PROTOCOL}
        return headers

    async def open(self) -> McpWire:
        answer = await self._http.post(self._url, headers=self._headers(), json={
            "jsonrpc": "2.0", "id": next(self._ids), "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        })
        answer.raise_for_status()
        self.session = answer.headers["mcp-session-id"]
        notified = await self._http.post(self._url, headers=self._headers(),
                                         json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        notified.raise_for_status()
        return self

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON-RPC envelope)``; a body that is not JSON fails the test."""
        answer = await self._http.post(self._url, headers=self._headers(), json={
            "jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or {}})
        envelope: dict[str, Any] = answer.json()
        return answer.status_code, envelope

    async def tools(self) -> list[dict[str, Any]]:
        """The listed tools; fails the test unless ``tools/list`` answered a result."""
        status, envelope = await self.rpc("tools/list")
        assert status == 200 and "result" in envelope, envelope
        tools: list[dict[str, Any]] = envelope["result"]["tools"]
        return tools

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The envelope of a ``tools/call`` (HTTP 200 asserted)."""
        status, envelope = await self.rpc("tools/call", {"name": name, "arguments": arguments})
        assert status == 200, envelope
        return envelope


def result_text(envelope: dict[str, Any]) -> str:
    """The joined text content of a ``tools/call`` result envelope."""
    return "".join(c.get("text", "") for c in envelope["result"]["content"])
