"""MCPServerAdapter: the discovery loop that keeps one ConfigListener per MCP server.

Like kopf, the decision of what to stop and start is ONE pure function,
``plan_discovery``, tested without the loop.  Deletion through the listing is
deliberately slow and sure — a server must be absent from two listings in a
row and its versions file must be gone — because a flaky listing (an admin
API restart, a paging glitch, a sudden empty answer) must never wipe healthy
servers.  A sudden empty listing stops nothing; only when it repeats are the
servers it omits checked, one by one, for their versions file (so deleting
the last server still ends its listener).  Explicit deletions are fast
anyway: deleting a server deletes its versions file, which its listener sees
within milliseconds.

It is also the design's write path. ``MCPServerAdapter.apply(settings)``
builds the ``RemoteClient`` the settings name. Listeners hand every snapshot
they aggregate to ``on_config_update(server_id, snapshot)``, which runs the
``ConfigConverter`` and commits the result through the managers, in the
design's words — ``DynamicToolRegistry.update_tools(adapter_id, tools)``,
``RouterManager.add_router`` and ``ClusterManager.set_cluster`` (or
``remove_router`` / ``remove_cluster`` when a server goes) — as one
transaction on the versioned state (``StateStore.transaction``): committed,
consistency-checked and swapped whole, or not at all. Java's
``onConfigUpdate`` / ``UpdateTools`` / ``AddRouter`` / ``SetCluster`` are
these snake-case methods; the design's adapter id is the server id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from mcpgw.adapter.listener import BackendTools, ConfigListener, ConfigUpdate, Refine
from mcpgw.converter.converter import ConfigConverter, DisabledServer, ServerSnapshot
from mcpgw.registry.errors import SourceError
from mcpgw.registry.managers import ClusterManager, DynamicToolRegistry, RouterManager
from mcpgw.registry.models import ServerModels
from mcpgw.registry.state import ServerPhase, StateChange, StateStore
from mcpgw.remote.base import DEFAULT_NAMESPACE, RemoteClient, versions_key

if TYPE_CHECKING:
    from mcpgw.gateway.settings import Settings

log = structlog.get_logger("mcpgw.discovery")


@dataclass(frozen=True, slots=True)
class DiscoveryPlan:
    stop: frozenset[str]
    """Absent from two listings in a row: stop these (after confirming their versions file is gone)."""
    start: frozenset[str]
    absent: frozenset[str]
    """Absent for the first time: look again next pass."""
    suspicious_empty_listing: bool = False
    """The listing was empty while servers run: trusted only once repeated and confirmed per server."""


def plan_discovery(listed: Collection[str], running: Collection[str], absent_before: Collection[str]) -> DiscoveryPlan:
    """Diff the listing against the running listeners: stop removed first, then start new."""
    listed_set, running_set = set(listed), set(running)
    missing = running_set - listed_set
    confirmed = missing & set(absent_before)
    return DiscoveryPlan(
        stop=frozenset(confirmed),
        start=frozenset(listed_set - running_set),
        absent=frozenset(missing - confirmed),
        suspicious_empty_listing=not listed_set and bool(running_set),
    )


async def guarded(name: str, body: Callable[[], Awaitable[None]], *, initial: float = 0.5,
                  maximum: float = 30.0) -> None:
    """Run ``body`` forever; a failure is logged and retried with back-off, never propagated."""
    delay = initial
    while True:
        try:
            await body()
            delay = initial
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task.failed", task=name, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, maximum)


class MCPServerAdapter:
    """Owns the discovery loop and every listener."""

    def __init__(
        self,
        source: RemoteClient,
        store: StateStore,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval: float = 10.0,
        converter: ConfigConverter | None = None,
        backend_tools: BackendTools | None = None,
        tools: DynamicToolRegistry | None = None,
        routers: RouterManager | None = None,
        clusters: ClusterManager | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self.tools = tools or DynamicToolRegistry(store)
        self.routers = routers or RouterManager(store)
        self.clusters = clusters or ClusterManager(store)
        self._namespace = namespace
        self._interval = interval
        self._converter = converter or ConfigConverter()
        self._backend_tools = backend_tools
        self._listeners: dict[str, ConfigListener] = {}
        self._absent: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.passes = 0
        self.listing_problem: str | None = None
        """Why the last listing of MCP servers failed (``None`` once one succeeds): shown on /admin/state."""

    @property
    def listeners(self) -> dict[str, ConfigListener]:
        return self._listeners

    # -- the write path ----------------------------------------------------

    @property
    def converter(self) -> ConfigConverter:
        """The stateless converter (listeners convert a backend's tool listing with it)."""
        return self._converter

    @staticmethod
    def apply(settings: Settings) -> RemoteClient:
        """The ``RemoteClient`` the settings name: Nacos (``nacos``), else the files tree."""
        if settings.nacos is not None:
            from mcpgw.remote.nacos import NacosSource

            return NacosSource(
                settings.nacos,
                namespace=settings.namespace,
                username=settings.username,
                password=settings.password,
                cache_dir=settings.state_dir / "nacos-cache",
                log_dir=settings.state_dir / "logs",
                listing_poll_interval=settings.listing_poll_interval,
            )
        from mcpgw.remote.files import FilesSource

        return FilesSource(settings.files_root)

    async def on_config_update(self, server_id: str, snapshot: ServerSnapshot, *,
                               refine: Refine | None = None) -> ConfigUpdate:
        """Convert ``snapshot`` and commit what it yields as one transaction.

        ``refine`` may complete converted models (a proxied server's tools
        listed by its backend) and report a problem. A ``ConversionError``
        or ``StateError`` propagates with nothing committed: the caller
        records it, and the last good version keeps serving.
        """
        if snapshot.server_id != server_id:
            raise ValueError(f"on_config_update({server_id!r}) was given the snapshot of {snapshot.server_id}")
        result = self._converter.convert(snapshot)
        problem: Any = None
        if isinstance(result, ServerModels) and refine is not None:
            result, problem = await refine(snapshot, result)
        if isinstance(result, DisabledServer):
            self.withdraw(server_id, phase="disabled", name=result.name, version=result.version,
                          message="disabled in its server spec")
            return ConfigUpdate(result, problem, committed=True)
        if result is None:
            return ConfigUpdate(None, problem, committed=False)
        if problem is not None and not self._differs_from_served(result):
            return ConfigUpdate(result, problem, committed=False)
        self.commit(result)
        return ConfigUpdate(result, problem, committed=True)

    def reconvert(self, server_id: str, snapshot: ServerSnapshot) -> ServerModels | None:
        """``on_config_update`` without refinement, for a snapshot that served before (its instances changed).

        Returns the committed models, or None when the snapshot no longer converts to a served server.
        """
        result = self._converter.convert(snapshot)
        if not isinstance(result, ServerModels):
            return None
        self.commit(result)
        return result

    def commit(self, models: ServerModels) -> StateChange | None:
        """Serve ``models``: its route, tools and cluster staged through the managers, committed whole."""
        server_id = models.server_id
        with self._store.transaction(server_id, models=models) as transaction:
            self.routers.add_router(models.route)
            self.tools.update_tools(server_id, models.tools)
            if models.cluster is not None:
                self.clusters.set_cluster(models.cluster, server_id)
            else:
                self.clusters.remove_cluster(server_id)
        return transaction.change

    def withdraw(self, server_id: str, *, phase: ServerPhase | None = None, name: str = "",
                 version: str | None = None, message: str = "") -> StateChange | None:
        """Stop serving a server (its route and cluster removed); with ``phase`` its status stays visible."""
        status = {"phase": phase, "name": name, "version": version, "message": message}
        with self._store.transaction(server_id, withdraw=status) as transaction:
            self.routers.remove_router(server_id)
            self.clusters.remove_cluster(server_id)
        return transaction.change

    def _differs_from_served(self, models: ServerModels) -> bool:
        served = self._store.current.servers.get(models.server_id)
        return served is None or served.fingerprint != models.fingerprint

    async def _on_listing_changed(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Discovery forever: every ``interval`` and at once when the source signals a change."""
        await self._source.watch_listing(self._on_listing_changed)
        await guarded("discovery", self._loop_once)

    async def _loop_once(self) -> None:
        self._wake.clear()
        try:
            await self.sync_once()
        finally:
            if not self.ready.is_set() and self.passes:
                await self._await_first_reconciles()
        try:
            async with asyncio.timeout(self._interval):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _await_first_reconciles(self) -> None:
        for listener in list(self._listeners.values()):
            await listener.wait_idle()
        self.ready.set()
        log.info("discovery.ready", servers=len(self._listeners), state_version=self._store.current.version)

    async def sync_once(self) -> None:
        """One discovery pass."""
        async with self._sync_lock:
            try:
                listing = await self._source.list_mcp_servers(self._namespace)
            except SourceError as exc:
                log.warning("discovery.listing_failed", error=str(exc))
                self.listing_problem = f"cannot list the MCP servers, retrying: {exc}"
                raise
            except Exception as exc:
                self.listing_problem = (
                    f"listing the MCP servers failed internally ({type(exc).__name__}), retrying; "
                    "the details are in the gateway log"
                )
                raise
            self.listing_problem = None
            plan = plan_discovery([s.id for s in listing], self._listeners.keys(), self._absent)
            names = {s.id: s.name for s in listing}
            if plan.suspicious_empty_listing:
                log.warning("discovery.empty_listing", running=len(self._listeners),
                            stopping_if_versions_file_gone=len(plan.stop))
            absent = set(plan.absent)
            for server_id in sorted(plan.stop):
                if await self._source.get_config(versions_key(server_id, self._namespace)) is not None:
                    log.warning("discovery.listing_inconsistent", server_id=server_id,
                                reason="absent from the listing but its versions file still exists")
                    continue
                listener = self._listeners.pop(server_id)
                await listener.stop()
                self.withdraw(server_id)
                log.info("discovery.server_removed", server=listener.name or None, server_id=server_id)
            for server_id in sorted(plan.start):
                listener = ConfigListener(
                    server_id,
                    namespace=self._namespace,
                    source=self._source,
                    store=self._store,
                    writer=self,
                    backend_tools=self._backend_tools,
                )
                self._listeners[server_id] = listener
                listener.start()
                log.info("discovery.server_added", server=names.get(server_id) or None, server_id=server_id)
            self._absent = frozenset(absent)
            self.passes += 1

    async def quiesce(self) -> None:
        """Wait until discovery and every listener have nothing left to do (tests, replay)."""
        while True:
            await self.sync_once()
            for listener in list(self._listeners.values()):
                await listener.wait_idle()
            if all(listener.idle for listener in self._listeners.values()):
                return

    async def close(self) -> None:
        for server_id in sorted(self._listeners):
            await self._listeners[server_id].stop()
        self._listeners.clear()
