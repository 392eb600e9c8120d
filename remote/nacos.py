"""The real configuration source: Nacos, through nacos-sdk-python 3.x and the Nacos 3 admin API.

The SDK does the protocol work (gRPC connection, md5-based config listening,
naming pushes, re-registration of our own instances), but it has sharp edges
that the control plane must never feel.  This module is where each of them
is filed down, so the rest of mcpgw sees only the ``RemoteClient`` contract:

- **Callbacks only enqueue.**  The SDK awaits listener callbacks while it
  holds its own locks; calling back into it from there deadlocks.  Every SDK
  callback here only marks its key dirty on one ``asyncio.Queue``; our own
  drain task does the work and calls the user's callbacks, never under an
  SDK lock.
- **Level-triggered delivery.**  The content an SDK callback carries is a
  trigger, not the truth: it can be older than what our resync already
  read, and the SDK forgets a push that lands while it refreshes the same
  key.  The drain task re-reads a dirty key itself (configs from the server,
  instance lists from the SDK's cache, which only moves forward by
  ``lastRefTime``), one read at a time, so a delivery is never older than
  the one before it.  Bursts coalesce: a key is queued once until read.
- **Read, then listen, then de-duplicate by content.**  Adding a listener
  gives no initial event.  Every (key, callback) pair remembers the last
  content it was given, starting from the content read when it started
  listening; a callback is only called with content different from that.
  A deleted config is delivered as ``""``, as Nacos does.
- **Empty instance lists are delivered.**  By default the SDK drops a push
  whose host list is empty, so a real scale-to-zero never arrives.  We set
  ``update_cache_when_empty=True``: the last deregistration reaches the
  callback as ``()``.  Whether an empty list may empty a healthy cluster is
  the adapter's decision (ARCHITECTURE §6.5), not the source's.
- **Our own resync on reconnect.**  The SDK re-subscribes services only on a
  30-second redo tick.  We listen to the SDK's connection events: when a
  connection is replaced, we re-register our own instances at once, renew
  the subscriptions, and mark every watched config and service of that
  namespace dirty; only what changed is delivered.
- **Explicit directories.**  The SDK writes caches and logs under ``~`` by
  default and reads ``*_failover`` files from its cache first: ``cache_dir``
  and ``log_dir`` are mandatory here.  Its disk cache is not loaded at start
  (stale data would shadow the server); the last-known-good state lives in
  the registry, not in the SDK.  Its logs go at WARNING level because at
  INFO it writes config contents and access tokens (at ERROR it writes a
  failed request with its access token: a filter redacts that).
- **One SDK client pair per namespace**, created lazily: a server may
  reference a service in another namespace.
- **Listing** goes through ``GET /nacos/v3/admin/ai/mcp/list`` (all pages),
  parsed with our own models, with a token from ``POST /nacos/v3/auth/user/login``
  (``/nacos/v1/auth/login`` on Nacos 2.x) when credentials are given.  Where
  that API does not exist (Nacos 2.x, a Nacos 3 with its AI module off) the
  versions files are searched instead (``remote.nacos_listing``).  Which way is
  decided once per source, by the first listing (the gateway's first discovery
  pass, at start): the APIs are probed in order, the first that does not answer
  404 or 410 is used from then on, and the choice is logged
  (``nacos.listing_mode``) and shown by ``listing_status()`` (/admin/state).
  Nacos pushes nothing when the listing changes, so ``watch_listing`` polls it
  (``listing_poll_interval``, whichever the mode) and calls back only on a
  difference, and after every reconnect.
- **Errors are ours.**  SDK and HTTP failures become ``SourceUnavailable``,
  ``SourceAuthError`` or ``SourceNotFound`` with a sentence naming the server
  and the user, never the password or token.  ``start`` fails within
  ``connect_timeout`` when the server is unreachable or the credentials are
  wrong, instead of the SDK's silent background reconnect.

Limits: the reconnect listener is attached to the SDK's first config
connection only (the SDK opens another per 3000 watched configs of a
namespace); watches beyond that still recover through the SDK's own md5
resync.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.warnings import PydanticDeprecatedSince20

from mcpgw.registry.errors import SourceAuthError, SourceError, SourceNotFound, SourceUnavailable
from mcpgw.remote.base import (
    DEFAULT_NAMESPACE,
    ConfigCallback,
    ConfigKey,
    InstancesCallback,
    ListingCallback,
    McpServerInfo,
    ServiceInstance,
    ServiceKey,
    instance_problem,
)
from mcpgw.remote.jsondoc import JsonDocumentError, has_lone_surrogate, load_json
from mcpgw.remote.nacos_listing import LISTING_APIS, MCP_ADMIN, ListingApi, ListingMode, VersionsSearch, listing_params

with warnings.catch_warnings():
    # nacos-sdk-python 3.2 still declares a pydantic-v1 ``class Config``; the warning is not ours to act on.
    warnings.filterwarnings("ignore", category=PydanticDeprecatedSince20)
    from v2.nacos import (
        ClientConfigBuilder,
        ConfigParam,
        DeregisterInstanceParam,
        ListInstanceParam,
        NacosConfigService,
        NacosException,
        NacosNamingService,
        RegisterInstanceParam,
        SubscribeServiceParam,
    )
    from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2 import Payload

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8848
GRPC_PORT_OFFSET = 1000
_SDK_LOGGERS = ("config", "naming")  # the SDK's module loggers (Constants.CONFIG_MODULE / NAMING_MODULE)
_NO_RIGHT = 403
_STOP_GRACE = 1.0
_NOT_FOUND_CODES = (300, 404)
_INVALID_PARAM_CODES = (400, -400)
_SHOWN_PROBLEMS = 100


class _ExpectedSdkNoise(logging.Filter):
    """Drops the SDK's log records about conditions that are normal for us.

    - ``File not found: …_failover``: the SDK looks for a failover file before
      every config read and warns when there is none, which is always so here
      (one WARNING per read buried the warnings that matter);
    - ``Error [300]: config data not exist``: logged as ERROR for every read
      of an absent config, which ``get_config`` answers with ``None`` (a
      deleted server's versions file, say).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("File not found: ") and message.endswith("_failover"):
            return False
        return not ("Error [300]" in message and "config data not exist" in message)


_SDK_NOISE = _ExpectedSdkNoise()

_SECRET_HEADER = re.compile(
    r"""(['"]?(?:accessToken|Spas-Signature|Spas-SecurityToken)['"]?\s*[:=]\s*)['"][^'"]*['"]"""
)


class _RedactSdkSecrets(logging.Filter):
    """Keeps access tokens out of the SDK's log: a failed gRPC request is logged at ERROR with its headers
    (``send request fail, request=…{headers{'accessToken': '…'}``), seen with a real Nacos refusing one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_HEADER.sub(r"\1'***'", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_SDK_SECRETS = _RedactSdkSecrets()


def _quiet_expected_sdk_noise() -> None:
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        for sdk_filter in (_SDK_NOISE, _SDK_SECRETS):
            if sdk_filter not in logger.filters:
                logger.addFilter(sdk_filter)


# ---------------------------------------------------------------- answers of the admin HTTP API


class _LoginAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    accessToken: str
    tokenTtl: int = 18000


class _VersionDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = ""


class _McpListItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    protocol: str | None = None
    frontProtocol: str | None = None
    enabled: bool = True
    version: str | None = None
    versionDetail: _VersionDetail | None = None
    latestPublishedVersion: str | None = None


class _McpPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    totalCount: int = 0
    pageNumber: int = 1
    pagesAvailable: int = 0
    pageItems: list[Any] = []
    """Checked one by one (``_McpListItem``): one malformed entry is dropped, not the whole listing."""


class _McpListAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int = 0
    message: str | None = None
    data: _McpPage | None = None


# ---------------------------------------------------------------- events crossing from SDK callbacks to our task


@dataclass(frozen=True, slots=True)
class _ConfigDirty:
    key: ConfigKey


@dataclass(frozen=True, slots=True)
class _ServiceDirty:
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class _Reconnected:
    namespace: str
    module: str


@dataclass(frozen=True, slots=True)
class _ListingChanged:
    pass


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


_Event = _ConfigDirty | _ServiceDirty | _Reconnected | _ListingChanged | _Stop


@dataclass(eq=False)
class _ConfigWatch:
    sdk_listener: Callable[[str, str, str, str], Awaitable[None]]
    last_seen: dict[ConfigCallback, str] = field(default_factory=dict)


@dataclass(eq=False)
class _ServiceWatch:
    sdk_callback: Callable[[list[Any]], Awaitable[None]]
    last_seen: dict[InstancesCallback, tuple[ServiceInstance, ...]] = field(default_factory=dict)


class _ReconnectListener:
    """Duck-types the SDK's ``ConnectionEventListener`` for one SDK rpc client.

    A reconnect is a connected event with a connection other than the last one seen.
    """

    def __init__(self, rpc_client: Any, on_reconnect: Callable[[], None]) -> None:
        self._rpc_client = rpc_client
        self._connection: Any = rpc_client.current_connection
        self._on_reconnect = on_reconnect

    async def on_connected(self) -> None:
        current = self._rpc_client.current_connection
        previous, self._connection = self._connection, current
        if previous is None or current is previous:
            return
        # The SDK abandons the old connection without ending its request generator, so grpc's task feeding
        # the dead stream waits forever; one more message makes it notice the stream is gone and finish.
        previous.queue.put_nowait(Payload())
        self._on_reconnect()

    async def on_disconnect(self) -> None:
        return None


def _config_rpcs(clients: _NamespaceClients) -> list[Any]:
    if clients.config is None:
        return []
    return list(clients.config.grpc_client_proxy.rpc_client_manager.get_all_client_entries().values())


def _naming_rpcs(clients: _NamespaceClients) -> list[Any]:
    return [clients.naming.grpc_client_proxy.rpc_client] if clients.naming is not None else []


def _rpc_running(rpc: Any) -> bool:
    try:
        return bool(rpc.is_running())
    except Exception:  # an SDK client being torn down: not connected
        return False


@dataclass(eq=False)
class _NamespaceClients:
    namespace: str
    config: Any = None
    naming: Any = None
    log_handlers: list[logging.Handler] = field(default_factory=list)


async def _finish(tasks: Iterable[asyncio.Task[Any]], grace: float) -> None:
    """Let tasks end on their own first: cancelling one in the middle of the SDK's cache-file write
    leaks the open file.  Whatever is still running after ``grace`` seconds is cancelled."""
    tasks = list(tasks)
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _split_address(address: str) -> tuple[str, int]:
    bare = address.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
    host, _, port = bare.partition(":")
    return host, int(port) if port else DEFAULT_PORT


def _to_instances(raw: Iterable[Any]) -> tuple[tuple[ServiceInstance, ...], tuple[str, ...]]:
    """The SDK's instances as ours, and why each unusable one (bad ip, port or weight) was dropped."""
    converted: list[ServiceInstance] = []
    dropped: list[str] = []
    for item in raw:
        problem = instance_problem(item.ip, item.port, item.weight)
        if problem is not None:
            dropped.append(f"instance {item.ip!r}:{item.port!r} dropped: {problem}")
            continue
        converted.append(
            ServiceInstance(
                ip=str(item.ip),
                port=int(item.port),
                weight=float(item.weight),
                healthy=bool(item.healthy),
                enabled=bool(item.enabled),
                ephemeral=bool(item.ephemeral),
                cluster_name=str(item.clusterName or "DEFAULT"),
                service_name=str(item.serviceName or ""),
                instance_id=str(item.instanceId or ""),
                metadata=MappingProxyType({str(k): str(v) for k, v in (item.metadata or {}).items()}),
            )
        )
    return tuple(sorted(converted, key=lambda i: (i.ip, i.port, i.cluster_name))), tuple(dropped)


_RELISTEN_AFTER_RECONNECT = (1.0, 2.0)
"""Seconds between the extra listens and re-reads once Nacos is ready again after a config reconnect: a
restarting Nacos accepts connections while it is still starting, and what it is told then may be lost."""


class NacosSource:
    """``RemoteClient`` over a Nacos 2.x/3.x server: Nacos' MCP listing on 3.0.1+, a search of the versions
    files where there is none."""

    def __init__(
        self,
        server_addr: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        username: str | None = None,
        password: str | None = None,
        cache_dir: Path,
        log_dir: Path,
        admin_base_url: str | None = None,
        list_page_size: int = 100,
        connect_timeout: float = 5.0,
        listing_poll_interval: float = 1.0,
        listing_apis: Sequence[ListingApi] = LISTING_APIS,
    ) -> None:
        self._server_addr = server_addr
        self._addresses = [a.strip() for a in server_addr.split(",") if a.strip()]
        if not self._addresses:
            raise SourceError("no Nacos server address given: pass host:port, e.g. 127.0.0.1:8848")
        self._namespace = namespace or DEFAULT_NAMESPACE
        self._username = username
        self._password = password
        self._cache_dir = cache_dir
        self._log_dir = log_dir
        host, port = _split_address(self._addresses[0])
        self._admin_base_url = (admin_base_url or f"http://{host}:{port}").rstrip("/")
        self._list_page_size = list_page_size
        self._connect_timeout = connect_timeout
        self._listing_poll_interval = listing_poll_interval
        if not listing_apis:
            raise SourceError("no listing API given to probe: pass at least one of remote.nacos_listing.LISTING_APIS")
        self._listing_apis = tuple(listing_apis)
        self._listing: ListingApi | None = None
        self._search: VersionsSearch | None = None
        self._listing_lock = asyncio.Lock()

        self._http: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._clients: dict[str, _NamespaceClients] = {}
        self._clients_lock = asyncio.Lock()
        self._watch_lock = asyncio.Lock()
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._config_watches: dict[ConfigKey, _ConfigWatch] = {}
        self._service_watches: dict[ServiceKey, _ServiceWatch] = {}
        self._last_read: dict[ConfigKey, str] = {}
        self._last_listed: dict[ServiceKey, tuple[ServiceInstance, ...]] = {}
        self._dirty_configs: set[ConfigKey] = set()
        self._dirty_services: set[ServiceKey] = set()
        self._listing_callbacks: list[ListingCallback] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._problems: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def _who(self) -> str:
        return f"user {self._username}" if self._username else "anonymous access"

    @property
    def watched_configs(self) -> frozenset[ConfigKey]:
        """The configs this source watches now (the SDK itself never tells the server it stopped listening)."""
        return frozenset(self._config_watches)

    async def start(self) -> None:
        if self._drain_task is not None:
            return
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._http = httpx.AsyncClient(base_url=self._admin_base_url, timeout=self._connect_timeout)
        self._stopping = False
        self._events = asyncio.Queue()
        self._drain_task = asyncio.create_task(self._drain(), name="nacos-source-drain")
        try:
            if self._username and self._password:
                await self._login()
            await self._probe_grpc()
            await self._clients_for(self._namespace)
        except BaseException:
            await self.stop()
            raise
        log.info("nacos.started", server=self._server_addr, namespace=self._namespace)

    async def stop(self) -> None:
        self._stopping = True
        if self._poll_task is not None:
            self._poll_task.cancel()
        self._events.put_nowait(_Stop())
        tasks = [t for t in (self._drain_task, self._poll_task, *self._side_tasks) if t is not None]
        await _finish(tasks, _STOP_GRACE)
        self._drain_task = self._poll_task = None
        self._side_tasks.clear()
        clients, self._clients = list(self._clients.values()), {}
        for ns_clients in clients:
            await self._shutdown_clients(ns_clients)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._config_watches.clear()
        self._service_watches.clear()
        self._listing_callbacks.clear()
        self._listing = self._search = None
        self._last_read.clear()
        self._last_listed.clear()
        self._dirty_configs.clear()
        self._dirty_services.clear()

    def _require_started(self) -> None:
        if self._drain_task is None:
            raise SourceError("the Nacos source is not started: call start() before using it")

    async def _probe_grpc(self) -> None:
        """Fail fast and clearly: the SDK itself would retry in the background forever."""
        failures = []
        for address in self._addresses:
            host, port = _split_address(address)
            grpc_port = port + GRPC_PORT_OFFSET
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, writer = await asyncio.open_connection(host, grpc_port)
                writer.close()
                await writer.wait_closed()
                return
            except TimeoutError:
                failures.append(f"{host}:{grpc_port} did not answer within {self._connect_timeout:g} s")
            except OSError as exc:
                failures.append(f"{host}:{grpc_port}: {exc.strerror or exc}")
        raise SourceUnavailable(
            f"cannot reach Nacos at {self._server_addr}: gRPC port {'; '.join(failures)}. "
            "Check the address, that Nacos 2.x/3.x is running, and that its gRPC port (HTTP port + 1000) is open."
        )

    async def _clients_for(self, namespace: str) -> _NamespaceClients:
        self._require_started()
        existing = self._clients.get(namespace)
        if existing is not None:
            return existing
        async with self._clients_lock:
            existing = self._clients.get(namespace)
            if existing is not None:
                return existing
            created = await self._create_clients(namespace)
            self._clients[namespace] = created
            return created

    def _client_config(self, namespace: str) -> Any:
        builder = (
            ClientConfigBuilder()
            .server_address(self._server_addr)
            .namespace_id(namespace)
            .cache_dir(str(self._cache_dir))
            .log_dir(str(self._log_dir))
            .log_level(logging.WARNING)
            .load_cache_at_start(False)
        )
        if self._username and self._password:
            builder = builder.username(self._username).password(self._password)
        config = builder.build()
        config.set_update_cache_when_empty(True)  # see the module docstring: scale-to-zero is delivered
        return config

    async def _create_clients(self, namespace: str) -> _NamespaceClients:
        before = {name: list(logging.getLogger(name).handlers) for name in _SDK_LOGGERS}
        _quiet_expected_sdk_noise()
        clients = _NamespaceClients(namespace)
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    # The SDK's create_* helpers are inlined so that a failed start can still be shut down.
                    clients.config = NacosConfigService(self._client_config(namespace))
                    clients.naming = NacosNamingService(self._client_config(namespace))
                    await clients.config.grpc_client_proxy.start()
                    await clients.naming.grpc_client_proxy.start()
                if not (await clients.config.server_health() and clients.naming.grpc_client_proxy.server_health()):
                    raise SourceUnavailable(
                        f"cannot reach Nacos at {self._server_addr}: the gRPC handshake did not complete. "
                        "Check that the address points at a Nacos 2.x/3.x server."
                    )
                await self._attach_reconnect_listeners(clients)
            finally:
                for name in _SDK_LOGGERS:
                    known = before[name]
                    clients.log_handlers += [h for h in logging.getLogger(name).handlers if h not in known]
        except BaseException as exc:
            await self._shutdown_clients(clients)
            if isinstance(exc, TimeoutError):
                raise SourceUnavailable(
                    f"cannot reach Nacos at {self._server_addr}: no gRPC connection for namespace {namespace} "
                    f"within {self._connect_timeout:g} s. Check that Nacos is healthy."
                ) from exc
            if isinstance(exc, NacosException):
                raise self._translate(exc, f"connect for namespace {namespace}") from exc
            raise
        return clients

    async def _attach_reconnect_listeners(self, clients: _NamespaceClients) -> None:
        namespace = clients.namespace
        for rpc in _config_rpcs(clients):
            await rpc.register_connection_listener(
                _ReconnectListener(rpc, lambda: self._events.put_nowait(_Reconnected(namespace, "config")))
            )
        naming_rpc = _naming_rpcs(clients)[0]
        await naming_rpc.register_connection_listener(
            _ReconnectListener(naming_rpc, lambda: self._events.put_nowait(_Reconnected(namespace, "naming")))
        )

    async def _shutdown_clients(self, clients: _NamespaceClients) -> None:
        """Stop every task the SDK started, promptly: its own shutdown leaves the naming redo task running
        and waits up to 5 s for the config listen loop to wake up."""
        if clients.config is not None:
            proxy = clients.config.grpc_client_proxy
            proxy.stop_event.set()
            proxy.execute_config_listen_channel.put_nowait(None)
            await _finish([proxy.listen_task], _STOP_GRACE)
            await proxy.rpc_client_manager.shutdown_all_clients()
        if clients.naming is not None:
            proxy = clients.naming.grpc_client_proxy
            redo = proxy.redo_service
            redo._stop_event.set()
            await redo.start_redo_task()
            await _finish([redo._listen_task], _STOP_GRACE)
            if proxy.rpc_client is not None:
                await proxy.rpc_client.shutdown()
            clients.naming.service_info_updater.stop()
        for handler in clients.log_handlers:
            for name in _SDK_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
        clients.log_handlers.clear()

    # ------------------------------------------------------------------ config

    async def get_config(self, key: ConfigKey) -> str | None:
        clients = await self._clients_for(key.namespace)
        try:
            content: str | None = await clients.config.get_config(ConfigParam(data_id=key.data_id, group=key.group))
        except NacosException as exc:
            raise self._translate(exc, f"read config {key}") from exc
        self._last_read[key] = content or ""
        return content or None

    async def listen_config(self, key: ConfigKey, callback: ConfigCallback) -> None:
        clients = await self._clients_for(key.namespace)
        baseline = self._last_read.pop(key, None)
        if baseline is None:
            await self.get_config(key)
            baseline = self._last_read.pop(key, "")
        async with self._watch_lock:
            watch = self._config_watches.get(key)
            if watch is None:
                watch = _ConfigWatch(sdk_listener=self._config_listener(key))
                self._config_watches[key] = watch
                try:
                    await clients.config.add_listener(key.data_id, key.group, watch.sdk_listener)
                except NacosException as exc:
                    del self._config_watches[key]
                    raise self._translate(exc, f"listen to config {key}") from exc
                # The SDK registers new listeners with the server on its next 5 s tick; wake it now.
                clients.config.grpc_client_proxy.execute_config_listen_channel.put_nowait(None)
            watch.last_seen[callback] = baseline

    def _config_listener(self, key: ConfigKey) -> Callable[[str, str, str, str], Awaitable[None]]:
        async def on_change(_tenant: str, _group: str, _data_id: str, _content: str) -> None:
            self._mark_config_dirty(key)

        return on_change

    async def stop_listening(self, key: ConfigKey, callback: ConfigCallback) -> None:
        async with self._watch_lock:
            watch = self._config_watches.get(key)
            if watch is None or watch.last_seen.pop(callback, None) is None or watch.last_seen:
                return
            del self._config_watches[key]
            clients = self._clients.get(key.namespace)
            if clients is not None:
                try:
                    await clients.config.remove_listener(key.data_id, key.group, watch.sdk_listener)
                except NacosException as exc:
                    raise self._translate(exc, f"stop listening to config {key}") from exc

    async def publish_config(self, key: ConfigKey, content: str) -> None:
        if not content.strip():
            raise SourceError(
                f"refusing to publish empty content to config {key}: Nacos treats empty content as deleted; "
                "use remove_config instead"
            )
        clients = await self._clients_for(key.namespace)
        try:
            ok = await clients.config.publish_config(
                ConfigParam(data_id=key.data_id, group=key.group, content=content, type="json")
            )
        except NacosException as exc:
            raise self._translate(exc, f"publish config {key}") from exc
        if not ok:
            raise SourceError(f"Nacos at {self._server_addr} did not accept config {key}; see its logs")

    async def remove_config(self, key: ConfigKey) -> None:
        clients = await self._clients_for(key.namespace)
        try:
            await clients.config.remove_config(ConfigParam(data_id=key.data_id, group=key.group))
        except NacosException as exc:
            raise self._translate(exc, f"remove config {key}") from exc

    # ------------------------------------------------------------------ naming

    async def list_instances(self, key: ServiceKey) -> list[ServiceInstance]:
        clients = await self._clients_for(key.namespace)
        param = ListInstanceParam(service_name=key.service, group_name=key.group, subscribe=False, healthy_only=None)
        try:
            found = self._usable_instances(key, await clients.naming.list_instances(param))
        except NacosException as exc:
            raise self._translate(exc, f"list instances of service {key}") from exc
        self._last_listed[key] = found
        return list(found)

    def _usable_instances(self, key: ServiceKey, raw: Iterable[Any]) -> tuple[ServiceInstance, ...]:
        instances, dropped = _to_instances(raw)
        where = f"instances of service {key}"
        if dropped:
            if self._problems.get(where) != "; ".join(dropped):
                log.warning("nacos.instances_dropped", service=str(key), dropped=list(dropped))
            self._problems[where] = "; ".join(dropped)
        else:
            self._problems.pop(where, None)
        return instances

    def connected(self) -> dict[str, bool]:
        """Whether every SDK gRPC client (config, naming; of every namespace in use) is connected now."""
        links: dict[str, bool] = {}
        for clients in self._clients.values():
            for module, rpcs in (("config", _config_rpcs(clients)), ("naming", _naming_rpcs(clients))):
                up = all(_rpc_running(rpc) for rpc in rpcs) if rpcs else False
                links[f"nacos/{module}"] = links.get(f"nacos/{module}", True) and up
        return links or {"nacos/config": False, "nacos/naming": False}

    def problems(self) -> dict[str, str]:
        """What Nacos sent that cannot be used (where → why): dropped instances and listing entries, and
        the versions files the latest config search found unusable (in the config-search listing mode)."""
        found = dict(self._problems)
        searched = self._search.problems if self._search is not None else {}
        for namespace in sorted(searched):
            for problem in searched[namespace]:
                found[problem.where] = f"{problem.path}: {problem.reason}"
        return found

    async def subscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        clients = await self._clients_for(key.namespace)
        baseline = self._last_listed.pop(key, None)
        if baseline is None:
            await self.list_instances(key)
            baseline = self._last_listed.pop(key, ())
        async with self._watch_lock:
            watch = self._service_watches.get(key)
            if watch is None:
                watch = _ServiceWatch(sdk_callback=self._instances_listener(key))
                self._service_watches[key] = watch
                param = SubscribeServiceParam(
                    service_name=key.service, group_name=key.group, subscribe_callback=watch.sdk_callback
                )
                try:
                    await clients.naming.subscribe(param)
                except NacosException as exc:
                    del self._service_watches[key]
                    raise self._translate(exc, f"subscribe to service {key}") from exc
            watch.last_seen[callback] = baseline

    def _instances_listener(self, key: ServiceKey) -> Callable[[list[Any]], Awaitable[None]]:
        async def on_instances(_instances: list[Any]) -> None:
            self._mark_service_dirty(key)

        return on_instances

    async def unsubscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        async with self._watch_lock:
            watch = self._service_watches.get(key)
            if watch is None or watch.last_seen.pop(callback, None) is None or watch.last_seen:
                return
            del self._service_watches[key]
            clients = self._clients.get(key.namespace)
            if clients is not None:
                param = SubscribeServiceParam(
                    service_name=key.service, group_name=key.group, subscribe_callback=watch.sdk_callback
                )
                try:
                    await clients.naming.unsubscribe(param)
                except NacosException as exc:
                    raise self._translate(exc, f"unsubscribe from service {key}") from exc

    async def register_instance(
        self,
        service_key: ServiceKey,
        ip: str,
        port: int,
        weight: float = 1.0,
        metadata: dict[str, str] | None = None,
        ephemeral: bool = True,
    ) -> None:
        """Register an instance; ephemeral ones live as long as this source's connection (and come back
        with it after a reconnect)."""
        clients = await self._clients_for(service_key.namespace)
        param = RegisterInstanceParam(
            service_name=service_key.service,
            group_name=service_key.group,
            ip=ip,
            port=port,
            weight=weight,
            metadata=dict(metadata or {}),
            ephemeral=ephemeral,
        )
        try:
            ok = await clients.naming.register_instance(param)
        except NacosException as exc:
            raise self._translate(exc, f"register {ip}:{port} in service {service_key}") from exc
        if not ok:
            raise SourceError(f"Nacos at {self._server_addr} did not register {ip}:{port} in {service_key}")

    async def deregister_instance(self, service_key: ServiceKey, ip: str, port: int, ephemeral: bool = True) -> None:
        clients = await self._clients_for(service_key.namespace)
        param = DeregisterInstanceParam(
            service_name=service_key.service, group_name=service_key.group, ip=ip, port=port, ephemeral=ephemeral
        )
        try:
            await clients.naming.deregister_instance(param)
        except NacosException as exc:
            raise self._translate(exc, f"deregister {ip}:{port} from service {service_key}") from exc

    # ------------------------------------------------------------------ listing (admin HTTP API)

    async def list_mcp_servers(self, namespace: str = DEFAULT_NAMESPACE) -> list[McpServerInfo]:
        self._require_started()
        await self._listing_api()
        if self._search is not None:
            return await self._search.list_servers(namespace)
        found: dict[str, McpServerInfo] = {}
        dropped: list[str] = []
        page_no = 1
        while True:
            page = await self._list_page(namespace, page_no)
            for item in self._listing_entries(page, page_no, dropped):
                # Pages can shift while we read them: keep the first sighting of each id.
                found.setdefault(
                    item.id,
                    McpServerInfo(
                        id=item.id,
                        name=item.name,
                        namespace=namespace,
                        protocol=item.protocol or "",
                        front_protocol=item.frontProtocol or "",
                        enabled=item.enabled,
                        version=item.latestPublishedVersion
                        or (item.versionDetail.version if item.versionDetail else "")
                        or item.version
                        or "",
                    ),
                )
            if not page.pageItems or page_no >= page.pagesAvailable:
                self._record_listing_problems(namespace, dropped)
                return list(found.values())
            page_no += 1

    @staticmethod
    def _listing_entries(page: _McpPage, page_no: int, dropped: list[str]) -> list[_McpListItem]:
        entries: list[_McpListItem] = []
        for index, raw in enumerate(page.pageItems):
            try:
                entry = _McpListItem.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"]) or "the entry"
                dropped.append(f"page {page_no} entry [{index}] dropped: {field}: {first['msg']}")
                continue
            if not entry.id.strip() or any(c in entry.id for c in "/\\\0") or has_lone_surrogate(entry.id):
                dropped.append(f"page {page_no} entry [{index}] dropped: the id {entry.id!r} cannot name configs")
                continue
            entries.append(entry)
        return entries

    def _record_listing_problems(self, namespace: str, dropped: list[str]) -> None:
        where = f"MCP server listing of namespace {namespace}"
        if dropped:
            if self._problems.get(where) != "; ".join(dropped):
                log.warning("nacos.listing_entries_dropped", namespace=namespace, dropped=dropped)
            self._problems[where] = "; ".join(dropped)
        else:
            self._problems.pop(where, None)

    async def _list_page(self, namespace: str, page_no: int) -> _McpPage:
        params = listing_params(MCP_ADMIN, namespace, page_no, self._list_page_size)
        response = await self._admin_get(MCP_ADMIN.path, params, f"list MCP servers of {namespace}")
        try:
            answer = _McpListAnswer.model_validate(load_json(response.text))
        except JsonDocumentError as exc:
            raise SourceError(
                f"Nacos at {self._admin_base_url} answered the MCP server listing with something unexpected: {exc}"
            ) from exc
        except ValidationError as exc:
            raise SourceError(
                f"Nacos at {self._admin_base_url} answered the MCP server listing with something unexpected: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
            ) from exc
        if answer.code != 0 or answer.data is None:
            raise SourceError(
                f"Nacos at {self._admin_base_url} refused to list MCP servers of namespace {namespace}: "
                f"code {answer.code}: {answer.message or 'no message'}"
            )
        return answer.data

    async def _listing_api(self) -> ListingApi:
        """The listing API of this Nacos: probed by the first listing, then kept for the life of the source."""
        if self._listing is None:
            async with self._listing_lock:
                if self._listing is None:
                    api = await self._probe_listing()
                    if api.mode != "mcp-admin":
                        self._search = VersionsSearch(
                            api, fetch=functools.partial(self.admin_request, "GET"), page_size=self._list_page_size,
                            where=f"Nacos at {self._admin_base_url}",
                        )
                    self._listing = api
        return self._listing

    async def _probe_listing(self) -> ListingApi:
        absent: list[str] = []
        for api in self._listing_apis:
            params = listing_params(api, self._namespace, 1, 1)
            response = await self.admin_request("GET", api.path, params, f"find out how to list MCP servers ({api})")
            if response.status_code in (404, 410):
                absent.append(f"{api} answered {response.status_code}")
                continue
            if response.status_code >= 400:
                raise SourceUnavailable(
                    f"Nacos at {self._admin_base_url} failed to answer {api} (HTTP {response.status_code}: "
                    f"{response.text[:200]}) when asked how to list MCP servers; discovery retries"
                )
            log.info("nacos.listing_mode", server=self._server_addr, admin=self._admin_base_url, mode=api.mode,
                     api=str(api), absent=absent)
            return api
        raise SourceNotFound(
            f"Nacos at {self._admin_base_url} offers no way to list MCP servers: {'; '.join(absent)}. mcpgw needs "
            "Nacos' MCP listing (Nacos 3.0.1 or later, its AI module on) or a config search to find the versions "
            "files (/nacos/v3/admin/cs/config/list on Nacos 3, /nacos/v1/cs/configs on Nacos 2.x)"
        )

    @property
    def admin_base_url(self) -> str:
        return self._admin_base_url

    @property
    def listing_mode(self) -> ListingMode | None:
        """How this source lists MCP servers; ``None`` until its first listing has probed."""
        return self._listing.mode if self._listing is not None else None

    def listing_status(self) -> dict[str, Any]:
        """How this source lists MCP servers, for /admin/state: the mode (``None`` before the first listing),
        the API, and what was wrong with the versions files the latest search found."""
        problems = self._search.problems if self._search is not None else {}
        return {
            "server": self._admin_base_url,
            "mode": self.listing_mode,
            "api": str(self._listing) if self._listing is not None else None,
            "problems": [p.as_dict() for ns in sorted(problems) for p in problems[ns]][:_SHOWN_PROBLEMS],
        }

    async def admin_request(self, method: str, path: str, params: dict[str, str], action: str) -> httpx.Response:
        """One call to the Nacos admin HTTP API, with our access token (renewed once if refused).

        ``params`` go in the query for GET and DELETE and as a form body otherwise, as Nacos' admin
        controllers bind them.  Raises ``SourceUnavailable`` when Nacos cannot be reached and
        ``SourceAuthError`` when it refuses the user; any other answer is returned for the caller to read.
        """
        self._require_started()
        assert self._http is not None
        in_query = method.upper() in ("GET", "DELETE")
        for attempt in range(2):
            headers = {}
            if self._username and self._password:
                headers["accessToken"] = await self._access_token(refresh=attempt > 0)
            try:
                response = await self._http.request(
                    method, path, params=params if in_query else None, data=None if in_query else params,
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                raise SourceUnavailable(
                    f"cannot reach Nacos at {self._admin_base_url} to {action}: {type(exc).__name__}: {exc}"
                ) from exc
            if response.status_code in (401, _NO_RIGHT) and attempt == 0 and self._username:
                continue  # the token may have expired: log in again once
            break
        if response.status_code in (401, _NO_RIGHT):
            raise SourceAuthError(
                f"Nacos at {self._admin_base_url} denied {self._who} permission to {action} "
                f"(HTTP {response.status_code}). Give the user access to the namespace, or check the credentials."
            )
        return response

    async def _admin_get(self, path: str, params: dict[str, str], action: str) -> httpx.Response:
        response = await self.admin_request("GET", path, params, action)
        if response.status_code == 404:
            raise SourceNotFound(
                f"Nacos at {self._admin_base_url} has no MCP registry API any more ({path} answered 404; it had one "
                "when this source first listed): restart mcpgw so that it probes the listing again"
            )
        if response.status_code >= 400:
            raise SourceUnavailable(f"Nacos at {self._admin_base_url} failed to {action}: HTTP {response.status_code}")
        return response

    async def _access_token(self, *, refresh: bool = False) -> str:
        if refresh or self._token is None or time.monotonic() >= self._token_expires:
            await self._login()
        assert self._token is not None
        return self._token

    async def _login(self) -> None:
        """Log in through Nacos 3's ``/v3/auth/user/login``, or 2.x's ``/v1/auth/login`` where that is absent.

        Nacos 3.1 answers a wrong password of a known user with a bare HTTP 500 (an unknown user gets
        403), so a 500 from the login itself is reported as rejected credentials, saying so.
        """
        assert self._http is not None
        form = {"username": self._username or "", "password": self._password or ""}
        try:
            response = await self._http.post("/nacos/v3/auth/user/login", data=form)
            if response.status_code == 404:
                response = await self._http.post("/nacos/v1/auth/login", data=form)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(
                f"cannot reach Nacos at {self._admin_base_url}: {type(exc).__name__}: {exc}. "
                "Check the address and that Nacos is running."
            ) from exc
        if response.status_code in (401, _NO_RIGHT, 500):
            how = " (it answered HTTP 500, as Nacos 3 does for a wrong password)" if response.status_code == 500 else ""
            raise SourceAuthError(
                f"Nacos at {self._admin_base_url} rejected the credentials for user {self._username}: "
                f"check the username and password{how}."
            )
        if response.status_code >= 400:
            raise SourceUnavailable(
                f"Nacos at {self._admin_base_url} failed the login of user {self._username}: "
                f"HTTP {response.status_code}"
            )
        try:
            answer = _LoginAnswer.model_validate_json(response.content)
        except ValidationError as exc:
            raise SourceAuthError(
                f"Nacos at {self._admin_base_url} answered the login of user {self._username} without an access "
                "token: is authentication configured on the server?"
            ) from exc
        self._token = answer.accessToken
        # Renew a little early so a request never carries a token that expires in flight.
        self._token_expires = time.monotonic() + max(answer.tokenTtl - 30, 1)

    async def watch_listing(self, callback: ListingCallback) -> None:
        """Nacos pushes nothing when servers come and go: poll the listing, call back on a difference.

        Differences are relative to the listing as it was when the first watch was added.
        """
        self._require_started()
        self._listing_callbacks.append(callback)
        if self._poll_task is None:
            baseline = await self._listing_fingerprint()
            self._poll_task = asyncio.create_task(self._poll_listing(baseline), name="nacos-listing-poll")

    async def _listing_fingerprint(self) -> frozenset[McpServerInfo] | None:
        try:
            return frozenset(await self.list_mcp_servers(self._namespace))
        except SourceError as exc:
            log.warning("nacos.listing_poll_failed", error=str(exc))
            return None

    async def _poll_listing(self, previous: frozenset[McpServerInfo] | None) -> None:
        while True:
            await asyncio.sleep(self._listing_poll_interval)
            current = await self._listing_fingerprint()
            if current is None:
                continue
            if previous is not None and current != previous:
                self._events.put_nowait(_ListingChanged())
            previous = current

    # ------------------------------------------------------------------ our task: deliveries and resyncs

    async def _drain(self) -> None:
        while not isinstance(event := await self._events.get(), _Stop):
            try:
                await self._dispatch(event)
            except Exception:
                log.exception("nacos.dispatch_failed", event=type(event).__name__)

    def _mark_config_dirty(self, key: ConfigKey) -> None:
        if key not in self._dirty_configs:
            self._dirty_configs.add(key)
            self._events.put_nowait(_ConfigDirty(key))

    def _mark_service_dirty(self, key: ServiceKey) -> None:
        if key not in self._dirty_services:
            self._dirty_services.add(key)
            self._events.put_nowait(_ServiceDirty(key))

    async def _dispatch(self, event: _Event) -> None:
        match event:
            case _ConfigDirty(key):
                await self._deliver_config(key)
            case _ServiceDirty(service_key):
                await self._deliver_instances(service_key)
            case _ListingChanged():
                for listing_callback in list(self._listing_callbacks):
                    await self._call(listing_callback(), "listing", self._namespace)
            case _Reconnected(namespace, module):
                log.info("nacos.reconnected", namespace=namespace, module=module)
                self._spawn(self._resync(namespace, module))

    async def _deliver_config(self, key: ConfigKey) -> None:
        """Deliver the config as it is now, read by this one task, so a delivery is never older than the last.

        The SDK's callback content is only a trigger: it can be older than a read we already delivered (our
        resync and the SDK's refresh race), and the SDK forgets a push that lands while it is refreshing the
        same key.  A read made after the callback sees that change anyway.
        """
        self._dirty_configs.discard(key)
        watch = self._config_watches.get(key)
        clients = self._clients.get(key.namespace)
        if watch is None or clients is None:
            return
        try:
            read: str | None = await clients.config.get_config(ConfigParam(data_id=key.data_id, group=key.group))
        except NacosException as exc:
            log.warning("nacos.refresh_failed", key=str(key), error=str(exc))
            return
        content = read or ""
        for callback in list(watch.last_seen):
            if watch.last_seen.get(callback, content) != content:
                watch.last_seen[callback] = content
                await self._call(callback(key, content), "config", str(key))

    async def _deliver_instances(self, key: ServiceKey) -> None:
        """Deliver the SDK's cached list, which only ever moves forward (it drops pushes with an older
        ``lastRefTime``)."""
        self._dirty_services.discard(key)
        watch = self._service_watches.get(key)
        clients = self._clients.get(key.namespace)
        if watch is None or clients is None:
            return
        param = ListInstanceParam(service_name=key.service, group_name=key.group, subscribe=True, healthy_only=None)
        try:
            instances = self._usable_instances(key, await clients.naming.list_instances(param))
        except NacosException as exc:
            log.warning("nacos.refresh_failed", key=str(key), error=str(exc))
            return
        for callback in list(watch.last_seen):
            if watch.last_seen.get(callback, instances) != instances:
                watch.last_seen[callback] = instances
                await self._call(callback(key, instances), "instances", str(key))

    @staticmethod
    async def _call(pending: Awaitable[None], kind: str, key: str) -> None:
        try:
            await pending
        except Exception:
            log.exception("nacos.callback_failed", kind=kind, key=key)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _resync(self, namespace: str, module: str) -> None:
        """Re-read what is watched in the namespace; the drain task delivers only differences."""
        clients = self._clients.get(namespace)
        if clients is None:
            return
        if module == "config":
            await self._until_serving()
            for delay in (0.0, *_RELISTEN_AFTER_RECONNECT):
                if delay:
                    await asyncio.sleep(delay)
                if self._stopping:
                    return
                self._relisten(clients)
                for key in [k for k in self._config_watches if k.namespace == namespace]:
                    self._mark_config_dirty(key)
                self._events.put_nowait(_ListingChanged())
            return
        # Re-register our own instances before reading, so that they do not seem to flap away and back,
        # and let the SDK renew the rest now rather than on its 30 s redo tick.
        redo = clients.naming.grpc_client_proxy.redo_service
        await redo.redo_for_instances()
        await redo.start_redo_task()
        for service_key in [k for k in self._service_watches if k.namespace == namespace]:
            if self._stopping:
                return
            param = ListInstanceParam(
                service_name=service_key.service, group_name=service_key.group, subscribe=False, healthy_only=None
            )
            try:
                # Renews the subscription and refreshes the SDK's cache, which the delivery then reads.
                await clients.naming.list_instances(param)
            except NacosException as exc:
                log.warning("nacos.resync_failed", key=str(service_key), error=str(exc))
                continue
            self._mark_service_dirty(service_key)

    async def _until_serving(self, within: float = 120.0) -> None:
        """Return once Nacos says it is ready (its readiness API answers 200), or after ``within`` seconds.

        A restarting Nacos 3 opens its gRPC port seconds before it has started: the SDK reconnects at
        once, but what it registers then may be forgotten, so the listens are repeated from here on.
        A server without the readiness API (404) is taken as ready.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self._stopping and self._http is not None and loop.time() < deadline:
            try:
                response = await self._http.get("/nacos/v3/admin/core/state/readiness")
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code in (200, 404):
                return
            await asyncio.sleep(0.25)

    @staticmethod
    def _relisten(clients: _NamespaceClients) -> None:
        """Make the SDK send its listen request for every config again, now; revive its listen loop.

        Two things, both seen against a restarting Nacos 3.1, stop pushes for good otherwise:
        - the SDK's listen loop is one task that ends on ``CancelledError``, which grpc raises in it when
          the connection it was listening on is closed by a reconnect; then nothing is ever listened again;
        - a Nacos that is still starting when the SDK reconnects (its gRPC port opens seconds before the
          rest) forgets the listeners it is told of, and the SDK never repeats a listen whose md5 answered
          as unchanged.
        Marking every config as not in sync and waking the (running) listen loop re-registers them.
        """
        proxy = clients.config.grpc_client_proxy
        if proxy.listen_task.done() and not proxy.stop_event.is_set():
            log.warning("nacos.sdk_listen_loop_revived", namespace=clients.namespace)
            proxy.listen_task = asyncio.create_task(
                proxy._execute_config_listen_task(), name=f"nacos-sdk-config-listen-{clients.namespace}"
            )
        for cache_data in list(proxy.config_subscribe_manager.subscribe_cache_map.values()):
            cache_data.is_sync_with_server = False
        proxy.execute_config_listen_channel.put_nowait(None)

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: NacosException, action: str) -> SourceError:
        code = getattr(exc, "error_code", None)
        message = str(getattr(exc, "message", "") or exc)
        if code == _NO_RIGHT or "token invalid" in message or "user not found" in message:
            return SourceAuthError(
                f"Nacos at {self._server_addr} denied {self._who} permission to {action}: {message}. "
                "Check the credentials and the user's permissions on the namespace."
            )
        if code in _NOT_FOUND_CODES:
            return SourceNotFound(f"Nacos at {self._server_addr} could not {action}: not found ({message})")
        if code in _INVALID_PARAM_CODES:
            return SourceError(f"Nacos at {self._server_addr} rejected the request to {action}: {message}")
        return SourceUnavailable(
            f"cannot reach Nacos at {self._server_addr} to {action}: {message}. The SDK keeps reconnecting; "
            "retry later."
        )
