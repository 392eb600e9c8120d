"""Active health checks (registry/health.py): thresholds, re-admission, following the cluster set, the HTTP probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from mcpgw.gateway.upstream_http import HttpProbe, UpstreamHttp
from mcpgw.registry.balancing import BalancingConfigError, BalancingPolicy, ClusterRuntime, OutlierPolicy
from mcpgw.registry.health import HealthChecker, HealthCheckPolicy
from mcpgw.registry.managers import ClusterManager
from mcpgw.registry.models import Cluster, Instance, Route, ServerModels
from mcpgw.registry.state import StateStore
from tests.gateway import listening_socket, serving


def server(sid: str, ports: tuple[int, ...], *, service: str = "api") -> ServerModels:
    cluster = Cluster(
        name=f"{sid}.public.DEFAULT_GROUP.{service}",
        service=f"public/DEFAULT_GROUP/{service}",
        instances=tuple(Instance(id=f"127.0.0.1:{p}", host="127.0.0.1", port=p) for p in ports),
    )
    route = Route(name=sid, server_id=sid, server_name=sid, backend="rest", cluster=cluster.name)
    return ServerModels(
        server_id=sid, name=sid, version="1.0.0", protocol="http", front_protocol="mcp-streamable",
        description="", route=route, cluster=cluster, tools=(), fingerprint=f"{sid}:{service}:{ports}",
    )


class GatedProbe:
    """A probe whose verdicts the test sets, and which answers only as many probes as the test grants."""

    def __init__(self) -> None:
        self.down: dict[str, str] = {}
        self.probed: list[str] = []
        self._permits = asyncio.Semaphore(0)

    def grant(self, probes: int) -> None:
        for _ in range(probes):
            self._permits.release()

    async def __call__(self, url: str, timeout: float) -> str | None:  # noqa: ASYNC109 - the Probe signature
        await self._permits.acquire()
        self.probed.append(url)
        return self.down.get(url)


FAST = HealthCheckPolicy(path="/health", interval_s=0.001, timeout_s=1, healthy_threshold=2, unhealthy_threshold=2)


@contextlib.asynccontextmanager
async def checking(
    store: StateStore, policy: HealthCheckPolicy | None = FAST, balancing: BalancingPolicy | None = None
) -> AsyncIterator[tuple[HealthChecker, ClusterManager, GatedProbe]]:
    probe = GatedProbe()
    clusters = ClusterManager(store, balancing)
    checker = HealthChecker(store, clusters, lambda _cluster: policy, probe)
    async with asyncio.timeout(5), checker.running():
        yield checker, clusters, probe
    clusters.close()


def states(runtime: ClusterRuntime) -> dict[int, str]:
    return {row["port"]: row["state"] for row in runtime.stats()["instances"]}


async def rounds(checker: HealthChecker, probe: GatedProbe, cluster: str, count: int, *, instances: int) -> None:
    """Let exactly ``count`` more probe rounds of ``cluster`` run."""
    target = checker.rounds(cluster) + count
    probe.grant(count * instances)
    await checker.wait_rounds(cluster, target)


async def test_an_instance_fails_only_after_the_unhealthy_threshold_and_returns_after_the_healthy_one() -> None:
    store = StateStore()
    models = server("s1", (8001, 8002))
    assert models.cluster is not None
    name = models.cluster.name
    async with checking(store) as (checker, clusters, probe):
        store.apply(models)
        await rounds(checker, probe, name, 1, instances=2)
        runtime = clusters.runtime(name)
        assert runtime is not None
        probe.down["http://127.0.0.1:8002/health"] = "HTTP 503"

        await rounds(checker, probe, name, 1, instances=2)
        assert states(runtime) == {8001: "active", 8002: "active"}
        await rounds(checker, probe, name, 1, instances=2)
        assert states(runtime) == {8001: "active", 8002: "unhealthy"}
        assert {getattr(runtime.pick(), "id", None) for _ in range(6)} == {"127.0.0.1:8001"}
        row = runtime.stats()["instances"][1]
        assert (row["health_check"], row["health_check_detail"]) == ("failing", "HTTP 503")

        del probe.down["http://127.0.0.1:8002/health"]
        await rounds(checker, probe, name, 1, instances=2)
        assert states(runtime)[8002] == "unhealthy"
        await rounds(checker, probe, name, 1, instances=2)
        assert states(runtime) == {8001: "active", 8002: "active"}
        assert runtime.stats()["health_check"]["path"] == "/health"
    assert set(probe.probed) == {"http://127.0.0.1:8001/health", "http://127.0.0.1:8002/health"}


async def test_an_ejected_instance_is_readmitted_when_its_check_passes_again_not_merely_while_it_passes() -> None:
    store = StateStore()
    models = server("s1", (8001, 8002, 8003))
    assert models.cluster is not None
    name = models.cluster.name
    balancing = BalancingPolicy(outlier=OutlierPolicy(consecutive_failures=1, base_ejection_s=60, max_ejection_s=60))
    async with checking(store, balancing=balancing) as (checker, clusters, probe):
        store.apply(models)
        await rounds(checker, probe, name, 2, instances=3)
        runtime = clusters.runtime(name)
        assert runtime is not None
        for port in (8001, 8002):
            runtime.record_start(f"127.0.0.1:{port}")
            runtime.record_finish(f"127.0.0.1:{port}", ok=False, latency=0.1)
        assert states(runtime) == {8001: "ejected", 8002: "active", 8003: "active"}  # at most half ejected

        await rounds(checker, probe, name, 2, instances=3)
        assert states(runtime)[8001] == "ejected"  # passing all along: the ejection runs its course

        probe.down["http://127.0.0.1:8001/health"] = "connection refused or host unreachable"
        await rounds(checker, probe, name, 2, instances=3)
        assert states(runtime)[8001] == "unhealthy"
        del probe.down["http://127.0.0.1:8001/health"]
        await rounds(checker, probe, name, 2, instances=3)
        assert states(runtime) == {8001: "active", 8002: "active", 8003: "active"}


async def test_checks_follow_the_cluster_set_and_skip_clusters_without_a_policy() -> None:
    store = StateStore()
    probe = GatedProbe()
    clusters = ClusterManager(store)
    checker = HealthChecker(
        store, clusters, lambda cluster: FAST if cluster.service.endswith("/api") else None, probe
    )
    checked, unchecked = server("s1", (8001,)), server("s2", (8002,), service="other")
    store.apply(checked)
    store.apply(unchecked)
    async with asyncio.timeout(5), checker.running():
        await checker.sync()
        assert list(checker.checked) == ["s1.public.DEFAULT_GROUP.api"]
        runtime = clusters.runtime("s1.public.DEFAULT_GROUP.api")
        other = clusters.runtime("s2.public.DEFAULT_GROUP.other")
        assert runtime is not None and other is not None
        assert runtime.stats()["health_check"]["path"] == "/health"
        assert other.stats()["health_check"] is None

        store.remove("s1")
        await checker.sync()
        assert dict(checker.checked) == {}
        assert runtime.stats()["health_check"] is None  # its task ended
    clusters.close()


def test_impossible_health_check_settings_are_rejected_with_every_problem() -> None:
    with pytest.raises(BalancingConfigError) as caught:
        HealthCheckPolicy(path="health", interval_s=0, unhealthy_threshold=0)
    message = str(caught.value)
    assert "path must start with '/'" in message
    assert "interval_s" in message
    assert "unhealthy_threshold" in message


async def test_the_http_probe_passes_2xx_and_names_the_failure_otherwise() -> None:
    hang = asyncio.Event()

    async def health(request: Request) -> Response:
        code = int(request.path_params["code"])
        if code == 0:
            await hang.wait()
        return PlainTextResponse("ok", status_code=code)

    app = Starlette(routes=[HttpRoute("/health/{code}", health)])
    closed = listening_socket()
    closed_port = closed.getsockname()[1]
    closed.close()
    http = UpstreamHttp()
    async with asyncio.timeout(5), serving(app) as url:
        probe = HttpProbe(http)
        assert await probe(url + "/health/200", 1) is None
        assert await probe(url + "/health/302", 1) is None
        assert await probe(url + "/health/503", 1) == "HTTP 503"
        assert await probe(f"http://127.0.0.1:{closed_port}/health", 1) == "connection refused or host unreachable"
        assert await probe(url + "/health/0", 0.2) == "no answer within 0.2 s"
        hang.set()
        await http.close()
