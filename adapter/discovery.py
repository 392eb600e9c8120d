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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog

from mcpgw.adapter.listener import BackendTools, ConfigListener
from mcpgw.converter.converter import ConfigConverter
from mcpgw.registry.errors import SourceError
from mcpgw.registry.state import StateStore
from mcpgw.remote.base import DEFAULT_NAMESPACE, RemoteClient, versions_key

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
    ) -> None:
        self._source = source
        self._store = store
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
                self._store.remove(server_id)
                log.info("discovery.server_removed", server=listener.name or None, server_id=server_id)
            for server_id in sorted(plan.start):
                listener = ConfigListener(
                    server_id,
                    namespace=self._namespace,
                    source=self._source,
                    store=self._store,
                    converter=self._converter,
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
