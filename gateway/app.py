"""The gateway process: source → adapter → state → MCP endpoints, plus the ops endpoints.

``Gateway`` wires the layers together and owns their lifecycle; ``asgi()``
gives the Starlette app uvicorn serves:

- ``/mcp`` and ``/mcp/{server}``: MCP Streamable HTTP (gateway.mcp_endpoints)
- ``/healthz``: the process is up; ``/readyz``: 200 once the first full sync is applied
- ``/admin/state``: the state as JSON (no secrets); ``/metrics``: Prometheus
- ``/sse`` and ``/sse/{server}``: the legacy HTTP+SSE transport (gateway.legacy_sse), same tools
- ``/ui``: the read-only console (gateway.console), drawn from ``/admin/state`` and ``/admin/changes``
- ``/api/mcp/servers``: servers that register themselves (gateway.connect_api)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import structlog
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.gateway.catalog import GatewayCatalog
from mcpgw.gateway.circuit import CircuitBreakers
from mcpgw.gateway.connect_api import ConnectApi
from mcpgw.gateway.console import Console, RecentChanges
from mcpgw.gateway.frontdoor import FrontDoor, RateLimiter, startup_warnings
from mcpgw.gateway.http_protocol import HttpLimits, limited_protocol
from mcpgw.gateway.legacy_sse import LegacySse
from mcpgw.gateway.mcp_edge import SessionLimits
from mcpgw.gateway.mcp_endpoints import McpEndpoints, McpServeOptions
from mcpgw.gateway.mcp_upstream import McpBackendTools, McpUpstreamPool
from mcpgw.gateway.metrics import GatewayMetrics, state_families
from mcpgw.gateway.rendering import Renderer
from mcpgw.gateway.session_ids import SessionIds
from mcpgw.gateway.settings import Settings
from mcpgw.gateway.upstream_http import HttpProbe, UpstreamHttp
from mcpgw.registry.describe import describe_state
from mcpgw.registry.health import HealthChecker
from mcpgw.registry.managers import ClusterManager, DynamicToolRegistry, RouterManager
from mcpgw.registry.server_register import ServerRegister
from mcpgw.registry.state import AGGREGATE, AggregateNaming, GatewayState, StateStore
from mcpgw.remote.base import RemoteClient, ReportsListing, source_links, source_problems
from mcpgw.remote.overlay import RegisteringSource

log = structlog.get_logger("mcpgw.gateway")


def make_source(settings: Settings) -> RemoteClient:
    """The source the settings name (``MCPServerAdapter.apply``, the design's name for it)."""
    return MCPServerAdapter.apply(settings)


def state_document(
    state: GatewayState,
    clusters: ClusterManager,
    *,
    ready: bool,
    register: ServerRegister | None = None,
    source_problems: Mapping[str, str] | None = None,
    listing_problem: str | None = None,
    listing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The /admin/state answer: everything an operator needs, nothing secret.

    ``source_problems`` are what the source read but could not use (a file
    that is not UTF-8, an instances entry with a bad weight, a listing entry
    without an id): they never reach a server, so they are shown here.
    """
    servers = {sid: status.as_dict() for sid, status in sorted(state.statuses.items())}
    endpoints = {}
    for key, tools in sorted(state.endpoints.items()):
        if key == AGGREGATE and not tools:
            continue
        path = "/mcp" if key == AGGREGATE else f"/mcp/{key}"
        endpoints[path] = [
            {"name": name, "server_id": tool.server_id, "tool": tool.name} for name, tool in sorted(tools.items())
        ]
    routes = {
        name: {"server_id": r.server_id, "server": r.server_name, "backend": r.backend, "cluster": r.cluster,
               "export_path": r.export_path if r.backend != "rest" else None, "endpoint": r.endpoint}
        for name, r in sorted(state.routes.items())
    }
    stats = clusters.stats()
    cluster_doc = {
        name: {
            "service": c.service,
            "instances": [
                {"id": i.id, "url": i.base_url, "weight": i.weight, "healthy": i.healthy, "enabled": i.enabled}
                for i in c.instances
            ],
            "balancer": stats.get(name),
        }
        for name, c in sorted(state.clusters.items())
    }
    return {
        "version": state.version,
        "ready": ready,
        "servers": servers,
        "endpoints": endpoints,
        "routes": routes,
        "clusters": cluster_doc,
        "conflicts": state.conflicts(),
        "source_problems": [{"where": where, "problem": problem}
                            for where, problem in sorted((source_problems or {}).items())],
        "discovery": {"listing_problem": listing_problem},
        "summary": describe_state(state),
        **({"server_register": register.get_statistics()} if register is not None else {}),
        **({"listing": listing} if listing is not None else {}),
        "worker": worker_identity(),
    }


WORKER_VARIABLE = "_MCPGW_WORKER"
"""Set by ``mcpgw serve --workers N`` for each worker it starts: ``index/count`` (not a setting)."""


def worker_identity() -> dict[str, Any]:
    """Which process answered: its pid and, under ``serve --workers``, its index among the workers."""
    index, _, count = os.environ.get(WORKER_VARIABLE, "0/1").partition("/")
    return {"pid": os.getpid(), "index": int(index) if index.isdigit() else 0,
            "of": int(count) if count.isdigit() else 1}


YOUNG_ROUNDS_PER_GEN1 = 2
"""Generation-0 collections between generation-1 collections once the state is frozen (CPython: 10)."""

FIRST_SYNC_GC_PAUSE_LIMIT = 120.0
"""Seconds the cyclic collector may stay paused while the first sync runs (a source that never answers)."""


async def pause_collector_until(ready: asyncio.Event, limit: float) -> None:
    """Pause the cyclic garbage collector until ``ready`` is set (or ``limit`` passes), then collect and freeze.

    The first sync allocates the whole state at once, and nearly all of it lives
    as long as the process; each full collection re-walks everything allocated
    so far, which made up more than half of a 10,000-server sync. The sync
    makes little cyclic garbage, so pausing costs little memory; one collection
    at the end reclaims it, and freezing moves the long-lived state out of the
    collector's generations so later collections stay off the change path.
    Reference counting still frees everything acyclic during the pause.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        async with asyncio.timeout(limit):
            await ready.wait()
    except TimeoutError:
        log.warning("gc.pause_ended_before_first_sync", limit_s=limit)
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
        gc.freeze()
        # A young collection walks its objects' referents, which are cold in the CPU cache once the
        # frozen state is large: at 10,000 servers a generation-1 collection of ten generation-0
        # rounds' survivors took ~10 ms and landed in ~2% of changes. Collecting generation 1 every
        # second round instead keeps each pause at ~2.5 ms for about the same total work.
        young, _, old = gc.get_threshold()
        gc.set_threshold(young, YOUNG_ROUNDS_PER_GEN1, old)


class _StateCollector:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        state = self._gateway.store.current
        version = GaugeMetricFamily("mcpgw_state_version", "Version of the served gateway state")
        version.add_metric([], state.version)
        yield version
        phases = GaugeMetricFamily("mcpgw_servers", "MCP servers by phase", labels=["phase"])
        counts: dict[str, int] = {}
        for status in state.statuses.values():
            counts[status.phase] = counts.get(status.phase, 0) + 1
        for phase in ("serving", "stale", "pending", "error", "disabled"):
            phases.add_metric([phase], counts.get(phase, 0))
        yield phases
        tools = GaugeMetricFamily("mcpgw_tools", "Visible tools per endpoint", labels=["endpoint"])
        for key, mapping in state.endpoints.items():
            tools.add_metric(["/mcp" if key == AGGREGATE else f"/mcp/{key}"], len(mapping))
        yield tools
        errors = GaugeMetricFamily("mcpgw_server_last_error_timestamp_seconds",
                                   "When a server's latest update was rejected", labels=["server"])
        for status in state.statuses.values():
            if status.last_error_at:
                errors.add_metric([status.name or status.server_id], status.last_error_at)
        yield errors
        problems = GaugeMetricFamily("mcpgw_source_problems",
                                     "Files, instances or listing entries the source could not use")
        problems.add_metric([], len(source_problems(self._gateway.cluster_source)))
        yield problems
        gateway = self._gateway
        sessions = {gateway.endpoints.path_of(key): gateway.endpoints.session_count(key)
                    for key in gateway.endpoints.served_endpoints()}
        ejections = {name: runtime.ejections_total for name, runtime in gateway.clusters.runtimes().items()}
        yield from state_families(sessions, source_links(gateway.source), ejections)


class Gateway:
    def __init__(self, settings: Settings, source: RemoteClient | None = None) -> None:
        self.settings = settings
        self.store = StateStore(AggregateNaming(settings.aggregate_naming, settings.aggregate_separator,
                                                     settings.tool_name_max_length))
        self.clusters = ClusterManager(self.store, settings.balancing.policy())
        self.source = source if source is not None else make_source(settings)
        # Self-registered servers (the connect API) join the source's instances through this wrapper,
        # which also mirrors the source's instances into the register: it holds every instance.
        self.servers = ServerRegister(settings.balancing.policy())
        self.cluster_source = RegisteringSource(self.source, self.servers, namespace=settings.namespace)
        self.mcp_pool = McpUpstreamPool()
        self.tools = DynamicToolRegistry(self.store)
        self.routers = RouterManager(self.store)
        self.adapter = MCPServerAdapter(
            self.cluster_source, self.store, namespace=settings.namespace, interval=settings.discovery_interval,
            backend_tools=McpBackendTools(self.mcp_pool, timeout=settings.upstream_timeout),
            tools=self.tools, routers=self.routers, clusters=self.clusters,
        )
        self.http = UpstreamHttp(max_body=settings.upstream_max_response_bytes)
        self.metrics = CollectorRegistry()
        self.observed = GatewayMetrics(self.metrics)
        self.catalog = GatewayCatalog(
            self.store, self.clusters, http=self.http, mcp_pool=self.mcp_pool, tools=self.tools,
            timeouts=settings.balancing.timeout_policy(settings.upstream_timeout),
            renderer=Renderer(settings.templates.limits()),
            circuits=CircuitBreakers(
                lambda name: settings.balancing.circuit_for(self.store.current.clusters.get(name))
            ),
            observer=self.observed,
            forward_headers=settings.forward_headers,
        )
        self.health = HealthChecker(
            self.store, self.clusters, settings.balancing.health_check_for, HttpProbe(self.http)
        )
        self.endpoints = McpEndpoints(self.catalog, McpServeOptions(
            tool_call_timeout=self.catalog.longest_timeout + 5,
            session_idle_timeout=settings.sessions.idle_timeout,
            sessions=SessionLimits(settings.sessions.max_total, settings.sessions.max_per_client),
            rate_limits=RateLimiter(settings.rate_limits),
            audit=settings.audit,
            session_ids=(SessionIds(settings.session_secret, max_age=settings.sessions.max_age)
                         if settings.session_secret else None),
        ))
        self.legacy_sse = LegacySse(self.endpoints)
        self.connect_api = ConnectApi(self.servers, self.cluster_source, self.adapter,
                                      token=settings.connect_token, default_ttl=settings.connect_ttl,
                                      max_body=settings.connect_max_body, max_depth=settings.connect_max_depth)
        self.draining = False
        self.metrics.register(_StateCollector(self))
        self._unfollow = self.observed.follow(self.store)
        self.changes = RecentChanges(self.store)
        self._unfollow_changes = self.changes.follow()
        self.console = Console(self.changes)
        self.started_at = time.time()

    async def _freeze_after_first_sync(self) -> None:
        await pause_collector_until(self.adapter.ready, FIRST_SYNC_GC_PAUSE_LIMIT)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        for event, fields in startup_warnings(self.settings.auth, self.settings.host):
            log.warning(event, **fields)
        await self.cluster_source.start()
        discovery = asyncio.create_task(self.adapter.run(), name="discovery")
        freezer = asyncio.create_task(self._freeze_after_first_sync(), name="gc-freeze")
        try:
            async with self.health.running(), self.endpoints.run(), self.connect_api.running():
                yield
        finally:
            for task in (freezer, discovery):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.adapter.close()
            await self.catalog.aclose()
            await self.mcp_pool.close()
            await self.http.close()
            await self.cluster_source.stop()
            self.clusters.close()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def drain(self, grace: float | None = None) -> None:
        """The graceful half of a shutdown: not ready at once, no new sessions, calls in flight get ``grace`` seconds.

        ``grace`` defaults to the ``drain_timeout`` setting; calls still running
        after it are answered with an error (not counted against their backends).
        """
        self.draining = True
        await self.endpoints.drain(self.settings.drain_timeout if grace is None else grace)

    async def readyz(self, request: Request) -> Response:
        ready = self.adapter.ready.is_set() and not self.draining
        return JSONResponse(
            {"ready": ready, "draining": self.draining, "state_version": self.store.current.version},
            status_code=200 if ready else 503,
        )

    async def admin_state(self, request: Request) -> Response:
        listing = self.source.listing_status() if isinstance(self.source, ReportsListing) else None
        return JSONResponse(state_document(
            self.store.current, self.clusters, ready=self.adapter.ready.is_set(), register=self.servers,
            source_problems=source_problems(self.cluster_source), listing_problem=self.adapter.listing_problem,
            listing=listing,
        ))

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics), media_type="text/plain; version=0.0.4")

    def uvicorn_config(self, **options: Any) -> uvicorn.Config:
        """How uvicorn serves this gateway: its app, its lifespan, and the HTTP limits of the ``http`` settings."""
        limits = self.settings.http
        return uvicorn.Config(
            self.asgi(), lifespan="on",
            http=limited_protocol(HttpLimits(limits.max_header_bytes, limits.max_headers, limits.header_timeout,
                                             limits.keep_alive_timeout)),
            **options,
        )

    def asgi(self) -> ASGIApp:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with self.running():
                yield

        routes = [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/admin/state", self.admin_state),
            Route("/metrics", self.metrics_endpoint),
            *self.console.routes(),
            *self.legacy_sse.routes(),
            *self.connect_api.routes(),
            *self.endpoints.routes(),
        ]
        inner = self.endpoints.in_front_of(Starlette(routes=routes, lifespan=lifespan))
        self.front_door = FrontDoor(inner, self.settings.auth, on_denied=self.observed.auth_denied)
        return self.front_door
