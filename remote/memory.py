"""A configuration source held in memory: for tests, replay, and as the files source's state.

The control plane is tested against the same ``RemoteClient`` contract it
runs on in production, so this source keeps every Nacos semantic the
adapter relies on rather than being a bare dict: a deleted config is
delivered as ``""``, adding a listener gives no initial event, subscribers
get the complete instance list, unchanged content notifies nobody, and
notifications are delivered one at a time, in order, under a lock (which is
why callbacks must only enqueue).

One Nacos behaviour is kept on purpose because the "read, then listen"
pattern depends on it: the SDK registers a listener with the md5 of the
content it last returned, so a change that lands between ``get_config`` and
``listen_config`` is still delivered.  Here, a new listener receives the
current content if it differs from what the source last handed out for that
key (by a read or a notification); otherwise it receives nothing.  The same
holds for ``list_instances`` followed by ``subscribe``.

The MCP server listing is derived from the versions manifests
(``mcp-server-versions/{id}-mcp-versions.json``), or replaced wholesale with
``set_listing_override`` to simulate an admin API that disagrees with the
configs.  ``fail_next_get`` and ``fail_next_listing`` inject one-shot
failures; the ``*_calls`` counters let adapter tests assert how much it read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import structlog

from mcpgw.remote.base import (
    DEFAULT_NAMESPACE,
    VERSIONS_GROUP,
    ConfigCallback,
    ConfigKey,
    InstancesCallback,
    ListingCallback,
    McpServerInfo,
    ServiceInstance,
    ServiceKey,
)
from mcpgw.remote.jsondoc import load_json

log = structlog.get_logger(__name__)

VERSIONS_SUFFIX = "-mcp-versions.json"

_NO_CONFIGS: Mapping[ConfigKey, str | None] = MappingProxyType({})
_NO_SERVICES: Mapping[ServiceKey, Sequence[ServiceInstance] | None] = MappingProxyType({})


def is_versions_key(key: ConfigKey) -> bool:
    """Whether the config is an MCP server's versions manifest (what the listing is made of)."""
    return key.group == VERSIONS_GROUP and key.data_id.endswith(VERSIONS_SUFFIX)


def server_info_from_versions(key: ConfigKey, content: str) -> McpServerInfo:
    """The listing entry for one versions manifest.

    The id comes from the dataId, because that is where the manifest lives
    and what the listener will read; a manifest whose JSON does not parse is
    still listed (with an empty name) so the listener reports the error
    instead of the server silently disappearing.
    """
    server_id = key.data_id.removesuffix(VERSIONS_SUFFIX)
    try:
        doc = load_json(content)
    except ValueError:  # bad JSON, too deep, ...: the listener reports it for this server alone
        doc = None
    if not isinstance(doc, dict):
        return McpServerInfo(id=server_id, name="", namespace=key.namespace)
    return McpServerInfo(
        id=server_id,
        name=_text(doc.get("name")),
        namespace=key.namespace,
        protocol=_text(doc.get("protocol")),
        front_protocol=_text(doc.get("frontProtocol")),
        enabled=doc.get("enabled") is not False,
        version=_text(doc.get("latestPublishedVersion")),
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


class MemorySource:
    """A ``RemoteClient`` whose configs and instances live in dicts."""

    def __init__(
        self,
        configs: Mapping[ConfigKey, str] | None = None,
        services: Mapping[ServiceKey, Sequence[ServiceInstance]] | None = None,
    ) -> None:
        self._configs: dict[ConfigKey, str] = {k: v for k, v in (configs or {}).items() if v}
        self._services: dict[ServiceKey, tuple[ServiceInstance, ...]] = {
            k: tuple(v) for k, v in (services or {}).items()
        }
        self._config_listeners: dict[ConfigKey, list[ConfigCallback]] = {}
        self._subscribers: dict[ServiceKey, list[InstancesCallback]] = {}
        self._listing_watchers: list[ListingCallback] = []
        # What each key was last handed out as; see the module docstring.
        self._served_configs: dict[ConfigKey, str] = {}
        self._served_instances: dict[ServiceKey, tuple[ServiceInstance, ...]] = {}
        self._listing_override: list[McpServerInfo] | None = None
        self._get_failures: dict[ConfigKey, Exception] = {}
        self._listing_failure: Exception | None = None
        self._lock = asyncio.Lock()
        self.get_config_calls: Counter[ConfigKey] = Counter()
        self.list_instances_calls: Counter[ServiceKey] = Counter()
        self.list_mcp_servers_calls = 0

    # -- RemoteClient -------------------------------------------------------

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Forget every listener, subscriber and listing watcher; the data stays."""
        self._config_listeners.clear()
        self._subscribers.clear()
        self._listing_watchers.clear()

    async def list_mcp_servers(self, namespace: str = DEFAULT_NAMESPACE) -> list[McpServerInfo]:
        self.list_mcp_servers_calls += 1
        if self._listing_failure is not None:
            failure, self._listing_failure = self._listing_failure, None
            raise failure
        if self._listing_override is not None:
            return [info for info in self._listing_override if info.namespace == namespace]
        servers = [
            server_info_from_versions(key, content)
            for key, content in self._configs.items()
            if key.namespace == namespace and is_versions_key(key)
        ]
        return sorted(servers, key=lambda info: info.id)

    async def get_config(self, key: ConfigKey) -> str | None:
        self.get_config_calls[key] += 1
        failure = self._get_failures.pop(key, None)
        if failure is not None:
            raise failure
        content = self._configs.get(key)
        self._served_configs[key] = content or ""
        return content

    async def listen_config(self, key: ConfigKey, callback: ConfigCallback) -> None:
        async with self._lock:
            listeners = self._config_listeners.setdefault(key, [])
            if callback in listeners:
                return
            listeners.append(callback)
            current = self._configs.get(key, "")
            if key in self._served_configs and self._served_configs[key] != current:
                self._served_configs[key] = current
                await self._call_config_listener(callback, key, current)

    async def stop_listening(self, key: ConfigKey, callback: ConfigCallback) -> None:
        listeners = self._config_listeners.get(key, [])
        if callback in listeners:
            listeners.remove(callback)

    async def list_instances(self, key: ServiceKey) -> list[ServiceInstance]:
        self.list_instances_calls[key] += 1
        instances = self._services.get(key, ())
        self._served_instances[key] = instances
        return list(instances)

    async def subscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        async with self._lock:
            subscribers = self._subscribers.setdefault(key, [])
            if callback in subscribers:
                return
            subscribers.append(callback)
            current = self._services.get(key, ())
            if key in self._served_instances and self._served_instances[key] != current:
                self._served_instances[key] = current
                await self._call_subscriber(callback, key, current)

    async def unsubscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        subscribers = self._subscribers.get(key, [])
        if callback in subscribers:
            subscribers.remove(callback)

    async def watch_listing(self, callback: ListingCallback) -> None:
        if callback not in self._listing_watchers:
            self._listing_watchers.append(callback)

    # -- changing the data --------------------------------------------------

    async def put_config(self, key: ConfigKey, content: str) -> None:
        """Create or replace a config; empty content deletes it, as Nacos cannot hold empty configs."""
        await self.apply_changes(configs={key: content})

    async def delete_config(self, key: ConfigKey) -> None:
        """Delete a config; its listeners receive ``""``."""
        await self.apply_changes(configs={key: None})

    async def set_instances(self, key: ServiceKey, instances: Sequence[ServiceInstance]) -> None:
        """Replace the service's instances; subscribers receive the full list, even an empty one."""
        await self.apply_changes(services={key: instances})

    async def apply_tree(
        self,
        configs: Mapping[ConfigKey, str],
        services: Mapping[ServiceKey, Sequence[ServiceInstance]],
    ) -> None:
        """Make the whole source equal to the given state, notifying only what changed."""
        config_changes: dict[ConfigKey, str | None] = {key: None for key in self._configs}
        config_changes.update(configs)
        service_changes: dict[ServiceKey, Sequence[ServiceInstance] | None] = {
            key: None for key in self._services
        }
        service_changes.update(services)
        await self.apply_changes(configs=config_changes, services=service_changes)

    async def apply_changes(
        self,
        configs: Mapping[ConfigKey, str | None] = _NO_CONFIGS,
        services: Mapping[ServiceKey, Sequence[ServiceInstance] | None] = _NO_SERVICES,
    ) -> None:
        """Apply a batch of changes (``None`` deletes) and notify what changed.

        The whole batch is applied before the first notification, so a
        listener that reacts by reading sees the batch complete.  Config
        listeners come first, then subscribers, each in key order, then the
        listing watchers once if any versions manifest changed.
        """
        async with self._lock:
            changed_configs: list[tuple[ConfigKey, str]] = []
            for key in sorted(configs):
                content = configs[key] or ""
                if self._configs.get(key, "") == content:
                    continue
                if content:
                    self._configs[key] = content
                else:
                    del self._configs[key]
                changed_configs.append((key, content))
            changed_services: list[tuple[ServiceKey, tuple[ServiceInstance, ...]]] = []
            for service_key in sorted(services):
                given = services[service_key]
                instances = tuple(given or ())
                before = self._services.get(service_key, ())
                if given is None:
                    self._services.pop(service_key, None)
                else:
                    self._services[service_key] = instances
                if before != instances:
                    changed_services.append((service_key, instances))
            for key, content in changed_configs:
                await self._notify_config(key, content)
            for service_key, instances in changed_services:
                await self._notify_instances(service_key, instances)
            if any(is_versions_key(key) for key, _ in changed_configs):
                await self._notify_listing_unlocked()

    def set_listing_override(self, servers: list[McpServerInfo] | None) -> None:
        """Serve this listing instead of the derived one (``None`` = derived again).

        Watchers are not told; call ``notify_listing`` to simulate the push.
        """
        self._listing_override = None if servers is None else list(servers)

    async def notify_listing(self) -> None:
        """Tell the listing watchers that the set of servers may have changed."""
        async with self._lock:
            await self._notify_listing_unlocked()

    def fail_next_get(self, key: ConfigKey, exc: Exception) -> None:
        """Make the next ``get_config(key)`` raise ``exc`` (once)."""
        self._get_failures[key] = exc

    def fail_next_listing(self, exc: Exception) -> None:
        """Make the next ``list_mcp_servers`` raise ``exc`` (once)."""
        self._listing_failure = exc

    def configs(self) -> dict[ConfigKey, str]:
        """A copy of every config currently held."""
        return dict(self._configs)

    def services(self) -> dict[ServiceKey, tuple[ServiceInstance, ...]]:
        """A copy of every service's instances currently held."""
        return dict(self._services)

    def config_listeners(self) -> dict[ConfigKey, tuple[ConfigCallback, ...]]:
        """Who listens to which config right now (what a Nacos server's listener table holds)."""
        return {key: tuple(callbacks) for key, callbacks in self._config_listeners.items() if callbacks}

    def subscribers(self) -> dict[ServiceKey, tuple[InstancesCallback, ...]]:
        """Who is subscribed to which service's instances right now."""
        return {key: tuple(callbacks) for key, callbacks in self._subscribers.items() if callbacks}

    # -- notifying -----------------------------------------------------------

    async def _notify_config(self, key: ConfigKey, content: str) -> None:
        listeners = list(self._config_listeners.get(key, ()))
        if listeners:
            self._served_configs[key] = content
        for callback in listeners:
            await self._call_config_listener(callback, key, content)

    async def _notify_instances(self, key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        subscribers = list(self._subscribers.get(key, ()))
        if subscribers:
            self._served_instances[key] = instances
        for callback in subscribers:
            await self._call_subscriber(callback, key, instances)

    async def _notify_listing_unlocked(self) -> None:
        for callback in list(self._listing_watchers):
            try:
                await callback()
            except Exception:
                log.exception("source.listing_watcher_failed")

    @staticmethod
    async def _call_config_listener(callback: ConfigCallback, key: ConfigKey, content: str) -> None:
        # One failing listener must not starve the others of the change.
        try:
            await callback(key, content)
        except Exception:
            log.exception("source.config_listener_failed", key=str(key))

    @staticmethod
    async def _call_subscriber(
        callback: InstancesCallback, key: ServiceKey, instances: tuple[ServiceInstance, ...]
    ) -> None:
        try:
            await callback(key, instances)
        except Exception:
            log.exception("source.subscriber_failed", key=str(key))
