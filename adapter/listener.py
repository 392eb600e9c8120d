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
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from converter.converter import (
    ConfigConverter,
    DisabledServer,
    ServerSnapshot,
    credential_refs,
    parse_server_spec,
    parse_versions,
    select_version,
    service_key_of,
)
from registry.errors import ConversionError, SourceError, StateError
from registry.state import StateStore
from remote.base import (
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


class ConfigListener:
    """Follows one server; owns every watch it opens and cancels them on stop."""

    def __init__(
        self,
        server_id: str,
        *,
        namespace: str,
        source: RemoteClient,
        store: StateStore,
        converter: ConfigConverter,
    ) -> None:
        self.server_id = server_id
        self.namespace = namespace
        self._source = source
        self._store = store
        self._converter = converter
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
                log.warning("listener.source_error", server_id=self.server_id, error=str(exc), retry_in=delay)
                self._store.record_problem(
                    self.server_id, name=self._name, phase="pending", version=None,
                    message=f"cannot read from the source, retrying: {exc}",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self.mark_dirty()
            except Exception:
                log.exception("listener.reconcile_failed", server_id=self.server_id, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self.mark_dirty()
            if not self._dirty.is_set():
                self._idle.set()

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
            await self._source.subscribe(service, self._on_instances)
            listed = tuple(await self._source.list_instances(service))
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
            self._store.remove(self.server_id)
            return
        try:
            versions = parse_versions(self.server_id, ns, versions_content)
            self._name = versions.name
            if not versions.enabled:
                await self._release(keep=(vkey,))
                await self._set_service(None)
                self._store.remove(
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
        )
        try:
            result = self._converter.convert(snapshot)
        except ConversionError as exc:
            self._problem(exc, version=version)
            return
        if result is None:
            return
        if isinstance(result, DisabledServer):
            self._store.remove(
                self.server_id, phase="disabled", name=result.name, version=result.version,
                message="disabled in its server spec",
            )
            return
        try:
            self._store.apply(result)
        except StateError as exc:
            self._store.record_problem(
                self.server_id, name=self._name, phase="error", version=version, message=str(exc),
                error={"server_id": self.server_id, "version": version, "file": "", "tool": "",
                       "path": "$", "reason": str(exc)},
            )

    def _problem(self, exc: ConversionError, *, version: str | None) -> None:
        log.warning("listener.rejected", server_id=self.server_id, version=version, error=exc.describe())
        self._store.record_problem(
            self.server_id, name=self._name, phase="error", version=version or exc.version or None,
            message=exc.describe(), error=exc.location(),
        )
