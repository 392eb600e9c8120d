"""GatewayCatalog: the tools the MCP endpoints serve, and how a call reaches a backend.

It reads the current GatewayState once per request (no lock; a state swap is
visible to the very next call) and turns a ``tools/call`` into either:

- REST-to-MCP: validate and coerce the arguments (before any backend sees
  them), render the compiled json-go-template request, send it to an
  instance chosen by the cluster's balancer with a pooled aiohttp client and
  a timeout, and map the response; or
- MCP proxy: forward the call through the pooled SDK client session of the
  chosen instance, at the server's ``exportPath``.

Failures where the request never reached the backend are retried on another
instance; any failure (an error, a timeout, a 5xx answer) is retried for
idempotent tools (GET/HEAD, or ``readOnlyHint``/``idempotentHint``). Retries
are bounded three ways: ``MAX_ATTEMPTS`` per call, the call's ``timeout``
(which covers every attempt, so the client always hears back within it), and
the cluster's retry budget (a share of its recent calls), so a failing
cluster under load is not hit by a retry storm. Timeouts are set per tool,
per service or by default (``TimeoutPolicy``).

Instances that leave every cluster have their pooled MCP sessions closed.
Every failure the client sees is one sentence naming what failed — never a
credential, header value or stack trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import mcp_types as types
import structlog

from mcpgw.converter.arguments import InvalidArguments
from mcpgw.converter.rest import RestBinding, RestResult
from mcpgw.gateway.circuit import CircuitBreakers, CircuitLimits
from mcpgw.gateway.frontdoor import Identity
from mcpgw.gateway.mcp_endpoints import InvalidArgumentsError, UnknownToolError
from mcpgw.gateway.mcp_upstream import (
    McpUpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTransport,
    UpstreamUnavailable,
)
from mcpgw.gateway.metrics import NO_OBSERVER, CallObserver, Outcome
from mcpgw.gateway.rendering import INLINE_DATA, Renderer, larger_than
from mcpgw.gateway.upstream_http import UpstreamHttp, UpstreamHttpError
from mcpgw.registry.balancing import CallLimits, ClusterRuntime, TimeoutPolicy
from mcpgw.registry.errors import InvocationError
from mcpgw.registry.managers import ClusterManager, DynamicToolRegistry
from mcpgw.registry.models import Instance, ServerModels, Tool
from mcpgw.registry.state import AGGREGATE, StateChange, StateStore

log = structlog.get_logger("mcpgw.call")

MAX_ATTEMPTS = 3

DIRECT = "-"
"""The ``cluster`` label of requests to a URL the spec gives instead of a service."""


class NoHealthyInstance(InvocationError):
    """The tool's cluster has no instance that can take the call."""


class UpstreamError(InvocationError):
    """The backend could not be reached or did not answer in time."""

    def __init__(self, message: str, *, connect_failed: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed
        """The request never reached the backend, so retrying elsewhere is always safe."""
        self.timed_out = timed_out
        """The backend did not answer in time."""


class _FailedAnswer(Exception):
    """A backend's 5xx answer: the client gets ``result`` unless an idempotent call is retried elsewhere."""

    def __init__(self, result: types.CallToolResult) -> None:
        super().__init__("backend answered with a server error")
        self.result = result


_Attempt = Callable[[Instance | None, ClusterRuntime | None, float, float], Awaitable[types.CallToolResult]]
"""One attempt: (instance or ``None`` for an absolute URL, its cluster runtime, seconds it may take,
the configured timeout to name in messages) → result, or ``UpstreamError`` / ``_FailedAnswer``."""


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
        http: UpstreamHttp,
        mcp_pool: McpUpstreamPool,
        timeouts: TimeoutPolicy | None = None,
        renderer: Renderer | None = None,
        circuits: CircuitBreakers | None = None,
        observer: CallObserver = NO_OBSERVER,
        forward_headers: Mapping[str, tuple[str, ...]] | None = None,
        tools: DynamicToolRegistry | None = None,
    ) -> None:
        self._store = store
        # The data plane reads tools through the design's registry, clusters through its manager.
        self._tools = tools or DynamicToolRegistry(store)
        self._forward = dict(forward_headers or {})
        self._observer = observer
        self._clusters = clusters
        self._http = http
        self._mcp = mcp_pool
        self._timeouts = timeouts or TimeoutPolicy()
        self.renderer = renderer or Renderer()
        self.circuits = circuits or CircuitBreakers(lambda _cluster: CircuitLimits())
        self._listing_cache: dict[str, tuple[object, list[types.Tool], list[tuple[str, str]]]] = {}
        self._evictions: set[asyncio.Task[None]] = set()
        self._unsubscribe_departures = clusters.on_departure(self._on_departure)

    @property
    def longest_timeout(self) -> float:
        """The longest any tool call may take: the MCP endpoints must wait at least this long."""
        return self._timeouts.longest

    # -- ToolCatalog -------------------------------------------------------

    def has_endpoint(self, endpoint: str) -> bool:
        return endpoint == AGGREGATE or self._tools.has_endpoint(endpoint)

    def list_tools(self, endpoint: str, allowed: Callable[[str, str], bool] | None = None) -> Sequence[types.Tool]:
        """The endpoint's tools, or only those ``allowed(server name, tool name)`` (the caller's view)."""
        tools = self._tools.tools(endpoint)
        if tools is None:
            return []
        cached = self._listing_cache.get(endpoint)
        if cached is None or cached[0] is not tools:
            ordered = sorted(tools.items())
            cached = (tools, [to_mcp_tool(name, tool) for name, tool in ordered],
                      [(tool.server_name, tool.name) for _, tool in ordered])
            self._listing_cache[endpoint] = cached
        if allowed is None:
            return cached[1]
        return [listed for listed, (server, tool) in zip(cached[1], cached[2], strict=True) if allowed(server, tool)]

    def resolve(self, endpoint: str, name: str) -> tuple[str, str] | None:
        """(server name, tool name) of the tool listed as ``name`` on ``endpoint``."""
        tool = self._tools.get(endpoint, name)
        return None if tool is None else (tool.server_name, tool.name)

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        def on_change(change: StateChange) -> None:
            if change.endpoints:
                callback(change.endpoints)

        return self._store.subscribe(on_change)

    async def call_tool(
        self, endpoint: str, name: str, arguments: dict[str, Any] | None, *, session_id: str | None,
        caller: Identity | None = None,
    ) -> types.CallToolResult:
        found = self._tools.lookup(endpoint, name)
        if found is not None and caller is not None and not caller.may_call(found[0].server_name, found[0].name):
            found = None  # answered exactly like a tool that does not exist
        if found is None:
            where = "/mcp" if endpoint == AGGREGATE else f"/mcp/{endpoint}"
            raise UnknownToolError(f"unknown tool {name!r} on {where}; call tools/list for the current tools")
        tool, server = found
        started = time.perf_counter()
        outcome: Outcome = "error"
        try:
            if server.route.backend == "rest":
                result = await self._call_rest(server, tool, arguments, self._forwarded(tool, caller))
            else:
                result = await self._call_mcp(server, tool, arguments, session_id)
            outcome = "tool_error" if result.is_error else "ok"
        except InvalidArguments as exc:
            outcome = "invalid_arguments"
            raise InvalidArgumentsError(f"invalid arguments for tool {name!r}: {exc}") from exc
        except NoHealthyInstance:
            outcome = "no_instance"
            raise
        except UpstreamError as exc:
            outcome = "timeout" if exc.timed_out else "upstream_error"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._observer.tool_call(server.name, tool.name, outcome, elapsed)
        log.debug("call.done", server=server.name, tool=tool.name, ms=round(elapsed * 1e3, 2),
                  is_error=bool(result.is_error))
        return result

    # -- invocation ----------------------------------------------------------

    def _limits(self, server: ServerModels, tool: Tool) -> CallLimits:
        cluster = self._clusters.cluster(tool.cluster) if tool.cluster else None
        return self._timeouts.limits(server.name, server.server_id, tool.name, cluster)

    def _pick(self, server: ServerModels, tool: Tool, session_id: str | None, tried: set[str]) -> Instance:
        if tool.cluster is None:
            raise NoHealthyInstance(f"server {server.name} has no backend service (serviceRef) for tool {tool.name}")
        instance = self._clusters.pick(tool.cluster, key=session_id, exclude=tried)
        if instance is None:
            cluster = self._clusters.cluster(tool.cluster)
            total = len(cluster.instances) if cluster else 0
            raise NoHealthyInstance(
                f"no healthy instance of {cluster.service if cluster else tool.cluster} for tool {tool.name} "
                f"({total} registered, {len(tried)} already failed this call)"
            )
        return instance

    async def _with_retries(
        self, server: ServerModels, tool: Tool, session_id: str | None, attempt: _Attempt
    ) -> types.CallToolResult:
        """Run ``attempt`` on picked instances until one answers, within the call's limits and retry budget.

        A failure is retried on an instance not tried yet when the request
        never reached the backend, or for any failure of an idempotent tool;
        at most ``MAX_ATTEMPTS`` attempts, only while the call's ``timeout``
        has time left and the cluster's retry budget allows.
        """
        limits = self._limits(server, tool)
        runtime = self._clusters.runtime(tool.cluster) if tool.cluster else None
        if runtime is not None:
            runtime.retry_budget.record_call()
        clock = asyncio.get_running_loop().time
        deadline = clock() + limits.timeout
        retry_any = is_idempotent(tool)
        tried: set[str] = set()
        failure: UpstreamError | _FailedAnswer | None = None
        refusal = ""
        for _ in range(MAX_ATTEMPTS):
            remaining = deadline - clock()
            if failure is not None:
                retryable = retry_any or (isinstance(failure, UpstreamError) and failure.connect_failed)
                if not retryable or runtime is None or remaining <= 0:
                    break
                if not runtime.retry_budget.try_retry():
                    # Counted in the cluster's stats; a log line per refusal would be a storm of its own.
                    log.debug("call.retry_refused", server=server.name, tool=tool.name, cluster=runtime.name)
                    refusal = f"; not retried: the retry budget of cluster {runtime.name} is spent"
                    break
                self._observer.retry(runtime.name)
            instance = None
            if tool.cluster is not None:
                try:
                    instance = self._pick(server, tool, session_id, tried)
                except NoHealthyInstance:
                    if failure is None:
                        raise
                    break
            # The attempt gets the per-try timeout unless the whole call's deadline comes first;
            # the message names whichever configured limit ran out.
            if limits.try_timeout is not None and limits.try_timeout < remaining:
                budget, shown = limits.try_timeout, limits.try_timeout
            else:
                budget, shown = remaining, limits.timeout
            try:
                if tool.cluster is None:
                    return await attempt(instance, runtime, budget, shown)
                await self.circuits.acquire(tool.cluster, budget)
                try:
                    return await attempt(instance, runtime, budget, shown)
                finally:
                    self.circuits.release(tool.cluster)
            except (UpstreamError, _FailedAnswer) as exc:
                failure = exc
            if instance is not None:
                tried.add(instance.id)
                log.debug("call.attempt_failed", server=server.name, tool=tool.name, instance=instance.id)
        assert failure is not None
        if isinstance(failure, _FailedAnswer):
            return failure.result
        if refusal:
            raise UpstreamError(str(failure) + refusal, connect_failed=failure.connect_failed,
                                timed_out=failure.timed_out) from failure
        raise failure

    def _forwarded(self, tool: Tool, caller: Identity | None) -> tuple[tuple[str, str], ...]:
        """The caller's headers this tool's ``forward_headers`` rule names (none without a rule)."""
        if not self._forward or caller is None:
            return ()
        names = self._forward.get(f"{tool.server_name}/{tool.name}", self._forward.get(tool.server_name, ()))
        return tuple((n, caller.headers[n]) for n in names if n in caller.headers)

    async def _call_rest(
        self, server: ServerModels, tool: Tool, arguments: dict[str, Any] | None,
        forwarded: tuple[tuple[str, str], ...] = (),
    ) -> types.CallToolResult:
        binding: RestBinding = tool.binding
        args = tool.validator.validate(arguments)
        config = server.template_config
        render = self.renderer.run
        big_args = larger_than(args, INLINE_DATA)
        if binding.is_direct:
            return _result(await render(binding.render_direct, args, config, big=big_args))
        has_output = tool.output_schema is not None

        def map_response(status: int, headers: Mapping[str, str], body: bytes, secrets: frozenset[str]) -> RestResult:
            return binding.map_response(status, headers, body, has_output_schema=has_output, secrets=secrets)

        async def attempt(
            instance: Instance | None, runtime: ClusterRuntime | None, budget: float, shown: float
        ) -> types.CallToolResult:
            base_url = instance.base_url if instance else None
            request = await render(binding.build_request, args, config, base_url, big=big_args)
            where = instance.id if instance else "the configured URL"
            if forwarded:
                names = {n for n, _ in forwarded}
                request = replace(request, headers=(*(h for h in request.headers if h[0].lower() not in names),
                                                    *forwarded))
            status, headers, body = await self._send(tool, request, instance, runtime, budget, shown, where)
            result = _result(
                await render(map_response, status, headers, body, request.secrets, big=len(body) > INLINE_DATA)
            )
            if status >= 500:
                raise _FailedAnswer(result)
            return result

        return await self._with_retries(server, tool, None, attempt)

    async def _send(
        self,
        tool: Tool,
        request: Any,
        instance: Instance | None,
        runtime: ClusterRuntime | None,
        budget: float,
        shown: float,
        where: str,
    ) -> tuple[int, Mapping[str, str], bytes]:
        if runtime is not None and instance is not None:
            runtime.record_start(instance.id)
        started = time.perf_counter()
        ok = False
        timed_out = False
        abandoned = True  # until the backend answered or failed: a cancelled call says nothing about it
        code, failure = "error", None
        try:
            status, headers, body = await self._http.request(
                request.method, request.url, headers=request.headers, body=request.body, timeout=budget
            )
            ok = status < 500
            abandoned = False
            code = str(status)
            if not ok:
                failure = f"backend {where} answered HTTP {status} to tool {tool.name}"
        except UpstreamHttpError as exc:
            timed_out = exc.timed_out
            abandoned = exc.not_sent
            if exc.not_sent:
                raise InvocationError(f"tool {tool.name}: {exc}; check the arguments") from exc
            if exc.too_large:
                message = f"tool {tool.name}: backend {where} answered too much: {exc}"
                code = "too_large"
            elif exc.timed_out:
                message = f"tool {tool.name}: backend {where} did not answer within {shown:g} s"
                code = "timeout"
            else:
                message = f"tool {tool.name}: cannot reach backend {where}: {exc}"
            failure = message
            raise UpstreamError(message, connect_failed=exc.connect_failed, timed_out=exc.timed_out) from exc
        finally:
            latency = time.perf_counter() - started
            if not abandoned or code != "error":
                self._observer.upstream(tool.cluster or DIRECT, code, latency, failure)
            if runtime is not None and instance is not None:
                if abandoned:
                    runtime.record_abandoned(instance.id, latency=latency)
                else:
                    runtime.record_finish(instance.id, ok=ok, latency=latency, timed_out=timed_out)
        return status, headers, body

    async def _call_mcp(self, server: ServerModels, tool: Tool, arguments: dict[str, Any] | None,
                        session_id: str | None) -> types.CallToolResult:
        if tool.validator is not None:
            arguments = tool.validator.validate(arguments)
        transport: UpstreamTransport = server.route.backend  # type: ignore[assignment]

        async def attempt(
            instance: Instance | None, runtime: ClusterRuntime | None, budget: float, shown: float
        ) -> types.CallToolResult:
            assert instance is not None  # proxied servers always have a cluster
            if runtime is not None:
                runtime.record_start(instance.id)
            started = time.perf_counter()
            ok = False
            timed_out = False
            abandoned = False
            code, failure = "error", None
            try:
                # The pool bounds the call too; this bound holds even while it opens a session.
                async with asyncio.timeout(budget):
                    result = await self._mcp.call_tool(
                        instance.base_url, server.route.export_path, transport, tool.name, arguments, timeout=budget
                    )
                ok = True
                code = "ok"
                return result
            except asyncio.CancelledError:
                abandoned = True  # the gateway gave the call up (a drain): the backend did nothing wrong
                raise
            except (TimeoutError, UpstreamTimeout) as exc:
                timed_out = True
                code = "timeout"
                failure = f"the MCP server {instance.id} did not answer tool {tool.name} within {shown:g} s"
                raise UpstreamError(
                    f"tool {tool.name}: the MCP server {instance.id} did not answer within {shown:g} s; it may be "
                    "overloaded or stuck. Retry later, or raise the tool's timeout in the gateway settings.",
                    timed_out=True,
                ) from exc
            except UpstreamUnavailable as exc:
                failure = f"tool {tool.name}: {exc}"
                raise UpstreamError(f"tool {tool.name}: {exc}") from exc
            except UpstreamProtocolError:
                # The server answered: a protocol-level refusal says nothing about its health.
                ok = True
                code = "protocol_error"
                raise
            finally:
                latency = time.perf_counter() - started
                if not abandoned:
                    self._observer.upstream(tool.cluster or DIRECT, code, latency, failure)
                if runtime is not None:
                    if abandoned:
                        runtime.record_abandoned(instance.id, latency=latency)
                    else:
                        runtime.record_finish(instance.id, ok=ok, latency=latency, timed_out=timed_out)

        return await self._with_retries(server, tool, session_id, attempt)

    # -- instances leaving -----------------------------------------------------

    def _on_departure(self, cluster: str, left: tuple[Instance, ...]) -> None:
        """Close pooled MCP sessions to instances no cluster uses any more, so they do not leak."""
        in_use = {i.base_url for c in self._store.current.clusters.values() for i in c.instances}
        gone = sorted({i.base_url for i in left} - in_use)
        if not gone:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("upstream.evict_skipped", cluster=cluster, instances=len(gone),
                        reason="the state changed outside the event loop")
            return
        for base_url in gone:
            task = loop.create_task(self._mcp.evict(base_url), name=f"mcp-evict:{base_url}")
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)

    async def aclose(self) -> None:
        """Stop following departures and finish the evictions under way."""
        self._unsubscribe_departures()
        self.renderer.close()
        if self._evictions:
            await asyncio.gather(*self._evictions, return_exceptions=True)
