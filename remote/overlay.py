"""Servers that connect to the gateway themselves, merged into any source's instances; the source's mirrored back.

Without Nacos there is nowhere for a backend to announce itself, so the
gateway takes registrations directly (``POST /api/mcp/servers/connect``)
into a ``ServerRegister``.  Those instances must reach tools exactly like
Nacos instances do, through the one cascade that already exists (source
subscription → listener → converter → cluster state), not through a second
path with its own bugs.  ``RegisteringSource`` makes that happen: it wraps
any ``RemoteClient`` and adds the register's connected instances to the instance lists
and subscription deliveries of the matching service.  A connect or a
disconnect re-delivers the merged list to that service's subscribers at
once, from our own task, so the gateway reacts within milliseconds and
nothing polls.

Matching.  The register belongs to one namespace (the gateway's).  Its
names are Nacos' grouped service names: ``service`` in ``DEFAULT_GROUP``,
``group@@service`` otherwise (``register_name``), so a server whose
``serviceRef`` is ``{groupName: mcp-endpoints, serviceName: amap::1.0}``
gets the instances registered as ``mcp-endpoints@@amap::1.0``.

Collisions.  An instance is the same instance when its address (ip:port, the
id the cluster state keys instances by) or its id equals one already in the
list.  The wrapped source wins: it is the deployment's source of truth and
has its own health checks, and a disconnect must never hide an instance
that Nacos (or the files tree) still lists.  Among registered instances the
earliest registration of an address wins.

Mirroring.  The register holds every instance, so whatever the wrapped
source delivers for a watched service is mirrored into it as ``source``
instances (ids ``ip:port``, as clusters name them), and a service no
subscriber watches any more leaves it.  This is the one place where the
source's own list and the connected instances are still apart: once merged
and converted into a cluster, an instance no longer says where it came
from.  Mirroring notifies no register subscriber, so it never comes back
here as a re-delivery.  Services of another namespace are mirrored under
``namespace/group/service`` (``mirror_name``); nothing connects to those.

Semantics kept from ``RemoteClient``: callbacks get the complete list; a
subscriber is only called when its merged list changed; callbacks must only
enqueue (we may await them while the wrapped source holds its lock).
Register changes may come from any thread: they are handed to the event
loop that started this source.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import structlog

from mcpgw.registry.errors import SourceError
from mcpgw.registry.models import Instance
from mcpgw.remote.base import (
    DEFAULT_GROUP,
    DEFAULT_NAMESPACE,
    ConfigCallback,
    ConfigKey,
    InstancesCallback,
    ListingCallback,
    McpServerInfo,
    RemoteClient,
    ServiceInstance,
    ServiceKey,
    instance_problem,
    source_problems,
)

log = structlog.get_logger(__name__)


class RegisteredBackend(Protocol):
    """What the overlay reads of one registered instance (``registry.models.Instance`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> float: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...


class InstanceRegister(Protocol):
    """What the overlay needs of ``registry.server_register.ServerRegister``."""

    def connected(self, service_name: str) -> Sequence[RegisteredBackend]: ...

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]: ...

    def mirror_source(
        self, services: Mapping[str, Sequence[Instance]], removed: Collection[str] = ()
    ) -> Collection[str]: ...


def register_name(key: ServiceKey) -> str:
    """The register's name for a service: Nacos' grouped service name."""
    return key.service if key.group == DEFAULT_GROUP else f"{key.group}@@{key.service}"


def source_instance(instance: ServiceInstance) -> Instance:
    """A source instance as the register keeps it: id ``ip:port`` as in clusters, https when it says so."""
    return Instance(
        id=instance.address,
        host=instance.ip,
        port=instance.port,
        weight=instance.weight,
        healthy=instance.healthy,
        enabled=instance.enabled,
        scheme="https" if instance.metadata.get("protocol") == "https" else "http",
        metadata=MappingProxyType(dict(instance.metadata)),
    )


def merge_instances(
    inner: Sequence[ServiceInstance], registered: Sequence[RegisteredBackend], service_name: str
) -> tuple[ServiceInstance, ...]:
    """The wrapped source's instances, then the registered ones it does not already have (see the docstring)."""
    taken: set[str] = {i.address for i in inner} | {i.instance_id for i in inner if i.instance_id}
    merged = list(inner)
    for backend in registered:
        address = f"{backend.host}:{backend.port}"
        if address in taken or backend.id in taken:
            continue
        taken |= {address, backend.id}
        merged.append(
            ServiceInstance(
                ip=backend.host,
                port=backend.port,
                weight=backend.weight,
                healthy=backend.healthy,
                enabled=backend.enabled,
                ephemeral=True,
                service_name=service_name,
                instance_id=backend.id,
                metadata=MappingProxyType(dict(backend.metadata)),
            )
        )
    return tuple(merged)


@dataclass(eq=False)
class _Subscription:
    key: ServiceKey
    callback: InstancesCallback
    last: tuple[ServiceInstance, ...] | None = None


class RegisteringSource:
    """A ``RemoteClient`` over ``inner`` with the register's connected instances added (see the docstring)."""

    def __init__(self, inner: RemoteClient, register: InstanceRegister, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._inner = inner
        self._register = register
        self._namespace = namespace or DEFAULT_NAMESPACE
        # By key, then callback; and the keys by register name. Both are looked up per delivery and per
        # register change: at 10,000 services a scan of every subscription made a sync ~8x slower.
        self._subscriptions: dict[ServiceKey, dict[InstancesCallback, _Subscription]] = {}
        self._keys_by_name: dict[str, set[ServiceKey]] = {}
        self._inner_callbacks: dict[_Subscription, InstancesCallback] = {}
        self._inner_lists: dict[ServiceKey, tuple[ServiceInstance, ...]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._delivered = asyncio.Event()
        self._delivered.set()
        self._deliver_lock = asyncio.Lock()
        self._drain_task: asyncio.Task[None] | None = None
        self._stop_watching: Callable[[], None] | None = None

    @property
    def inner(self) -> RemoteClient:
        return self._inner

    def problems(self) -> dict[str, str]:
        """The wrapped source's problems (connect API requests are refused at the door instead)."""
        return source_problems(self._inner)

    @property
    def namespace(self) -> str:
        return self._namespace

    def name_of(self, key: ServiceKey) -> str | None:
        """The register name whose instances ``key`` gets, or ``None`` for another namespace."""
        return register_name(key) if key.namespace == self._namespace else None

    def mirror_name(self, key: ServiceKey) -> str:
        """The register name ``key``'s source instances are mirrored under."""
        return self.name_of(key) or str(key)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._inner.start()
        if self._drain_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._dirty.clear()
        self._delivered.set()
        self._drain_task = asyncio.create_task(self._drain(), name="registering-source-drain")
        self._stop_watching = self._register.subscribe(self._on_register_change)

    async def stop(self) -> None:
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        if self._drain_task is not None:
            self._queue.put_nowait(None)
            await self._drain_task
            self._drain_task = None
        self._loop = None
        self._subscriptions.clear()
        self._keys_by_name.clear()
        self._inner_callbacks.clear()
        self._register.mirror_source({}, removed=[self.mirror_name(key) for key in self._inner_lists])
        self._inner_lists.clear()
        await self._inner.stop()

    async def wait_delivered(self) -> None:
        """Wait until every register change seen so far has been delivered to the subscribers."""
        await self._delivered.wait()

    # ------------------------------------------------------------------ delegated as is

    async def list_mcp_servers(self, namespace: str = DEFAULT_NAMESPACE) -> list[McpServerInfo]:
        return await self._inner.list_mcp_servers(namespace)

    async def get_config(self, key: ConfigKey) -> str | None:
        return await self._inner.get_config(key)

    async def listen_config(self, key: ConfigKey, callback: ConfigCallback) -> None:
        await self._inner.listen_config(key, callback)

    async def stop_listening(self, key: ConfigKey, callback: ConfigCallback) -> None:
        await self._inner.stop_listening(key, callback)

    async def watch_listing(self, callback: ListingCallback) -> None:
        await self._inner.watch_listing(callback)

    # ------------------------------------------------------------------ instances, merged

    async def list_instances(self, key: ServiceKey) -> list[ServiceInstance]:
        inner = tuple(await self._inner.list_instances(key))
        if key in self._subscriptions:
            self._learned(key, inner)
        return list(self._merged(key, inner))

    async def subscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        if self._current(key, callback) is not None:
            return
        subscription = _Subscription(key, callback)

        async def from_inner(_key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
            if self._current(key, callback) is not subscription:
                return  # a delivery that raced unsubscribe
            self._learned(key, tuple(instances))
            await self._deliver(subscription)

        if key not in self._subscriptions:
            self._keys_by_name.setdefault(self.mirror_name(key), set()).add(key)
        self._subscriptions.setdefault(key, {})[callback] = subscription
        self._inner_callbacks[subscription] = from_inner
        try:
            await self._inner.subscribe(key, from_inner)
        except BaseException:
            self._forget(subscription)
            raise

    async def unsubscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        subscription = self._current(key, callback)
        if subscription is None:
            return
        inner_callback = self._inner_callbacks[subscription]
        self._forget(subscription)
        await self._inner.unsubscribe(key, inner_callback)

    def _current(self, key: ServiceKey, callback: InstancesCallback) -> _Subscription | None:
        return self._subscriptions.get(key, {}).get(callback)

    def _forget(self, subscription: _Subscription) -> None:
        key = subscription.key
        self._inner_callbacks.pop(subscription, None)
        callbacks = self._subscriptions.get(key, {})
        if callbacks.get(subscription.callback) is subscription:
            del callbacks[subscription.callback]
        if callbacks:
            return
        self._subscriptions.pop(key, None)
        name = self.mirror_name(key)
        keys = self._keys_by_name.get(name, set())
        keys.discard(key)
        if not keys:
            self._keys_by_name.pop(name, None)
        if key in self._inner_lists:
            del self._inner_lists[key]
            self._register.mirror_source({}, removed=[name])

    def _learned(self, key: ServiceKey, inner: tuple[ServiceInstance, ...]) -> None:
        """Keep the wrapped source's newest list of ``key`` and mirror it into the register when it changed."""
        if self._inner_lists.get(key) == inner:
            return
        self._inner_lists[key] = inner
        # An instance no cluster can use (bad host, port or weight) is not mirrored either: the converter
        # drops it with its reason, and the register's answers (GET /api/mcp/servers) must stay JSON.
        usable = [source_instance(i) for i in inner if instance_problem(i.ip, i.port, i.weight) is None]
        self._register.mirror_source({self.mirror_name(key): usable})

    def _merged(self, key: ServiceKey, inner: Sequence[ServiceInstance]) -> tuple[ServiceInstance, ...]:
        name = self.name_of(key)
        if name is None:
            return tuple(inner)
        return merge_instances(inner, self._register.connected(name), name)

    async def _deliver(self, subscription: _Subscription) -> None:
        # One delivery at a time, each computed from the newest data, so the last call a subscriber gets
        # is always the current merged list whichever path (inner push or register change) came last.
        async with self._deliver_lock:
            if self._current(subscription.key, subscription.callback) is not subscription:
                return
            merged = self._merged(subscription.key, self._inner_lists.get(subscription.key, ()))
            if merged == subscription.last:
                return
            subscription.last = merged
            try:
                await subscription.callback(subscription.key, merged)
            except Exception:
                log.exception("overlay.subscriber_failed", service=str(subscription.key))

    # ------------------------------------------------------------------ register changes

    def _on_register_change(self, name: str) -> None:
        """Called by the register, after its change, in whichever thread made it."""
        loop = self._loop
        if loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Marked at once, so a caller that awaits ``wait_delivered`` next cannot miss its own change.
            self._mark_dirty(name)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is left to deliver to
                loop.call_soon_threadsafe(self._mark_dirty, name)

    def _mark_dirty(self, name: str) -> None:
        if name not in self._dirty:
            self._dirty.add(name)
            self._delivered.clear()
            self._queue.put_nowait(name)

    async def _drain(self) -> None:
        while (name := await self._queue.get()) is not None:
            self._dirty.discard(name)
            try:
                await self._redeliver(name)
            except Exception:
                log.exception("overlay.redelivery_failed", name=name)
            if not self._dirty:
                self._delivered.set()
        self._delivered.set()

    async def _redeliver(self, name: str) -> None:
        keys = [key for key in self._keys_by_name.get(name, ()) if self.name_of(key) == name]
        for subscription in [s for key in keys for s in self._subscriptions.get(key, {}).values()]:
            if subscription.key in self._inner_lists or await self._learn_inner(subscription.key):
                await self._deliver(subscription)

    async def _learn_inner(self, key: ServiceKey) -> bool:
        """Read the wrapped source's list when nothing has told us yet (our task: no source lock is held).

        On failure the re-delivery is skipped rather than sent without the source's instances; the next
        push or register change delivers again.
        """
        try:
            listed = tuple(await self._inner.list_instances(key))
        except SourceError as exc:
            log.warning("overlay.inner_list_failed", service=str(key), error=str(exc))
            return False
        if key not in self._subscriptions:
            return False  # unsubscribed meanwhile: nothing to deliver, nothing to keep mirrored
        self._learned(key, listed)
        return True
