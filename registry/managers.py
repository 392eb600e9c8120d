"""The design's managers: the write calls of one transaction, and the reads of the data plane.

The design (``DynamicToolRegistry.UpdateTools(adapterId, tools)``,
``RouterManager.AddRouter``, ``ClusterManager.SetCluster``) names three
managers that the adapter updates one after the other. Here they are the
three parts of one transaction on the versioned ``GatewayState``: each write
call stages its part in the transaction open in the caller's context
(``StateStore.transaction``, opened by ``MCPServerAdapter.on_config_update``),
and the transaction commits them together, consistency-checked and swapped
whole, or not at all. A write call outside a transaction is an error, so
there is no other way for served state to change. Statuses (a server's phase
and last error) are not served state: ``StateStore.record_problem`` writes
them directly.

The reads are lock-free views: each call reads ``store.current`` once, so a
caller sees one consistent state. ``ClusterManager`` adds what must outlive a
swap: per-cluster balancer and health state (in-flight calls, ejections,
latency), kept under the stable cluster name and updated in place when a
cluster's instances change — in the store's swap callback, so a call can
never pick an instance that has already left its cluster. Whoever holds
per-instance resources (pooled upstream sessions) hears about instances that
left through ``on_departure``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import structlog

from mcpgw.registry.balancing import BalancingPolicy, ClusterRuntime, cluster_keys
from mcpgw.registry.models import Cluster, Instance, Route, ServerModels, Tool
from mcpgw.registry.state import StateChange, StateStore, open_transaction

log = structlog.get_logger("mcpgw.clusters")

DepartureCallback = Callable[[str, tuple[Instance, ...]], None]
"""Told a cluster's name and the instances that left it (all of them when the cluster went)."""


class DynamicToolRegistry:
    """Tools by endpoint: ``update_tools`` stages a server's tools; the data plane lists and finds them here."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def update_tools(self, adapter_id: str, tools: Iterable[Tool]) -> None:
        """The server ``adapter_id`` serves exactly ``tools`` once the open transaction commits."""
        staged = tuple(tools)
        for tool in staged:
            if tool.server_id != adapter_id:
                raise ValueError(f"update_tools({adapter_id!r}) was given tool {tool.name} of server {tool.server_id}")
        open_transaction(adapter_id, "update_tools").stage_tools(adapter_id, staged)

    def tools(self, endpoint: str) -> Mapping[str, Tool] | None:
        return self._store.current.tools(endpoint)

    def get(self, endpoint: str, name: str) -> Tool | None:
        tools = self._store.current.tools(endpoint)
        return tools.get(name) if tools is not None else None

    def lookup(self, endpoint: str, name: str) -> tuple[Tool, ServerModels] | None:
        """The tool listed as ``name`` on ``endpoint`` and the server it belongs to, from one state."""
        state = self._store.current
        tools = state.tools(endpoint)
        tool = tools.get(name) if tools is not None else None
        if tool is None:
            return None
        server = state.servers.get(tool.server_id)
        return None if server is None else (tool, server)

    def has_endpoint(self, endpoint: str) -> bool:
        return endpoint in self._store.current.endpoints


class RouterManager:
    """Routes (``/mcp/{name}``) by name: ``add_router`` / ``remove_router`` stage a server's route."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def add_router(self, route: Route) -> None:
        """Serve ``route`` for its server once the open transaction commits (replacing its previous one)."""
        open_transaction(route.server_id, "add_router").stage_route(route.server_id, route)

    def remove_router(self, adapter_id: str) -> None:
        """Stop routing to the server ``adapter_id``: with its route go its tools (and the server is withdrawn)."""
        open_transaction(adapter_id, "remove_router").stage_route(adapter_id, None)

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
        self._departure_callbacks: list[DepartureCallback] = []
        for cluster in store.current.clusters.values():
            self._runtime(cluster).update_instances(cluster.instances)
        self._unsubscribe = store.subscribe(self._on_change)

    def _runtime(self, cluster: Cluster) -> ClusterRuntime:
        runtime = self._runtimes.get(cluster.name)
        if runtime is None:
            with self._lock:
                runtime = self._runtimes.get(cluster.name)
                if runtime is None:
                    # Settings may name the cluster by its Nacos service: resolve with every key it has.
                    runtime = ClusterRuntime(cluster.name, self._policy.for_cluster(*cluster_keys(cluster)))
                    self._runtimes[cluster.name] = runtime
        return runtime

    def _on_change(self, change: StateChange) -> None:
        clusters = self._store.current.clusters
        departures: list[tuple[str, tuple[Instance, ...]]] = []
        for name in change.removed_clusters:
            if name not in clusters:
                with self._lock:
                    removed = self._runtimes.pop(name, None)
                if removed is not None and removed.instances:
                    departures.append((name, removed.instances))
        for name in change.clusters:
            cluster = clusters.get(name)
            if cluster is not None:
                runtime = self._runtime(cluster)
                before = runtime.instances
                runtime.update_instances(cluster.instances)
                staying = {i.id for i in cluster.instances}
                left = tuple(i for i in before if i.id not in staying)
                if left:
                    departures.append((name, left))
        for name, left in departures:
            for callback in list(self._departure_callbacks):
                try:
                    callback(name, left)
                except Exception:
                    # A listener's bug must not stop the swap notification of the others.
                    log.exception("clusters.departure_callback_failed", cluster=name)

    def on_departure(self, callback: DepartureCallback) -> Callable[[], None]:
        """Call ``callback`` after instances leave a cluster; returns the unsubscribe function."""
        self._departure_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._departure_callbacks:
                self._departure_callbacks.remove(callback)

        return unsubscribe

    def set_cluster(self, cluster: Cluster, adapter_id: str) -> None:
        """The server ``adapter_id`` balances over ``cluster`` once the open transaction commits.

        Its runtime (balancer, statistics) follows in the swap callback, under the stable cluster name.
        """
        open_transaction(adapter_id, "set_cluster").stage_cluster(adapter_id, cluster)

    def remove_cluster(self, adapter_id: str) -> None:
        """The server ``adapter_id`` has no cluster once the open transaction commits (its runtime goes)."""
        open_transaction(adapter_id, "remove_cluster").stage_cluster(adapter_id, None)

    def cluster(self, name: str) -> Cluster | None:
        return self._store.current.clusters.get(name)

    def runtime(self, name: str) -> ClusterRuntime | None:
        return self._runtimes.get(name)

    def runtimes(self) -> dict[str, ClusterRuntime]:
        """A copy of the current runtimes by cluster name."""
        with self._lock:
            return dict(self._runtimes)

    def pick(self, name: str, *, key: str | None = None, exclude: Collection[str] = ()) -> Instance | None:
        runtime = self._runtimes.get(name)
        return runtime.pick(key=key, exclude=exclude) if runtime is not None else None

    def stats(self) -> dict[str, Any]:
        return {name: runtime.stats() for name, runtime in sorted(self._runtimes.items())}

    def close(self) -> None:
        self._unsubscribe()
