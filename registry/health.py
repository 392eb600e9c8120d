"""Active HTTP health checks of backend instances, per cluster, off unless configured.

Nacos' own health flag lags: an instance that dies keeps ``healthy: true``
until its heartbeat times out, and a persistent instance may never be
checked at all. Passive outlier detection (``registry.balancing``) notices a
dead instance only by failing real calls on it. An active check finds it
before any call does, and finds an instance that came back without waiting
for its ejection to run out.

``HealthChecker`` keeps one task per cluster whose settings enable a check.
Each round probes every instance of the cluster at the configured path at
the same time; ``unhealthy_threshold`` failed probes in a row mark an
instance failing, ``healthy_threshold`` passed probes in a row mark it
passing again. Verdicts go to the cluster's ``ClusterRuntime``, which takes
a failing instance out of rotation and re-admits an ejected one that passes
again. New instances are assumed healthy until their probes say otherwise,
as Nacos said they were.

The probe is a one-method seam (``Probe``): ``gateway.upstream_http.HttpProbe``
over the gateway's pooled client in production, any async function in tests.
Clusters come and go with the gateway state: the checker re-reads the
cluster set after every state change and stops the tasks of clusters that
left, so a removed server leaves no probe behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import structlog

from mcpgw.registry.balancing import BalancingConfigError, ClusterRuntime
from mcpgw.registry.managers import ClusterManager
from mcpgw.registry.models import Cluster, Instance
from mcpgw.registry.state import StateChange, StateStore

log = structlog.get_logger("mcpgw.health")


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    """How one cluster's instances are probed: ``GET {instance}{path}``, 2xx or 3xx passes."""

    path: str = "/health"
    interval_s: float = 10.0
    timeout_s: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3

    def __post_init__(self) -> None:
        problems = []
        if not self.path.startswith("/"):
            problems.append(f"path must start with '/', got {self.path!r}")
        for name in ("interval_s", "timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("healthy_threshold", "unhealthy_threshold"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if problems:
            raise BalancingConfigError("invalid health check settings: " + "; ".join(problems) + ".")


PolicyFor = Callable[[Cluster], HealthCheckPolicy | None]
"""The health check settings of a cluster, ``None`` when it is not checked."""


class Probe(Protocol):
    """Probe ``url`` once within ``timeout`` seconds: ``None`` when healthy, else why not (one phrase)."""

    async def __call__(self, url: str, timeout: float) -> str | None: ...  # noqa: ASYNC109 - the probe's own bound


@dataclass(slots=True)
class _Streak:
    passes: int = 0
    failures: int = 0


class _ClusterCheck:
    """The probing task of one cluster."""

    def __init__(self, runtime: ClusterRuntime, policy: HealthCheckPolicy, probe: Probe, rounds: asyncio.Condition):
        self.runtime = runtime
        self.policy = policy
        self._probe = probe
        self._rounds_done = rounds
        self.rounds = 0
        self._streaks: dict[str, _Streak] = {}
        runtime.health_check = asdict(policy)
        self.task = asyncio.create_task(self._run(), name=f"health-check:{runtime.name}")
        log.info("health.check_started", cluster=runtime.name, path=policy.path)

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:
                # One bad round (a bug, an odd answer) must not end the checks of this cluster.
                log.exception("health.round_failed", cluster=self.runtime.name)
            self.rounds += 1
            async with self._rounds_done:
                self._rounds_done.notify_all()
            await asyncio.sleep(self.policy.interval_s)

    async def _round(self) -> None:
        instances = self.runtime.instances
        present = {i.id for i in instances}
        self._streaks = {k: v for k, v in self._streaks.items() if k in present}
        verdicts = await asyncio.gather(*(self._check(instance) for instance in instances))
        for instance, reason in zip(instances, verdicts, strict=True):
            self._judge(instance, reason)

    async def _check(self, instance: Instance) -> str | None:
        url = instance.base_url + self.policy.path
        try:
            return await self._probe(url, self.policy.timeout_s)
        except Exception as exc:
            log.warning("health.probe_crashed", cluster=self.runtime.name, instance=instance.id, error=repr(exc))
            return type(exc).__name__

    def _judge(self, instance: Instance, reason: str | None) -> None:
        streak = self._streaks.setdefault(instance.id, _Streak())
        if reason is None:
            streak.passes += 1
            streak.failures = 0
            if streak.passes == self.policy.healthy_threshold:
                self.runtime.set_check_result(instance.id, passing=True)
            return
        streak.failures += 1
        streak.passes = 0
        if streak.failures == self.policy.unhealthy_threshold:
            log.warning("health.instance_failing", cluster=self.runtime.name, instance=instance.id, reason=reason)
            self.runtime.set_check_result(instance.id, passing=False, detail=reason)


class HealthChecker:
    """Runs the active health checks of every cluster whose ``policy_for`` enables one."""

    def __init__(self, store: StateStore, clusters: ClusterManager, policy_for: PolicyFor, probe: Probe) -> None:
        self._store = store
        self._clusters = clusters
        self._policy_for = policy_for
        self._probe = probe
        self._checks: dict[str, _ClusterCheck] = {}
        self._rounds_done: asyncio.Condition | None = None
        self._reconciling: asyncio.Lock | None = None

    @property
    def checked(self) -> Mapping[str, HealthCheckPolicy]:
        """The clusters being checked and their settings."""
        return {name: check.policy for name, check in self._checks.items()}

    def rounds(self, cluster: str) -> int:
        """How many probe rounds of ``cluster`` have completed (0 when it is not checked)."""
        check = self._checks.get(cluster)
        return check.rounds if check is not None else 0

    async def wait_rounds(self, cluster: str, count: int) -> None:
        """Wait until ``cluster`` has completed ``count`` rounds; bound the wait with ``asyncio.timeout``."""
        if self._rounds_done is None:
            raise RuntimeError("the health checker is not running")
        async with self._rounds_done:
            await self._rounds_done.wait_for(lambda: self.rounds(cluster) >= count)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Check while inside: tasks follow the cluster set until the block exits."""
        self._rounds_done = asyncio.Condition()
        self._reconciling = asyncio.Lock()
        changed = asyncio.Event()

        def on_change(change: StateChange) -> None:
            if change.clusters or change.removed_clusters:
                changed.set()

        unsubscribe = self._store.subscribe(on_change)
        supervisor = asyncio.create_task(self._follow(changed), name="health-checks")
        try:
            yield
        finally:
            unsubscribe()
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            await self._stop(list(self._checks))

    async def _follow(self, changed: asyncio.Event) -> None:
        while True:
            changed.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("health.reconcile_failed")
            await changed.wait()

    async def sync(self) -> None:
        """Follow the current cluster set now (it is followed after every state change anyway)."""
        if self._reconciling is None:
            raise RuntimeError("the health checker is not running")
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Stop the checks of clusters that left (or were rebuilt), then start the missing ones."""
        assert self._rounds_done is not None
        clusters = self._store.current.clusters
        runtimes = self._clusters.runtimes()
        desired: dict[str, tuple[ClusterRuntime, HealthCheckPolicy]] = {}
        for name, cluster in clusters.items():
            policy = self._policy_for(cluster)
            runtime = runtimes.get(name)
            if policy is not None and runtime is not None:
                desired[name] = (runtime, policy)
        stale = [
            name
            for name, check in self._checks.items()
            if name not in desired or desired[name][0] is not check.runtime or desired[name][1] != check.policy
        ]
        await self._stop(stale)
        for name, (runtime, policy) in desired.items():
            if name not in self._checks:
                self._checks[name] = _ClusterCheck(runtime, policy, self._probe, self._rounds_done)

    async def _stop(self, names: list[str]) -> None:
        checks = [self._checks.pop(name) for name in names if name in self._checks]
        for check in checks:
            check.task.cancel()
        for check in checks:
            with contextlib.suppress(asyncio.CancelledError):
                await check.task
            check.runtime.health_check = None
            log.info("health.check_stopped", cluster=check.runtime.name)
