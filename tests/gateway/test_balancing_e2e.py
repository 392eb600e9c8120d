"""Load balancing, failover, retry budget and timeouts, end to end over real loopback HTTP.

Each backend instance is its own uvicorn server that counts what it served;
the gateway runs on a memory source whose instances point at them, and every
call goes through the official MCP client, as a user's would. Delays live
inside the fake backends only; the tests wait on conditions, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import Settings, SettingsError, load_settings
from mcpgw.registry.balancing import CallLimits, RetryBudget, RetryBudgetPolicy
from mcpgw.registry.models import Cluster
from mcpgw.remote.base import ServiceInstance
from mcpgw.remote.memory import MemorySource
from tests.gateway import listening_socket, serving, text
from tests.support.builders import rest_tool, server_files, service_key, tools_doc

SHOP = "3c1f4b8e-2a6d-4f0e-9b7a-5d8c1e2f3a4b"
SHOP_CLUSTER = f"{SHOP}.public.DEFAULT_GROUP.shop-api"
AGENT = "9e2d7c4a-1b3f-4a5e-8c6d-0f1e2d3c4b5a"
AGENT_CLUSTER = f"{AGENT}.public.DEFAULT_GROUP.agent-mcp"


class Backend:
    """One REST backend instance on loopback; it can be stopped and started again on the same port."""

    def __init__(self, name: str, *, delay: float = 0.0, health: int = 200, hangs: bool = True) -> None:
        self.name = name
        self.delay = delay
        self.health = health
        self.hangs = hangs
        """Whether ``/slow`` waits for ``release``."""
        self.served: Counter[str] = Counter()
        self.release = asyncio.Event()
        self._sock = listening_socket()
        self.port: int = self._sock.getsockname()[1]
        self._stack: contextlib.AsyncExitStack | None = None
        self._stopped = False

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            path = request.url.path
            self.served[path] += 1
            if path == "/health":
                return JSONResponse({"status": self.health}, status_code=self.health)
            if path == "/slow" and self.hangs:
                await self.release.wait()
            if path == "/fail":
                return JSONResponse({"error": "overloaded"}, status_code=503)
            if self.delay:
                await asyncio.sleep(self.delay)
            return JSONResponse({"served_by": self.name})

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    async def start(self) -> None:
        sock = self._sock if self._stack is None else listening_socket(self.port)
        self._stack = contextlib.AsyncExitStack()
        self._stopped = False
        await self._stack.enter_async_context(serving(self.app(), sock))

    @property
    def started(self) -> bool:
        return self._stack is not None and not self._stopped

    async def stop(self) -> None:
        assert self._stack is not None
        self.release.set()
        await self._stack.aclose()
        self._stopped = True
        self.release = asyncio.Event()


@dataclass
class Running:
    gateway: Gateway
    url: str
    client: Client

    def stats(self, cluster: str = SHOP_CLUSTER) -> dict[str, Any]:
        runtime = self.gateway.clusters.runtime(cluster)
        assert runtime is not None
        return runtime.stats()

    def state_of(self, backend: Backend, cluster: str = SHOP_CLUSTER) -> str:
        [row] = [r for r in self.stats(cluster)["instances"] if r["port"] == backend.port]
        return str(row["state"])

    async def admin_state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False) as http:
            data: dict[str, Any] = (await http.get(self.url + "/admin/state")).json()
            return data


SHOP_TOOLS = tools_doc(
    rest_tool("get_item", "/item", args=()),
    rest_tool("get_fail", "/fail", args=()),
    rest_tool("get_slow", "/slow", args=()),
    rest_tool("post_slow", "/slow", method="POST", args=()),
    rest_tool("post_slow_too", "/slow", method="POST", args=()),
)


@contextlib.asynccontextmanager
async def shop(
    backends: Sequence[Backend], *, weights: Sequence[float] | None = None, **settings: Any
) -> AsyncIterator[Running]:
    """The gateway serving the ``shop`` REST server, whose ``shop-api`` instances are ``backends``."""
    instances = [
        ServiceInstance(ip="127.0.0.1", port=b.port, weight=weights[n] if weights else 1.0, service_name="shop-api")
        for n, b in enumerate(backends)
    ]
    source = MemorySource(server_files(SHOP, "shop", "1.0.0", SHOP_TOOLS, service="shop-api"),
                          {service_key("shop-api"): instances})
    await asyncio.gather(*(backend.start() for backend in backends))
    try:
        async with running_gateway(source, "/mcp/shop", settings) as running:
            yield running
    finally:
        # uvicorn notices a stop request only every 0.1 s: stop them all at once.
        await asyncio.gather(*(backend.stop() for backend in backends if backend.started))


@contextlib.asynccontextmanager
async def running_gateway(source: MemorySource, path: str, settings: dict[str, Any]) -> AsyncIterator[Running]:
    gateway = Gateway(Settings.model_validate({"discovery_interval": 3600, **settings}), source)
    async with serving(gateway.asgi()) as url:
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        async with Client(url + path, mode="legacy", cache=None) as client:
            yield Running(gateway, url, client)



async def call_many(client: Client, tool: str, count: int, *, concurrency: int = 6) -> list[types.CallToolResult]:
    results: list[types.CallToolResult] = []

    async def worker(share: int) -> None:
        for _ in range(share):
            results.append(await client.call_tool(tool, {}))

    async with asyncio.TaskGroup() as group:
        for k in range(concurrency):
            group.create_task(worker(count // concurrency + (k < count % concurrency)))
    return results


@dataclass
class Load:
    """Calls a tool from several workers until stopped; tests wait on its progress."""

    client: Client
    tool: str
    workers: int = 4
    results: list[types.CallToolResult] = field(default_factory=list)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _stopped: bool = False

    async def run(self) -> None:
        async def worker() -> None:
            while not self._stopped:
                self.results.append(await self.client.call_tool(self.tool, {}))
                async with self._progress:
                    self._progress.notify_all()

        async with asyncio.TaskGroup() as group:
            for _ in range(self.workers):
                group.create_task(worker())

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self._progress:
            await self._progress.wait_for(predicate)

    def stop(self) -> None:
        self._stopped = True


# --- strategies ---------------------------------------------------------------------------------


async def test_nacos_weights_1_2_3_split_calls_1_2_3_by_default() -> None:
    backends = [Backend("a"), Backend("b"), Backend("c")]
    async with asyncio.timeout(10), shop(backends, weights=[1, 2, 3]) as gw:
        results = await call_many(gw.client, "get_item", 180, concurrency=18)
    assert not [r for r in results if r.is_error]
    served = [b.served["/item"] for b in backends]
    assert sum(served) == 180
    for count, expected in zip(served, (30, 60, 90), strict=True):
        assert abs(count - expected) <= 3, served  # equal spreading would be 60 each


async def test_response_time_strategy_sends_clearly_fewer_calls_to_a_slow_instance() -> None:
    fast1, fast2, slow = Backend("fast1"), Backend("fast2"), Backend("slow", delay=0.1)
    balancing = {"services": {"shop-api": {"strategy": "response_time"}}}
    async with asyncio.timeout(10), shop([fast1, fast2, slow], balancing=balancing) as gw:
        results = await call_many(gw.client, "get_item", 90, concurrency=3)
        assert gw.stats()["strategy"] == "response_time"
    assert not [r for r in results if r.is_error]
    assert slow.served["/item"] < 9, (fast1.served, fast2.served, slow.served)  # an equal share would be 30
    assert fast1.served["/item"] + fast2.served["/item"] > 81


# --- failover -------------------------------------------------------------------------------------


async def test_killing_an_instance_mid_load_fails_no_get_call_ejects_it_and_readmits_it_once_back() -> None:
    a, b, c = Backend("a"), Backend("b"), Backend("c")
    outlier = {"consecutive_failures": 2, "base_ejection_s": 0.5, "max_ejection_s": 0.5}
    async with asyncio.timeout(10), shop([a, b, c], balancing={"outlier": outlier}) as gw:
        load = Load(gw.client, "get_item", workers=6)
        running = asyncio.create_task(load.run())
        try:
            await load.until(lambda: len(load.results) >= 12)
            await b.stop()
            stopped_at = len(load.results)
            await load.until(lambda: len(load.results) >= stopped_at + 12 and gw.state_of(b) == "ejected")
            state = await gw.admin_state()
            [row] = [r for r in state["clusters"][SHOP_CLUSTER]["balancer"]["instances"] if r["port"] == b.port]
            assert row["state"] == "ejected"
            assert row["ejections"] >= 1

            await b.start()
            served_before = b.served["/item"]
            await load.until(lambda: b.served["/item"] > served_before + 3 and gw.state_of(b) == "active")
        finally:
            load.stop()
            await running
    failed = [text(r) for r in load.results if r.is_error]
    assert failed == []
    assert gw.stats()["retry_budget"]["retried"] >= 1


async def test_a_hung_instance_costs_an_idempotent_call_only_its_try_timeout() -> None:
    healthy, hung = Backend("healthy", hangs=False), Backend("hung")
    balancing = {"try_timeout": 0.2, "strategy": "round_robin"}
    async with asyncio.timeout(10), shop([healthy, hung], balancing=balancing, upstream_timeout=5) as gw:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = [await gw.client.call_tool("get_slow", {}) for _ in range(4)]
        elapsed = loop.time() - started
        [row] = [r for r in gw.stats()["instances"] if r["port"] == hung.port]
    assert [r.is_error for r in results] == [False] * 4
    assert hung.served["/slow"] >= 1
    assert row["timeouts"] == hung.served["/slow"]
    assert elapsed < 0.2 * hung.served["/slow"] + 1  # each hang cost 0.2 s, never the 5 s call timeout


# --- retry budget ---------------------------------------------------------------------------------


def test_the_retry_budget_grants_a_share_of_recent_calls_plus_a_minimum_and_forgets_old_traffic() -> None:
    now = [100.0]
    budget = RetryBudget(RetryBudgetPolicy(percent=20, min_retries_per_s=0.1, window_s=10), clock=lambda: now[0])
    assert budget.try_retry()  # the minimum: 0.1/s over 10 s is one retry with no traffic at all
    assert not budget.try_retry()
    for _ in range(10):
        budget.record_call()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]  # 1 + 20% of 10
    now[0] += 10.5
    assert budget.stats()["window_calls"] == 0
    assert budget.try_retry()
    assert (budget.retried, budget.refused) == (4, 2)


async def test_a_spent_retry_budget_surfaces_failures_instead_of_multiplying_load() -> None:
    backends = [Backend("a"), Backend("b"), Backend("c")]
    balancing = {
        "retry_budget": {"percent": 10, "min_retries_per_s": 0},
        "outlier": {"consecutive_failures": 1000},
    }
    async with asyncio.timeout(10), shop(backends, balancing=balancing) as gw:
        results = await call_many(gw.client, "get_fail", 40, concurrency=8)
        budget = gw.stats()["retry_budget"]
    assert all(r.is_error and "503" in text(r) for r in results)
    attempts = sum(b.served["/fail"] for b in backends)
    # Unbudgeted, each call would have tried all three instances: 120 requests.
    assert 40 < attempts <= 44
    assert budget["retried"] == attempts - 40
    assert budget["refused"] >= 30


async def test_with_the_retry_budget_spent_a_connect_failure_says_it_was_not_retried() -> None:
    a, b = Backend("a"), Backend("b")
    balancing = {"retry_budget": {"percent": 0, "min_retries_per_s": 0}}
    async with asyncio.timeout(10), shop([a, b], balancing=balancing) as gw:
        await asyncio.gather(a.stop(), b.stop())
        result = await gw.client.call_tool("get_item", {})
        calls = sum(row["calls"] for row in gw.stats()["instances"])
    assert result.is_error
    assert "cannot reach backend 127.0.0.1:" in text(result)
    assert f"not retried: the retry budget of cluster {SHOP_CLUSTER} is spent" in text(result)
    assert calls == 1


# --- timeouts -------------------------------------------------------------------------------------


async def test_tool_and_service_timeouts_give_a_clear_error_within_that_timeout() -> None:
    backend = Backend("a")
    balancing = {"services": {"shop-api": {"timeout": 0.6}}, "tools": {"shop/post_slow": {"timeout": 0.2}}}
    async with asyncio.timeout(10), shop([backend], balancing=balancing, upstream_timeout=30) as gw:
        loop = asyncio.get_running_loop()

        async def timed(tool: str) -> tuple[types.CallToolResult, float]:
            started = loop.time()
            result = await gw.client.call_tool(tool, {})
            return result, loop.time() - started

        (by_tool, tool_s), (by_service, service_s) = await asyncio.gather(timed("post_slow"), timed("post_slow_too"))
        timeouts = gw.stats()["instances"][0]["timeouts"]
    assert by_tool.is_error and "did not answer within 0.2 s" in text(by_tool)
    assert by_service.is_error and "did not answer within 0.6 s" in text(by_service)
    assert 0.2 <= tool_s < 0.5
    assert 0.6 <= service_s < 1.0
    assert timeouts == 2
    assert backend.served["/slow"] == 2  # POST: never retried


class McpBackend:
    """A native MCP server (SDK, streamable HTTP) with a quick and a hanging tool; it notes closed sessions."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.sessions_closed = asyncio.Event()
        self.release = asyncio.Event()
        self.server = Server("agent", on_call_tool=self._call_tool)
        self._sock = listening_socket()
        self.port: int = self._sock.getsockname()[1]

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name == "slow":
            await self.release.wait()
        return types.CallToolResult(content=[types.TextContent(type="text", text=self.tag)])

    def app(self) -> ASGIApp:
        inner = self.server.streamable_http_app(json_response=True)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "DELETE":
                self.sessions_closed.set()
            await inner(scope, receive, send)

        return app

    def serving(self) -> contextlib.AbstractAsyncContextManager[str]:
        return serving(self.app(), self._sock)


def agent_source(*backends: McpBackend) -> MemorySource:
    tools = json.dumps({"tools": [{"name": "slow"}, {"name": "whoami"}], "toolsMeta": {}})
    files = server_files(AGENT, "agent", "1.0.0", tools, service="agent-mcp", protocol="mcp-streamable",
                         export_path="/mcp")
    instances = [ServiceInstance(ip="127.0.0.1", port=b.port, service_name="agent-mcp") for b in backends]
    return MemorySource(files, {service_key("agent-mcp"): instances})


async def test_an_mcp_proxy_timeout_is_a_clear_error_within_the_tool_timeout() -> None:
    backend = McpBackend("one")
    settings = {"balancing": {"tools": {"agent/slow": {"timeout": 0.3}}}}
    async with asyncio.timeout(10), backend.serving(), running_gateway(agent_source(backend), "/mcp/agent",
                                                                       settings) as gw:
        loop = asyncio.get_running_loop()
        assert text(await gw.client.call_tool("whoami", {})) == "one"
        started = loop.time()
        result = await gw.client.call_tool("slow", {})
        elapsed = loop.time() - started
        [row] = gw.stats(AGENT_CLUSTER)["instances"]
        backend.release.set()
    assert result.is_error
    assert f"the MCP server 127.0.0.1:{backend.port} did not answer within 0.3 s" in text(result)
    assert 0.3 <= elapsed < 1.0
    assert (row["calls"], row["timeouts"]) == (2, 1)


async def test_pooled_mcp_sessions_of_an_instance_that_left_are_closed() -> None:
    leaving, staying = McpBackend("leaving"), McpBackend("staying")
    source = agent_source(leaving)
    async with asyncio.timeout(10), leaving.serving(), staying.serving(), running_gateway(source, "/mcp/agent",
                                                                                          {}) as gw:
        assert text(await gw.client.call_tool("whoami", {})) == "leaving"
        await source.set_instances(service_key("agent-mcp"),
                                   [ServiceInstance(ip="127.0.0.1", port=staying.port, service_name="agent-mcp")])
        await leaving.sessions_closed.wait()
        assert text(await gw.client.call_tool("whoami", {})) == "staying"


# --- health checks and settings -----------------------------------------------------------------


async def test_active_health_checks_take_a_failing_instance_out_and_show_in_admin_state() -> None:
    ok, sick = Backend("ok"), Backend("sick", health=503)
    check = {"path": "/health", "interval_s": 0.01, "healthy_threshold": 1, "unhealthy_threshold": 1}
    balancing = {"services": {"shop-api": {"health_check": check}}}
    async with asyncio.timeout(10), shop([ok, sick], balancing=balancing) as gw:
        await gw.gateway.health.wait_rounds(SHOP_CLUSTER, 1)
        results = await call_many(gw.client, "get_item", 10, concurrency=2)
        state = await gw.admin_state()
    assert not [r for r in results if r.is_error]
    assert (ok.served["/item"], sick.served["/item"]) == (10, 0)
    balancer = state["clusters"][SHOP_CLUSTER]["balancer"]
    assert balancer["health_check"]["path"] == "/health"
    rows = {row["port"]: row for row in balancer["instances"]}
    assert (rows[sick.port]["state"], rows[sick.port]["health_check_detail"]) == ("unhealthy", "HTTP 503")
    assert rows[ok.port]["health_check"] == "passing"


DOCUMENTED = textwrap.dedent("""\
    upstream_timeout: 30            # default timeout of a tool call, every attempt included
    balancing:
      strategy: smooth_weighted_round_robin    # default for every cluster
      try_timeout: 10               # optional bound of one attempt (so a retry has time left)
      outlier:
        consecutive_failures: 5
        base_ejection_s: 10
        max_ejection_s: 300
        max_ejection_percent: 50
        panic_threshold_percent: 50
      retry_budget:
        percent: 20
        min_retries_per_s: 5
        window_s: 10
      health_check:                 # default for every cluster: off unless enabled
        enabled: false
        path: /health
        interval_s: 10
        timeout_s: 2
        healthy_threshold: 2
        unhealthy_threshold: 3
      services:                     # by service name, group@@name, namespace/group/name or cluster name
        weather-api:
          strategy: least_connections
          timeout: 5
          health_check: {path: /healthz, interval_s: 5}
        DEFAULT_GROUP@@maps:
          strategy: consistent_hash
      tools:                        # by server name (or id) / tool name
        weather/get_forecast:
          timeout: 2
          try_timeout: 1
    """)


def test_the_documented_settings_load_and_resolve_per_service_and_per_tool(tmp_path: Path) -> None:
    config = tmp_path / "mcpgw.yaml"
    config.write_text(DOCUMENTED)
    balancing = load_settings(config, {}, env={}).balancing
    weather = Cluster(name="s1.public.DEFAULT_GROUP.weather-api", service="public/DEFAULT_GROUP/weather-api")
    maps = Cluster(name="s2.public.DEFAULT_GROUP.maps", service="public/DEFAULT_GROUP/maps")
    policy = balancing.policy()
    assert policy.for_cluster("s1.public.DEFAULT_GROUP.weather-api", "weather-api").strategy == "least_connections"
    assert policy.for_cluster("s2.public.DEFAULT_GROUP.maps", "DEFAULT_GROUP@@maps").strategy == "consistent_hash"
    timeouts = balancing.timeout_policy(30)
    assert timeouts.limits("weather", "s1", "get_forecast", weather) == CallLimits(timeout=2, try_timeout=1)
    assert timeouts.limits("weather", "s1", "other", weather).timeout == 5
    assert timeouts.limits("maps", "s2", "route", maps).timeout == 30
    assert timeouts.longest == 30
    weather_check = balancing.health_check_for(weather)
    assert weather_check is not None
    assert (weather_check.path, weather_check.interval_s, weather_check.timeout_s) == ("/healthz", 5, 2)
    assert balancing.health_check_for(maps) is None


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("balancing: {strategy: fastest}", "key balancing.strategy: unknown load-balancing"),
        ("balancing: {services: {x: {timeout: 0}}}",
         "key balancing.services.x.timeout: input should be greater than 0"),
        ("balancing: {tools: {get: {timeout: 1}}}", "tool key 'get' must be 'server/tool'"),
        ("balancing: {retry_budget: {window_s: 0}}", "window_s must be positive"),
        ("balancing: {services: {x: {health_check: {path: nope}}}}", "path must start with '/'"),
    ],
)
def test_bad_balancing_settings_are_one_line_errors_naming_the_setting(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    config = tmp_path / "mcpgw.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, {}, env={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
