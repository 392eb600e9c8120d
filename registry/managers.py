"""Read-side managers over the current GatewayState.

``DynamicToolRegistry`` and ``RouterManager`` are lock-free views: each call
reads ``store.current`` once, so a caller sees one consistent state.
``ClusterManager`` adds what must outlive a swap: per-cluster balancer and
health state (in-flight calls, ejections, latency), kept under the stable
cluster name and updated in place when a cluster's instances change — in the
store's swap callback, so a call can never pick an instance that has already
left its cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from typing import Any

from registry.balancing import BalancingPolicy, ClusterRuntime
from registry.models import Instance, Route, Tool
from registry.state import StateChange, StateStore


class DynamicToolRegistry:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    def tools(self, endpoint: str) -> Mapping[str, Tool] | None:
        return self._store.current.tools(endpoint)

    def get(self, endpoint: str, name: str) -> Tool | None:
        tools = self._store.current.tools(endpoint)
        return tools.get(name) if tools is not None else None


class RouterManager:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    def route(self, name: str) -> Route | None:
        return self._store.current.routes.get(name)

    def routes(self) -> Mapping[str, Route]:
        return self._store.current.routes


class ClusterManager:
    def __init__(self, store: StateStore, policy: BalancingPolicy | None = None) -> None:
        self._store = store
        self._policy = policy or BalancingPolicy()
        self._runtimes: dict[str, ClusterRuntime] = {}
        self._lock = threading.Lock()
        for name, cluster in store.current.clusters.items():
            self._runtime(name).update_instances(cluster.instances)
        self._unsubscribe = store.subscribe(self._on_change)

    def _runtime(self, name: str) -> ClusterRuntime:
        runtime = self._runtimes.get(name)
        if runtime is None:
            with self._lock:
                runtime = self._runtimes.get(name)
                if runtime is None:
                    runtime = ClusterRuntime(name, self._policy.for_cluster(name))
                    self._runtimes[name] = runtime
        return runtime

    def _on_change(self, change: StateChange) -> None:
        clusters = self._store.current.clusters
        for name in change.removed_clusters:
            if name not in clusters:
                with self._lock:
                    self._runtimes.pop(name, None)
        for name in change.clusters:
            cluster = clusters.get(name)
            if cluster is not None:
                self._runtime(name).update_instances(cluster.instances)

    def runtime(self, name: str) -> ClusterRuntime | None:
        return self._runtimes.get(name)

    def pick(self, name: str, *, key: str | None = None, exclude: Collection[str] = ()) -> Instance | None:
        runtime = self._runtimes.get(name)
        return runtime.pick(key=key, exclude=exclude) if runtime is not None else None

    def stats(self) -> dict[str, Any]:
        return {name: runtime.stats() for name, runtime in sorted(self._runtimes.items())}

    def close(self) -> None:
        self._unsubscribe()
