"""GatewayCatalog: the tools the MCP endpoints serve, and how a call reaches a backend.

It reads the current GatewayState once per request (no lock; a state swap is
visible to the very next call) and turns a ``tools/call`` into either:

- REST-to-MCP: validate and coerce the arguments (before any backend sees
  them), render the compiled json-go-template request, send it to an
  instance chosen by the cluster's balancer with a pooled ``httpx`` client and
  a timeout, and map the response; or
- MCP proxy: forward the call through the pooled SDK client session of the
  chosen instance, at the server's ``exportPath``.

Connection failures are retried on another instance; any failure is retried
for idempotent tools (GET/HEAD, or ``readOnlyHint``/``idempotentHint``),
within a small budget.  Every failure the client sees is one sentence naming
what failed — never a credential, header value or stack trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import mcp_types as types
import structlog

from converter.arguments import InvalidArguments
from converter.rest import RestBinding, RestResult
from gateway.mcp_endpoints import InvalidArgumentsError, UnknownToolError
from gateway.mcp_upstream import McpUpstreamPool
from registry.errors import InvocationError
from registry.managers import ClusterManager
from registry.models import Instance, ServerModels, Tool
from registry.state import AGGREGATE, StateChange, StateStore

log = structlog.get_logger("mcpgw.call")

MAX_ATTEMPTS = 3


class NoHealthyInstance(InvocationError):
    """The tool's cluster has no instance that can take the call."""


class UpstreamError(InvocationError):
    """The backend could not be reached or did not answer in time."""

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed
        """The request never reached the backend, so retrying elsewhere is always safe."""


def to_mcp_tool(public_name: str, tool: Tool) -> types.Tool:
    annotations = None
    if tool.annotations:
        annotations = types.ToolAnnotations.model_validate(dict(tool.annotations))
    return types.Tool(
        name=public_name,
        description=tool.description or None,
        input_schema=dict(tool.input_schema),
        output_schema=dict(tool.output_schema) if tool.output_schema else None,
        annotations=annotations,
    )


def _result(result: RestResult) -> types.CallToolResult:
    return types.CallToolResult.model_validate(
        {
            "content": list(result.content),
            "structuredContent": result.structured,
            "isError": result.is_error,
        }
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def is_idempotent(tool: Tool) -> bool:
    binding = tool.binding
    if isinstance(binding, RestBinding) and binding.method in ("GET", "HEAD"):
        return True
    hints = tool.annotations or {}
    return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


class GatewayCatalog:
    def __init__(
        self,
        store: StateStore,
        clusters: ClusterManager,
        *,
        http: httpx.AsyncClient,
        mcp_pool: McpUpstreamPool,
        timeout: float = 30.0,
    ) -> None:
        self._store = store
        self._clusters = clusters
        self._http = http
        self._mcp = mcp_pool
        self._timeout = timeout
        self._listing_cache: dict[str, tuple[object, list[types.Tool]]] = {}

    # -- ToolCatalog -------------------------------------------------------

    def has_endpoint(self, endpoint: str) -> bool:
        return endpoint == AGGREGATE or endpoint in self._store.current.endpoints

    def list_tools(self, endpoint: str) -> Sequence[types.Tool]:
        tools = self._store.current.tools(endpoint)
        if tools is None:
            return []
        cached = self._listing_cache.get(endpoint)
        if cached is not None and cached[0] is tools:
            return cached[1]
        listing = [to_mcp_tool(name, tool) for name, tool in sorted(tools.items())]
        self._listing_cache[endpoint] = (tools, listing)
        return listing

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        def on_change(change: StateChange) -> None:
            if change.endpoints:
                callback(change.endpoints)

        return self._store.subscribe(on_change)

    async def call_tool(
        self, endpoint: str, name: str, arguments: dict[str, Any] | None, *, session_id: str | None
    ) -> types.CallToolResult:
        state = self._store.current
        tools = state.tools(endpoint)
        tool = tools.get(name) if tools is not None else None
        if tool is None:
            where = "/mcp" if endpoint == AGGREGATE else f"/mcp/{endpoint}"
            raise UnknownToolError(f"unknown tool {name!r} on {where}; call tools/list for the current tools")
        server = state.servers.get(tool.server_id)
        if server is None:
            raise UnknownToolError(f"tool {name!r} was just removed; call tools/list for the current tools")
        started = time.perf_counter()
        try:
            if server.route.backend == "rest":
                result = await self._call_rest(server, tool, arguments)
            else:
                result = await self._call_mcp(server, tool, arguments, session_id)
        except InvalidArguments as exc:
            raise InvalidArgumentsError(f"invalid arguments for tool {name!r}: {exc}") from exc
        log.debug("call.done", server=server.name, tool=tool.name, ms=round((time.perf_counter() - started) * 1e3, 2),
                  is_error=bool(result.is_error))
        return result

    # -- invocation ----------------------------------------------------------

    def _pick(self, server: ServerModels, tool: Tool, session_id: str | None, tried: set[str]) -> Instance:
        if tool.cluster is None:
            raise NoHealthyInstance(f"server {server.name} has no backend service (serviceRef) for tool {tool.name}")
        instance = self._clusters.pick(tool.cluster, key=session_id, exclude=tried)
        if instance is None:
            cluster = self._store.current.clusters.get(tool.cluster)
            total = len(cluster.instances) if cluster else 0
            raise NoHealthyInstance(
                f"no healthy instance of {cluster.service if cluster else tool.cluster} for tool {tool.name} "
                f"({total} registered, {len(tried)} already failed this call)"
            )
        return instance

    async def _call_rest(
        self, server: ServerModels, tool: Tool, arguments: dict[str, Any] | None
    ) -> types.CallToolResult:
        binding: RestBinding = tool.binding
        args = tool.validator.validate(arguments)
        config = server.template_config
        if binding.is_direct:
            return _result(binding.render_direct(args, config))
        if tool.cluster is None:
            request = binding.build_request(args, config, None)
            return await self._send_rest(binding, tool, request, None, has_output=tool.output_schema is not None)
        tried: set[str] = set()
        retry_any = is_idempotent(tool)
        last_error: InvocationError | None = None
        for _ in range(MAX_ATTEMPTS):
            try:
                instance = self._pick(server, tool, None, tried)
            except NoHealthyInstance:
                if last_error is not None:
                    raise last_error from None
                raise
            request = binding.build_request(args, config, instance.base_url)
            try:
                result = await self._send_rest(binding, tool, request, instance,
                                               has_output=tool.output_schema is not None)
            except UpstreamError as exc:
                tried.add(instance.id)
                last_error = exc
                if exc.connect_failed or retry_any:
                    continue
                raise
            return result
        assert last_error is not None
        raise last_error

    async def _send_rest(self, binding: RestBinding, tool: Tool, request: Any, instance: Instance | None,
                         *, has_output: bool) -> types.CallToolResult:
        runtime = self._clusters.runtime(tool.cluster) if tool.cluster and instance else None
        if runtime is not None and instance is not None:
            runtime.record_start(instance.id)
        started = time.perf_counter()
        ok = False
        timed_out = False
        where = instance.id if instance else "the configured URL"
        try:
            response = await self._http.request(
                request.method, request.url, headers=list(request.headers), content=request.body,
                timeout=self._timeout,
            )
            ok = response.status_code < 500
        except httpx.TimeoutException as exc:
            timed_out = True
            raise UpstreamError(
                f"tool {tool.name}: backend {where} did not answer within {self._timeout:g} s",
                connect_failed=isinstance(exc, httpx.ConnectTimeout),
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"tool {tool.name}: cannot reach backend {where}: {type(exc).__name__}",
                connect_failed=isinstance(exc, httpx.ConnectError),
            ) from exc
        finally:
            if runtime is not None and instance is not None:
                runtime.record_finish(instance.id, ok=ok, latency=time.perf_counter() - started, timed_out=timed_out)
        headers: Mapping[str, str] = response.headers
        mapped = binding.map_response(response.status_code, headers, response.content, has_output_schema=has_output)
        return _result(mapped)

    async def _call_mcp(self, server: ServerModels, tool: Tool, arguments: dict[str, Any] | None,
                        session_id: str | None) -> types.CallToolResult:
        if tool.validator is not None:
            arguments = tool.validator.validate(arguments)
        instance = self._pick(server, tool, session_id, set())
        runtime = self._clusters.runtime(tool.cluster) if tool.cluster else None
        if runtime is not None:
            runtime.record_start(instance.id)
        started = time.perf_counter()
        ok = False
        try:
            result = await self._mcp.call_tool(
                instance.base_url, server.route.export_path, server.route.backend,  # type: ignore[arg-type]
                tool.name, arguments, timeout=self._timeout,
            )
            ok = True
            return result
        finally:
            if runtime is not None:
                runtime.record_finish(instance.id, ok=ok, latency=time.perf_counter() - started, timed_out=False)
