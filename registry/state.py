"""The one consistent, versioned picture of what the gateway serves.

A ``GatewayState`` is immutable.  Every change of one server builds a new
state from the previous one, checks it, and swaps it in whole with a single
reference assignment: readers (the data plane) never lock and never see half
a change.  The maps are HAMTs (``immutables.Map``) so building the next state
costs time proportional to the changed server, not to the whole state — the
difference between 5 ms and 500 ms at 10,000 servers.

Names are claimed, never silently shadowed: when two servers claim one route
name, or two tools one aggregate name, the claimant with the smallest server
id wins (deterministic in any event order) and the conflict is reported.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import immutables

from mcpgw.registry.errors import StateError
from mcpgw.registry.models import Cluster, Route, ServerModels, Tool

AGGREGATE = ""
"""The endpoint key of the aggregate ``/mcp`` endpoint; others are route names."""

ServerPhase = Literal["serving", "stale", "pending", "error", "disabled"]


MAX_LISTED_NAME = 64
"""The longest tool name many clients accept (OpenAI's and Anthropic's function names, Cursor's tools)."""

_HASH_CHARS = 8


@dataclass(frozen=True, slots=True)
class AggregateNaming:
    """How tools are named where they are listed: the aggregate endpoint's prefix, and the longest name.

    A name longer than ``max_length`` is shortened deterministically: its
    first characters, ``-``, and 8 hex digits of the SHA-256 of the whole
    name, so the same tool always gets the same name on every replica and
    two long names that share a beginning stay apart.  Each shortening is
    reported in its server's warnings.
    """

    mode: Literal["prefix", "bare"] = "prefix"
    separator: str = "_"
    max_length: int = MAX_LISTED_NAME

    def fit(self, name: str) -> str:
        if len(name) <= self.max_length:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
        return f"{name[: self.max_length - _HASH_CHARS - 1]}-{digest}"

    def name(self, route: str, tool: str) -> str:
        return self.fit(f"{route}{self.separator}{tool}" if self.mode == "prefix" else tool)

    def renames(self, models: ServerModels) -> tuple[str, ...]:
        """One warning per tool listed under a shortened name, on its server's endpoint or on /mcp."""
        out: list[str] = []
        route = models.route.name
        for tool in models.tools:
            own, aggregate = self.fit(tool.name), self.name(route, tool.name)
            full = f"{route}{self.separator}{tool.name}" if self.mode == "prefix" else tool.name
            if own != tool.name:
                out.append(f"tool {tool.name} is listed as {own} on /mcp/{route}: its name is longer than "
                           f"{self.max_length} characters (tool_name_max_length)")
            if aggregate != full:
                out.append(f"tool {tool.name} is listed as {aggregate} on /mcp: {full} is longer than "
                           f"{self.max_length} characters (tool_name_max_length)")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What an operator needs to know about one server, at a glance."""

    server_id: str
    name: str
    phase: ServerPhase
    applied_version: str | None = None
    desired_version: str | None = None
    message: str = ""
    last_error: Mapping[str, str] | None = None
    last_error_at: float | None = None
    applied_at: float | None = None
    updated_at: float = 0.0
    tools: int = 0
    revision: str | None = None
    """Short digest of everything served for this server (specs, credentials, instances)."""
    warnings: tuple[str, ...] = ()
    """What the served version leaves out (an unusable instance, ...), one sentence each."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "name": self.name,
            "phase": self.phase,
            "applied_version": self.applied_version,
            "desired_version": self.desired_version,
            "message": self.message,
            "last_error": dict(self.last_error) if self.last_error else None,
            "last_error_at": self.last_error_at,
            "applied_at": self.applied_at,
            "updated_at": self.updated_at,
            "tools": self.tools,
            "revision": self.revision,
            "warnings": list(self.warnings),
        }


_EMPTY: immutables.Map[Any, Any] = immutables.Map()


@dataclass(frozen=True, slots=True)
class GatewayState:
    version: int = 0
    naming: AggregateNaming = field(default_factory=AggregateNaming)
    servers: immutables.Map[str, ServerModels] = _EMPTY
    statuses: immutables.Map[str, ServerStatus] = _EMPTY
    routes: immutables.Map[str, Route] = _EMPTY
    clusters: immutables.Map[str, Cluster] = _EMPTY
    endpoints: immutables.Map[str, immutables.Map[str, Tool]] = _EMPTY
    route_claims: immutables.Map[str, tuple[str, ...]] = _EMPTY
    tool_claims: immutables.Map[str, tuple[tuple[str, str], ...]] = _EMPTY

    def tools(self, endpoint: str) -> Mapping[str, Tool] | None:
        """Visible tools of an endpoint by their public name; ``None`` for an unknown endpoint."""
        if endpoint == AGGREGATE:
            return self.endpoints.get(AGGREGATE, _EMPTY)
        return self.endpoints.get(endpoint)

    def conflicts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, ids in self.route_claims.items():
            if len(ids) > 1:
                out.append(
                    {
                        "kind": "endpoint",
                        "name": f"/mcp/{name}",
                        "served_by": ids[0],
                        "hidden": list(ids[1:]),
                    }
                )
        for name, owners in self.tool_claims.items():
            if len(owners) > 1:
                out.append(
                    {
                        "kind": "aggregate-tool",
                        "name": name,
                        "served_by": f"{owners[0][0]}/{owners[0][1]}",
                        "hidden": [f"{sid}/{tool}" for sid, tool in owners[1:]],
                    }
                )
        out.sort(key=lambda c: (c["kind"], c["name"]))
        return out


@dataclass(frozen=True, slots=True)
class StateChange:
    """Told to subscribers after each swap."""

    version: int
    servers: frozenset[str]
    endpoints: frozenset[str]
    """Endpoints whose visible tool list changed ("" = aggregate): these get ``tools/list_changed``."""
    clusters: frozenset[str]
    removed_clusters: frozenset[str]


def _claim_add(claims: tuple[Any, ...] | None, item: Any) -> tuple[Any, ...]:
    return tuple(sorted({*(claims or ()), item}))


def _claim_remove(claims: tuple[Any, ...] | None, item: Any) -> tuple[Any, ...]:
    return tuple(c for c in (claims or ()) if c != item)


def _tool_view(tools: Mapping[str, Tool] | None) -> dict[str, str]:
    return {name: tool.fingerprint for name, tool in (tools or {}).items()}


class _Builder:
    """Applies one server's change to a state; every cost is proportional to that server."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.servers = state.servers.mutate()
        self.routes = state.routes.mutate()
        self.clusters = state.clusters.mutate()
        self.endpoints = state.endpoints.mutate()
        self.route_claims = state.route_claims.mutate()
        self.tool_claims = state.tool_claims.mutate()
        self.aggregate = state.endpoints.get(AGGREGATE, _EMPTY).mutate()
        self.touched_routes: set[str] = set()
        self.touched_agg: set[str] = set()
        self.clusters_changed: set[str] = set()
        self.clusters_removed: set[str] = set()

    def _agg_names(self, models: ServerModels) -> Iterable[tuple[str, str]]:
        naming = self.state.naming
        for tool in models.tools:
            yield naming.name(models.route.name, tool.name), tool.name

    def withdraw(self, old: ServerModels) -> None:
        sid = old.server_id
        self.servers.pop(sid, None)
        route = old.route.name
        self.route_claims[route] = _claim_remove(self.route_claims.get(route), sid)
        self.touched_routes.add(route)
        for agg, tool in self._agg_names(old):
            self.tool_claims[agg] = _claim_remove(self.tool_claims.get(agg), (sid, tool))
            self.touched_agg.add(agg)
        if old.cluster is not None:
            self.clusters.pop(old.cluster.name, None)
            self.clusters_removed.add(old.cluster.name)

    def place(self, new: ServerModels) -> None:
        sid = new.server_id
        self.servers[sid] = new
        route = new.route.name
        self.route_claims[route] = _claim_add(self.route_claims.get(route), sid)
        self.touched_routes.add(route)
        for agg, tool in self._agg_names(new):
            self.tool_claims[agg] = _claim_add(self.tool_claims.get(agg), (sid, tool))
            self.touched_agg.add(agg)
        if new.cluster is not None:
            self.clusters[new.cluster.name] = new.cluster
            self.clusters_removed.discard(new.cluster.name)
            self.clusters_changed.add(new.cluster.name)

    def _resolve(self) -> set[str]:
        changed: set[str] = set()
        for route in self.touched_routes:
            claims = self.route_claims.get(route) or ()
            before = _tool_view(self.state.endpoints.get(route))
            if not claims:
                self.route_claims.pop(route, None)
                self.routes.pop(route, None)
                self.endpoints.pop(route, None)
                after: dict[str, str] = {}
            else:
                winner: ServerModels = self.servers[claims[0]]
                self.routes[route] = winner.route
                fit = self.state.naming.fit
                tools = immutables.Map({fit(t.name): t for t in winner.tools})
                self.endpoints[route] = tools
                after = _tool_view(tools)
            if before != after or (route in self.state.endpoints) != bool(claims):
                changed.add(route)
        for route in self.touched_routes:
            # Whoever holds a route name also decides which aggregate names are visible.
            for sid in self.route_claims.get(route) or ():
                self.touched_agg.update(agg for agg, _ in self._agg_names(self.servers[sid]))
        agg_changed = False
        for agg in self.touched_agg:
            owners = self.tool_claims.get(agg) or ()
            before_fp = self.aggregate.get(agg)
            if not owners:
                self.tool_claims.pop(agg, None)
                self.aggregate.pop(agg, None)
                agg_changed |= before_fp is not None
                continue
            sid, tool_name = owners[0]
            owner = self.servers[sid]
            if self.route_claims.get(owner.route.name, ("",))[0] != sid:
                # The server lost its route name: its tools stay hidden with it.
                self.aggregate.pop(agg, None)
                agg_changed |= before_fp is not None
                continue
            tool = next(t for t in owner.tools if t.name == tool_name)
            self.aggregate[agg] = tool
            agg_changed |= before_fp is None or before_fp.fingerprint != tool.fingerprint
        if agg_changed:
            changed.add(AGGREGATE)
        return changed

    def _check(self, routes: Mapping[str, Route], clusters: Mapping[str, Cluster]) -> None:
        for route_name in self.touched_routes:
            for tool in (self.endpoints.get(route_name) or {}).values():
                self._check_tool(tool, routes, clusters)
        aggregate = self.aggregate
        for agg in self.touched_agg:
            visible = aggregate.get(agg)
            if visible is not None:
                self._check_tool(visible, routes, clusters)

    @staticmethod
    def _check_tool(tool: Tool, routes: Mapping[str, Route], clusters: Mapping[str, Cluster]) -> None:
        route = routes.get(tool.route)
        if route is None or route.server_id != tool.server_id:
            raise StateError(f"tool {tool.name} of server {tool.server_id} points at missing route {tool.route}")
        if tool.cluster is not None and tool.cluster not in clusters:
            raise StateError(
                f"tool {tool.name} of server {tool.server_id} points at missing cluster {tool.cluster}"
            )

    def finish(self, version: int, statuses: immutables.Map[str, ServerStatus]) -> tuple[GatewayState, StateChange]:
        changed_endpoints = self._resolve()
        routes = self.routes.finish()
        clusters = self.clusters.finish()
        self._check(routes, clusters)
        self.endpoints[AGGREGATE] = self.aggregate.finish()
        state = replace(
            self.state,
            version=version,
            servers=self.servers.finish(),
            statuses=statuses,
            routes=routes,
            clusters=clusters,
            endpoints=self.endpoints.finish(),
            route_claims=self.route_claims.finish(),
            tool_claims=self.tool_claims.finish(),
        )
        change = StateChange(
            version=version,
            servers=frozenset(),
            endpoints=frozenset(changed_endpoints),
            clusters=frozenset(self.clusters_changed),
            removed_clusters=frozenset(self.clusters_removed),
        )
        return state, change


Subscriber = Callable[[StateChange], None]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
_OPEN: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("mcpgw_state_transaction", default=None)


class Transaction:
    """One server's change, staged by the managers' write calls and committed whole, or not at all.

    ``DynamicToolRegistry.update_tools``, ``RouterManager.add_router`` /
    ``remove_router`` and ``ClusterManager.set_cluster`` / ``remove_cluster``
    stage their part here (they find the transaction open in this context);
    leaving ``StateStore.transaction`` commits: the server's models are
    assembled from the staged parts (the converter's header for the rest),
    consistency-checked and swapped in with one assignment. An exception in
    the block, or a check that fails (a tool whose route or cluster the
    transaction does not provide), commits nothing.
    """

    def __init__(self, server_id: str, header: ServerModels | None, withdraw: Mapping[str, Any] | None) -> None:
        self.server_id = server_id
        self.header = header
        self.withdraw = withdraw
        self.tools: Any = _UNSET
        self.route: Any = _UNSET
        self.cluster: Any = _UNSET
        self.change: StateChange | None = None
        self.committed = False

    def _own(self, adapter_id: str, call: str) -> None:
        if adapter_id != self.server_id:
            raise StateError(f"{call} for server {adapter_id} inside the transaction of server {self.server_id}")

    def stage_tools(self, adapter_id: str, tools: tuple[Tool, ...]) -> None:
        self._own(adapter_id, "update_tools")
        self.tools = tools

    def stage_route(self, adapter_id: str, route: Route | None) -> None:
        self._own(adapter_id, "add_router" if route is not None else "remove_router")
        self.route = route

    def stage_cluster(self, adapter_id: str, cluster: Cluster | None) -> None:
        self._own(adapter_id, "set_cluster" if cluster is not None else "remove_cluster")
        self.cluster = cluster

    def models(self) -> ServerModels | None:
        """What the server serves once committed; None when its route was removed (it is withdrawn).

        The staged parts are the whole truth: a server serves the route
        ``add_router`` gave, exactly the tools ``update_tools`` gave (none if
        it was not called) and the cluster ``set_cluster`` gave (none if it
        was not called); the converter's header adds only its name, version,
        fingerprint and the like.
        """
        if self.route is None:
            if self.tools is not _UNSET and self.tools:
                raise StateError(f"server {self.server_id}: its route is removed but update_tools gave it tools")
            return None
        if self.route is _UNSET:
            raise StateError(f"server {self.server_id}: a transaction that serves it needs add_router")
        if self.header is None:
            raise StateError(f"server {self.server_id}: a transaction that serves it needs the converter's models")
        return replace(self.header, route=self.route, tools=() if self.tools is _UNSET else self.tools,
                       cluster=None if self.cluster is _UNSET else self.cluster)


def open_transaction(adapter_id: str, call: str) -> Transaction:
    """The transaction open in this context, for the write calls of the managers."""
    transaction = _OPEN.get()
    if transaction is None:
        raise StateError(
            f"{call}({adapter_id!r}) outside a transaction: state changes only inside StateStore.transaction(...) "
            "(MCPServerAdapter.on_config_update opens one)"
        )
    return transaction


class StateStore:
    """Holds the current ``GatewayState`` and performs every swap.

    Writers serialise on a lock (several listener tasks, or threads, may
    write); readers just read ``current``.  Unchanged content is a no-op: no
    version bump, no notification.
    """

    def __init__(self, naming: AggregateNaming | None = None, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self.current = GatewayState(naming=naming or AggregateNaming())

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _publish(self, change: StateChange) -> None:
        for callback in list(self._subscribers):
            callback(change)

    @contextlib.contextmanager
    def transaction(self, server_id: str, *, models: ServerModels | None = None,
                    withdraw: Mapping[str, Any] | None = None) -> Iterator[Transaction]:
        """Stage one server's change through the managers, then commit it whole (see ``Transaction``).

        ``models`` is the converter's result the staged parts complete;
        ``withdraw`` the status arguments of ``remove`` (``phase``, ``name``,
        ``version``, ``message``) for a transaction that removes the server's
        route. Nested transactions are refused: one change is one server.
        """
        if _OPEN.get() is not None:
            raise StateError(f"a transaction for server {server_id} inside another one")
        transaction = Transaction(server_id, models, withdraw)
        token = _OPEN.set(transaction)
        try:
            yield transaction
        finally:
            _OPEN.reset(token)
        served = transaction.models()
        if served is None:
            transaction.change = self.remove(server_id, **(withdraw or {}))
        else:
            transaction.change = self.apply(served)
        transaction.committed = True

    def apply(self, models: ServerModels) -> StateChange | None:
        """Serve ``models`` for its server (make before break: all of it or nothing).

        The write path calls this through ``transaction``; it stays public for
        tests and benches that build a state directly.
        """
        with self._lock:
            state = self.current
            old = state.servers.get(models.server_id)
            old_status = state.statuses.get(models.server_id)
            now = self._clock()
            unchanged = old is not None and old.fingerprint == models.fingerprint
            status = ServerStatus(
                server_id=models.server_id,
                name=models.name,
                phase="serving",
                applied_version=models.version,
                desired_version=models.version,
                last_error=None,
                applied_at=old_status.applied_at if unchanged and old_status else now,
                updated_at=now,
                tools=len(models.tools),
                revision=models.fingerprint[:8],
                warnings=models.warnings + state.naming.renames(models),
            )
            if unchanged and old_status is not None and _same_status(old_status, status):
                return None
            builder = _Builder(state)
            if old is not None and not unchanged:
                builder.withdraw(old)
            if not unchanged:
                builder.place(models)
            statuses = state.statuses.set(models.server_id, status)
            new_state, change = builder.finish(state.version + 1, statuses)
            change = replace(change, servers=frozenset({models.server_id}))
            self.current = new_state
        self._publish(change)
        return change

    def remove(self, server_id: str, *, phase: ServerPhase | None = None, name: str = "",
               version: str | None = None, message: str = "") -> StateChange | None:
        """Stop serving a server.  With ``phase`` (e.g. ``disabled``) its status stays visible."""
        with self._lock:
            state = self.current
            old = state.servers.get(server_id)
            old_status = state.statuses.get(server_id)
            if phase is None:
                if old is None and old_status is None:
                    return None
                statuses = state.statuses.delete(server_id) if old_status else state.statuses
            else:
                status = ServerStatus(
                    server_id=server_id,
                    name=name or (old_status.name if old_status else ""),
                    phase=phase,
                    desired_version=version,
                    message=message,
                    updated_at=self._clock(),
                )
                if old is None and old_status is not None and _same_status(old_status, status):
                    return None
                statuses = state.statuses.set(server_id, status)
            builder = _Builder(state)
            if old is not None:
                builder.withdraw(old)
            new_state, change = builder.finish(state.version + 1, statuses)
            change = replace(change, servers=frozenset({server_id}))
            self.current = new_state
        self._publish(change)
        return change

    def record_problem(self, server_id: str, *, name: str, phase: ServerPhase, version: str | None,
                       message: str, error: Mapping[str, str] | None = None) -> StateChange | None:
        """Record an error or a wait without touching what is served (last-known-good)."""
        with self._lock:
            state = self.current
            old_status = state.statuses.get(server_id)
            serving = state.servers.get(server_id)
            now = self._clock()
            if serving is not None and phase in ("error", "pending"):
                phase = "stale" if error else "serving"
            status = ServerStatus(
                server_id=server_id,
                name=name or (old_status.name if old_status else ""),
                phase=phase,
                applied_version=serving.version if serving else None,
                desired_version=version,
                message=message,
                last_error=error if error is not None else (
                    old_status.last_error if old_status and phase == "pending" else None
                ),
                last_error_at=now if error is not None else (old_status.last_error_at if old_status else None),
                applied_at=old_status.applied_at if old_status else None,
                updated_at=now,
                tools=len(serving.tools) if serving else 0,
                revision=serving.fingerprint[:8] if serving else None,
                warnings=serving.warnings + state.naming.renames(serving) if serving else (),
            )
            if old_status is not None and _same_status(old_status, status):
                return None
            self.current = replace(state, version=state.version + 1, statuses=state.statuses.set(server_id, status))
            change = StateChange(
                version=state.version + 1,
                servers=frozenset({server_id}),
                endpoints=frozenset(),
                clusters=frozenset(),
                removed_clusters=frozenset(),
            )
        self._publish(change)
        return change


def _same_status(a: ServerStatus, b: ServerStatus) -> bool:
    """Equal but for timestamps: re-recording the same thing is a no-op."""
    return (
        a.name == b.name
        and a.phase == b.phase
        and a.applied_version == b.applied_version
        and a.desired_version == b.desired_version
        and a.message == b.message
        and a.last_error == b.last_error
        and a.tools == b.tools
        and a.revision == b.revision
        and a.warnings == b.warnings
    )
