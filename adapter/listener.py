"""ConfigListener: the cascade that follows one MCP server through its Nacos files.

versions file → ``latestPublishedVersion`` → that version's server spec and
tools spec → the ``serviceRef``'s instances and every referenced credential
config → one snapshot → converter → state.

Level-triggered, like controller-runtime: source callbacks only record the
new content and mark the server dirty (the Nacos SDK holds a lock while it
awaits them; calling back into it from there deadlocks).  One task per
server then re-derives everything from the recorded contents, so a burst of
events coalesces into one or two reconciles, two reconciles of one server
never overlap, and a slow server never blocks another.

A proxied MCP server whose tools spec lists no tools gets its tools from
the backend itself: with a ``BackendTools`` fetcher injected, the listing
of one routable instance becomes part of the snapshot, so the converter
checks it like spec tools and the server is applied whole or not at all.
It is fetched again when the version, the route or the routable instances
change, and when the backend says its tool list changed.  A failed fetch
keeps the last good tools (instance changes still go through), records the
error in the server status and retries with back-off on a timer, so the
listener goes idle meanwhile and never holds up readiness or other servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from mcpgw.converter.converter import (
    BACKEND_TOOLS_FILE,
    ConfigConverter,
    DisabledServer,
    ServerSnapshot,
    credential_refs,
    parse_server_spec,
    parse_versions,
    select_version,
    service_key_of,
)
from mcpgw.registry.errors import ConversionError, McpgwError, SourceError, StateError
from mcpgw.registry.models import Instance, Route, ServerModels
from mcpgw.registry.state import ServerPhase, StateStore
from mcpgw.remote.base import (
    ConfigKey,
    RemoteClient,
    ServiceInstance,
    ServiceKey,
    server_spec_key,
    tools_spec_key,
    versions_key,
)

log = structlog.get_logger("mcpgw.listener")

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 10.0


class BackendTools(Protocol):
    """Lists the tools of a proxied MCP server's backend (implemented in gateway/, over the upstream pool)."""

    async def list_tools(self, route: Route, instances: Sequence[Instance]) -> list[dict[str, Any]]:
        """The backend's tools as MCP ``Tool`` JSON, from the first of ``instances`` that answers.

        ``instances`` are routable, in order of preference.  Raises ``McpgwError`` when none answers.
        """
        ...

    def watch(self, server_id: str, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` when a backend instance last listed for the server may have other tools now.

        Returns the function that stops watching.
        """
        ...


ListingKey = tuple[str, str, str, tuple[str, ...]]
"""What a backend listing depends on: version, transport, exportPath, routable instance ids."""


@dataclass(frozen=True, slots=True)
class _Problem:
    phase: ServerPhase
    message: str
    error: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """What ``on_config_update`` made of a snapshot."""

    result: ServerModels | DisabledServer | None
    problem: Any
    """What the refinement reported (a backend that could not list its tools), or None."""
    committed: bool


Refine = Callable[[ServerSnapshot, ServerModels], Awaitable[tuple[ServerModels | None, Any]]]
"""Completes converted models before they are committed (a proxied server's tools listed by its backend)."""


class ConfigWriter(Protocol):
    """The write path a listener hands its snapshots to (``adapter.discovery.MCPServerAdapter``)."""

    @property
    def converter(self) -> ConfigConverter: ...

    async def on_config_update(self, server_id: str, snapshot: ServerSnapshot, *,
                               refine: Refine | None = None) -> ConfigUpdate: ...

    def reconvert(self, server_id: str, snapshot: ServerSnapshot) -> ServerModels | None: ...

    def withdraw(self, server_id: str, *, phase: ServerPhase | None = None, name: str = "",
                 version: str | None = None, message: str = "") -> Any: ...


class ConfigListener:
    """Follows one server; owns every watch it opens and cancels them on stop."""

    def __init__(
        self,
        server_id: str,
        *,
        namespace: str,
        source: RemoteClient,
        store: StateStore,
        writer: ConfigWriter,
        backend_tools: BackendTools | None = None,
    ) -> None:
        self.server_id = server_id
        self.namespace = namespace
        self._source = source
        self._store = store
        """Read here; written only through ``writer`` (statuses: ``record_problem``)."""
        self._writer = writer
        self._contents: dict[ConfigKey, str | None] = {}
        self._pushes: dict[ConfigKey, int] = {}
        self._watched: set[ConfigKey] = set()
        self._service: ServiceKey | None = None
        self._instances: tuple[ServiceInstance, ...] | None = None
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._name = ""
        self.reconciles = 0
        self._backend_tools = backend_tools
        self._listing: tuple[Mapping[str, Any], ...] | None = None
        self._last_good: ServerSnapshot | None = None
        """The snapshot the served models came from: instance changes still reach it while a newer spec is bad."""
        self._listing_key: ListingKey | None = None
        self._refetch = False
        self._unwatch: Callable[[], None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = RETRY_INITIAL_S
        self._crash_retry: asyncio.TimerHandle | None = None
        self.backend_fetches = 0

    @property
    def name(self) -> str:
        """The server's name from its versions file ("" until it was read): what logs show beside the id."""
        return self._name

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.mark_dirty()
        self._task = asyncio.create_task(self._run(), name=f"listener:{self.server_id}")

    async def stop(self) -> None:
        """Cancel the task and every watch; the caller decides what happens to the state."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            self._task = None
        if self._crash_retry is not None:
            self._crash_retry.cancel()
            self._crash_retry = None
        self._forget_backend_tools()
        await self._release(keep=())
        await self._set_service(None)
        self._idle.set()

    @property
    def watched(self) -> frozenset[ConfigKey]:
        return frozenset(self._watched)

    @property
    def service(self) -> ServiceKey | None:
        return self._service

    def mark_dirty(self) -> None:
        self._idle.clear()
        self._dirty.set()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- source callbacks: record and mark dirty, nothing else -------------

    async def _on_config(self, key: ConfigKey, content: str) -> None:
        if key not in self._watched:
            return
        self._pushes[key] = self._pushes.get(key, 0) + 1
        new = content or None
        if self._contents.get(key) != new or key not in self._contents:
            self._contents[key] = new
            self.mark_dirty()

    async def _on_instances(self, key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        if key != self._service:
            return
        if self._instances != tuple(instances):
            self._instances = tuple(instances)
            self.mark_dirty()

    # -- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
                delay = RETRY_INITIAL_S
            except asyncio.CancelledError:
                raise
            except SourceError as exc:
                log.warning("listener.source_error", server=self.name or None, server_id=self.server_id,
                            error=str(exc), retry_in=delay)
                self._store.record_problem(
                    self.server_id, name=self._name, phase="pending", version=None,
                    message=f"cannot read from the source, retrying: {exc}",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self.mark_dirty()
            except Exception as exc:
                # A gateway bug, not a source outage: say so on the status, retry on a timer and go idle
                # meanwhile, so readiness and discovery never wait on this one server.
                log.exception("listener.reconcile_failed", server=self.name or None, server_id=self.server_id,
                              retry_in=delay)
                self._crashed(exc, delay)
                delay = min(delay * 2, RETRY_MAX_S)
            if not self._dirty.is_set():
                self._idle.set()

    def _crashed(self, exc: Exception, delay: float) -> None:
        reason = (
            f"the gateway failed internally while applying this server ({type(exc).__name__}); the last good "
            f"version keeps serving, it retries in {delay:g} s, and the details are in the gateway log"
        )
        self._store.record_problem(
            self.server_id, name=self._name, phase="error", version=None, message=reason,
            error={"server_id": self.server_id, "version": "", "file": "", "tool": "", "path": "$", "reason": reason},
        )
        if self._crash_retry is not None:
            self._crash_retry.cancel()
        self._crash_retry = asyncio.get_running_loop().call_later(delay, self._retry_after_crash)

    def _retry_after_crash(self) -> None:
        self._crash_retry = None
        self.mark_dirty()

    async def _watch(self, key: ConfigKey) -> None:
        """Listen, then read: a push that races the read wins, since it is at least as new."""
        if key in self._watched:
            return
        self._watched.add(key)
        before = self._pushes.get(key, 0)
        await self._source.listen_config(key, self._on_config)
        content = await self._source.get_config(key)
        if self._pushes.get(key, 0) == before:
            self._contents[key] = content or None

    async def _release(self, keep: Iterable[ConfigKey]) -> None:
        keep_set = set(keep)
        for key in sorted(self._watched - keep_set):
            self._watched.discard(key)
            self._contents.pop(key, None)
            self._pushes.pop(key, None)
            await self._source.stop_listening(key, self._on_config)

    async def _set_service(self, service: ServiceKey | None) -> None:
        if service == self._service:
            return
        if self._service is not None:
            await self._source.unsubscribe(self._service, self._on_instances)
        self._service = service
        self._instances = None
        if service is not None:
            try:
                await self._source.subscribe(service, self._on_instances)
                listed = tuple(await self._source.list_instances(service))
            except BaseException:
                # Not followed after all: the next reconcile must try again, not go on without instances.
                self._service = None
                with contextlib.suppress(Exception):
                    await self._source.unsubscribe(service, self._on_instances)
                raise
            if self._instances is None:
                self._instances = listed

    async def _reconcile(self) -> None:
        self.reconciles += 1
        ns = self.namespace
        vkey = versions_key(self.server_id, ns)
        await self._watch(vkey)
        versions_content = self._contents.get(vkey)
        if versions_content is None:
            # Deleting a server (or its last version) deletes the versions file.
            await self._release(keep=(vkey,))
            await self._set_service(None)
            self._forget_backend_tools()
            self._writer.withdraw(self.server_id)
            return
        try:
            versions = parse_versions(self.server_id, ns, versions_content)
            self._name = versions.name
            if not versions.enabled:
                await self._release(keep=(vkey,))
                await self._set_service(None)
                self._forget_backend_tools()
                self._writer.withdraw(
                    self.server_id, phase="disabled", name=versions.name,
                    version=versions.latestPublishedVersion, message="disabled in its versions file",
                )
                return
            version = select_version(versions, ns)
        except ConversionError as exc:
            self._problem(exc, version=None)
            return
        if version is None:
            self._store.record_problem(
                self.server_id, name=self._name, phase="pending", version=None,
                message="no published version yet (only drafts)",
            )
            return
        skey = server_spec_key(self.server_id, version, ns)
        tkey = tools_spec_key(self.server_id, version, ns)
        await self._watch(skey)
        await self._watch(tkey)
        spec_content = self._contents.get(skey)
        tools_content = self._contents.get(tkey)
        if spec_content is None or tools_content is None:
            missing = [k.data_id for k, c in ((skey, spec_content), (tkey, tools_content)) if c is None]
            # Nacos writes the versions file before the specs: wait for them, keep serving.
            await self._release(keep=(vkey, skey, tkey))
            self._follow_instances_with_last_good()
            self._store.record_problem(
                self.server_id, name=self._name, phase="pending", version=version,
                message="waiting for " + " and ".join(missing),
            )
            return
        try:
            spec = parse_server_spec(self.server_id, version, ns, spec_content)
        except ConversionError as exc:
            await self._release(keep=(vkey, skey, tkey))
            self._problem(exc, version=version)
            return
        await self._set_service(service_key_of(spec))
        creds = credential_refs(tools_content, ns)
        for key in sorted(creds):
            await self._watch(key)
        await self._release(keep={vkey, skey, tkey, *creds})
        snapshot = ServerSnapshot(
            server_id=self.server_id,
            namespace=ns,
            versions=versions_content,
            server_spec=spec_content,
            tools_spec=tools_content,
            instances=self._instances,
            credentials={key: self._contents.get(key) for key in creds},
            backend_tools=self._listing,
        )
        try:
            update = await self._writer.on_config_update(self.server_id, snapshot, refine=self._refine)
        except ConversionError as exc:
            self._problem(exc, version=version)
            return
        except StateError as exc:
            self._state_refused(exc, version)
            return
        if isinstance(update.result, DisabledServer):
            self._forget_backend_tools()
            return
        if update.committed:
            self._last_good = replace(snapshot, backend_tools=self._listing)
        problem: _Problem | None = update.problem
        if problem is not None:
            self._store.record_problem(
                self.server_id, name=self._name, phase=problem.phase, version=version,
                message=problem.message, error=problem.error,
            )

    async def _refine(self, snapshot: ServerSnapshot, models: ServerModels) -> tuple[ServerModels | None, Any]:
        if models.tools_from_backend and self._backend_tools is not None:
            return await self._with_backend_tools(self._backend_tools, snapshot, models)
        self._forget_backend_tools()
        return models, None

    def _state_refused(self, exc: StateError, version: str) -> None:
        self._store.record_problem(
            self.server_id, name=self._name, phase="error", version=version, message=str(exc),
            error={"server_id": self.server_id, "version": version, "file": "", "tool": "",
                   "path": "$", "reason": str(exc)},
        )

    def _follow_instances_with_last_good(self) -> None:
        """While the newest spec cannot be served, the last good one still follows its instances.

        An instance that left Nacos must leave the cluster even when the spec
        published after it is broken, or calls would keep going to it.
        """
        last = self._last_good
        if last is None or last.instances == self._instances or self.server_id not in self._store.current.servers:
            return
        try:
            models = self._writer.reconvert(self.server_id, replace(last, instances=self._instances))
        except ConversionError:
            return
        except StateError as exc:
            served = self._store.current.servers.get(self.server_id)
            self._state_refused(exc, served.version if served is not None else "")
            return
        if models is not None:
            self._last_good = replace(last, instances=self._instances)

    # -- tools listed by the backend ---------------------------------------

    async def _with_backend_tools(
        self, fetcher: BackendTools, snapshot: ServerSnapshot, models: ServerModels
    ) -> tuple[ServerModels | None, _Problem | None]:
        """``models`` with the backend's tools, and what to record when they could not be (re)listed."""
        routable = models.cluster.routable_instances if models.cluster is not None else ()
        key: ListingKey = (models.version, models.route.backend, models.route.export_path,
                           tuple(i.id for i in routable))
        if self._listing is not None and key == self._listing_key and not self._refetch:
            return models, None
        if self._unwatch is None:
            self._unwatch = fetcher.watch(self.server_id, self._on_backend_tools_changed)
        if not routable:
            if self._listing is not None:
                # Calls fail with "no healthy instance" meanwhile; the tools stay listed until one is back.
                return models, None
            service = models.cluster.service if models.cluster is not None else "its serviceRef"
            return None, _Problem("pending", f"waiting for a healthy instance of {service} to list its tools")
        self._refetch = False
        self.backend_fetches += 1
        try:
            listing = tuple(await fetcher.list_tools(models.route, routable))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return (models if self._listing is not None else None), self._backend_failed(exc, models)
        converted = self._writer.converter.convert(replace(snapshot, backend_tools=listing))
        # Only a listing that converted becomes the last good one.
        self._listing, self._listing_key = listing, key
        self._cancel_retry()
        self._retry_delay = RETRY_INITIAL_S
        return (converted if isinstance(converted, ServerModels) else None), None

    def _backend_failed(self, exc: Exception, models: ServerModels) -> _Problem:
        delay = self._retry_delay
        self._retry_delay = min(delay * 2, RETRY_MAX_S)
        self._refetch = True
        self._cancel_retry()
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)
        if isinstance(exc, McpgwError):
            reason = str(exc)
            log.warning("listener.backend_tools_failed", server=self.name or None, server_id=self.server_id,
                        error=reason, retry_in=delay)
        else:
            reason = f"unexpected {type(exc).__name__}"
            log.error("listener.backend_tools_failed", server=self.name or None, server_id=self.server_id,
                      retry_in=delay, exc_info=exc)
        kept = "keeping the tools listed before, " if self._listing is not None else ""
        message = f"cannot list the backend's tools ({kept}retrying): {reason}"
        return _Problem("error", message, {
            "server_id": self.server_id, "version": models.version, "file": BACKEND_TOOLS_FILE,
            "tool": "", "path": "$", "reason": message,
        })

    def _on_backend_tools_changed(self) -> None:
        self._refetch = True
        self.mark_dirty()

    def _retry_now(self) -> None:
        self._retry = None
        self.mark_dirty()

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _forget_backend_tools(self) -> None:
        self._cancel_retry()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._listing = self._listing_key = None
        self._refetch = False
        self._retry_delay = RETRY_INITIAL_S

    def _problem(self, exc: ConversionError, *, version: str | None) -> None:
        self._follow_instances_with_last_good()
        log.warning("listener.rejected", server=self.name or None, server_id=self.server_id,
                    version=version, error=exc.describe())
        self._store.record_problem(
            self.server_id, name=self._name, phase="error", version=version or exc.version or None,
            message=exc.describe(), error=exc.location(),
        )
