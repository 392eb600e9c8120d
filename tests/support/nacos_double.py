"""A Nacos server double that speaks the real wire protocol, for end-to-end tests.

No real Nacos can run where the tests run, and a fake at the Python level
would only test our assumptions about the SDK.  This double sits at the wire
instead: the real nacos-sdk-python connects to it over gRPC exactly as it
would to Nacos 3, so every SDK behaviour our ``remote.nacos`` has to cope
with (handshake, ability negotiation, md5-based batch listen, push-then-pull
config changes, naming pushes ordered by ``lastRefTime``, reconnects) is
exercised for real.

What it speaks:

- gRPC on ``http_port + 1000`` (the SDK derives it): ``/Request/request``
  (unary) and ``/BiRequestStream/requestBiStream`` (bidi), with the SDK's own
  generated ``Payload`` messages whose body is the JSON of a Nacos request or
  response named by ``metadata.type``.  Handshake: ``ServerCheckRequest`` ->
  connection id; ``ConnectionSetupRequest`` on the stream -> push
  ``SetupAckRequest{abilityTable}``.  A unary request from a connection that
  never set up its stream gets ``ErrorResponse`` 301, like Nacos.
- config: query (missing = resultCode 500 / errorCode 300), publish (with
  ``casMd5``), remove, batch listen by md5, ``ConfigChangeNotifyRequest``
  pushes to listening connections.
- naming: register / deregister (ephemeral instances belong to the
  connection and vanish with it, persistent ones stay), batch register,
  subscribe / unsubscribe, query, service list, ``NotifySubscriberRequest``
  pushes with a strictly increasing ``lastRefTime``.
- HTTP: login (``/nacos/v1/auth/login``, ``/nacos/v1/auth/users/login``), the
  Nacos 3 MCP admin API (list derived from the stored versions configs, and
  cheap create / update / delete that write the three configs; ``REF`` and
  ``DIRECT`` endpoint specifications as Nacos 3.1 stores them), and the config
  search: ``GET /nacos/v3/admin/cs/config/list`` (items without content),
  ``GET /nacos/v3/admin/cs/config`` (one config with its content) and
  ``GET /nacos/v1/cs/configs?search=…`` (items with content; 410 Gone unless
  ``v1_console_api``, as Nacos 3.1 answers by default).  Blur search is SQL
  ``LIKE`` as in Nacos: ``*`` any run, ``_`` any one character, case-sensitive;
  items come in dataId order when a dataId is matched, else in the order the
  configs were created.  Not spoken: the AI module's gRPC requests
  (``QueryMcpServerRequest``, ``ReleaseMcpServerRequest``,
  ``McpServerEndpointRequest``) that nacos-sdk-python's ``v2.nacos.ai`` and
  nacos-mcp-wrapper-python send.

Modules, fixed at construction as a Nacos' are at its start: ``mcp_listing=False``
is a Nacos 3 with its AI module off (``nacos.extension.ai.enabled=false``):
every MCP admin path answers Spring's 404 and only the config search lists
servers; ``v1_console_api=True`` is ``nacos.core.api.compatibility.console.enabled``.

Fault controls: ``stop`` / ``start`` / ``restart`` (same ports, stored data
kept, every connection dropped), ``drop_pushes``, ``delay_pushes``,
``require_auth``.  Tests change server state with the synchronous helpers
(``set_config``, ``add_instance``...) as another Nacos client would, and wait
on conditions with ``wait_for`` (no sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import uvicorn
from google.protobuf.any_pb2 import Any as AnyMessage
from pydantic.warnings import PydanticDeprecatedSince20
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

with warnings.catch_warnings():
    # Importing the generated messages runs nacos-sdk-python's package init, which declares a pydantic-v1
    # ``class Config``: a deprecation warning that is the SDK's to fix.
    warnings.filterwarnings("ignore", category=PydanticDeprecatedSince20)
    from v2.nacos.transport.grpcauto import nacos_grpc_service_pb2_grpc as pb_grpc
    from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2 import Metadata, Payload

PUBLIC = "public"
VERSIONS_GROUP = "mcp-server-versions"
SERVER_GROUP = "mcp-server"
TOOLS_GROUP = "mcp-tools"
MCP_ENDPOINTS_GROUP = "mcp-endpoints"
"""Where Nacos 3 creates the service of an MCP server registered with a ``DIRECT`` endpoint."""

# Nacos' own codes (com.alibaba.nacos.api.exception.NacosException / ResponseCode).
_FAIL = 500
_NO_RIGHT = 403
_CONFIG_NOT_FOUND = 300
_UN_REGISTER = 301
_NO_HANDLER = 302
_INVALID_PARAM = 400
_SERVER_ERROR = 30000  # the admin API's code for an unexpected server-side exception

_ABILITY_TABLE = {
    "supportPersistentInstanceByGrpc": True,
    "fuzzyWatch": False,
    "lock": False,
    "mcp": True,
    "agent": False,
}

ConfigId = tuple[str, str, str]
"""(namespace, group, dataId)"""
ServiceId = tuple[str, str, str]
"""(namespace, group, service)"""
InstanceId = tuple[str, int, str]
"""(ip, port, cluster)"""


class _Fail(Exception):
    def __init__(self, error_code: int, message: str, result_code: int = _FAIL) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.result_code = result_code


@dataclass
class _Connection:
    connection_id: str
    peer: str
    namespace: str
    labels: dict[str, str]
    outbound: asyncio.Queue[Payload | None]
    listened: set[ConfigId] = field(default_factory=set)
    subscribed: set[ServiceId] = field(default_factory=set)


@dataclass
class _StoredInstance:
    ip: str
    port: int
    weight: float
    healthy: bool
    enabled: bool
    ephemeral: bool
    cluster: str
    metadata: dict[str, str]
    owner: str | None  # connection id for ephemeral instances


def _namespace(raw: object) -> str:
    # Nacos 2 calls the public namespace "", Nacos 3 "public": accept both.
    return str(raw) if raw else PUBLIC


def _legal_param(value: str) -> bool:
    """Nacos' ``ParamUtils.isValid``: letters, digits and ``_ - . :`` only."""
    return re.fullmatch(r"[A-Za-z0-9_.:-]*", value) is not None


def _md5(content: str | None) -> str:
    if not content:
        return ""
    return hashlib.md5(content.encode("utf-8")).hexdigest()


def _free_port_pair(host: str) -> int:
    """An HTTP port whose gRPC sibling (port + 1000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port + 1000 > 65535:
            continue
        with socket.socket() as sibling:
            try:
                sibling.bind((host, port + 1000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (p, p+1000) found")


class NacosDouble:
    """An in-process Nacos 3 stand-in; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", *, mcp_listing: bool = True, v1_console_api: bool = False) -> None:
        self.host = host
        self.mcp_listing = mcp_listing
        self.v1_console_api = v1_console_api
        self.http_port = _free_port_pair(host)
        self.grpc_port = self.http_port + 1000
        self._configs: dict[ConfigId, str] = {}
        self._config_rows: dict[ConfigId, tuple[int, str]] = {}  # Nacos' row id and content type
        self._row_ids = itertools.count(1102781748468518912)
        self._services: dict[ServiceId, dict[InstanceId, _StoredInstance]] = {}
        self._ref_times: dict[ServiceId, int] = {}
        self._clock_ms = 0
        self._connections: dict[str, _Connection] = {}  # by peer
        self._checked: dict[str, str] = {}  # peer -> connection id handed out by ServerCheck
        self._credentials: tuple[str, str] | None = None
        self._tokens: set[str] = set()
        self._drop_pushes = False
        self._push_delay = 0.0
        self._delayed: set[asyncio.TimerHandle] = set()
        self._push_ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.pushes_sent = 0
        self.requests_seen: list[str] = []
        self.http_requests_seen: list[str] = []
        """The path of every HTTP request, in order."""
        self.push_observers: list[Callable[[str, dict[str, Any]], None]] = []
        """Called with (request type, body) as each config / naming push is handed to its stream."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def server_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def admin_base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._grpc is not None

    async def __aenter__(self) -> NacosDouble:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._grpc is not None:
            return
        if self._changed is None:
            self._changed = asyncio.Condition()
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_RequestServicer_to_server(_RequestServicer(self), server)
        pb_grpc.add_BiRequestStreamServicer_to_server(_BiStreamServicer(self), server)
        if server.add_insecure_port(f"{self.host}:{self.grpc_port}") == 0:
            raise RuntimeError(f"cannot bind the double's gRPC port {self.grpc_port}")
        await server.start()
        self._grpc = server
        await self._start_http()

    async def stop(self) -> None:
        """Go away: every stream drops, ports close; stored configs and persistent instances stay."""
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
        if self._grpc is not None:
            server, self._grpc = self._grpc, None
            # Abort, never finish, the streams: a client only reconnects when its stream fails.
            await server.stop(grace=None)
            for conn in list(self._connections.values()):
                self._drop_connection(conn)
            self._checked.clear()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
            self._http = None
            self._http_task = None
        await self._notify()

    async def restart(self) -> None:
        """Drop every connection and come back on the same ports with the same data."""
        await self.stop()
        await self.start()

    async def _start_http(self) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.http_port))
        config = uvicorn.Config(
            self._http_app(), log_level="warning", lifespan="off", ws="none", http="h11", log_config=None
        )
        server = uvicorn.Server(config)
        self._http = server
        self._http_task = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(5):
            while not server.started:
                if self._http_task.done():
                    await self._http_task
                await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ fault controls

    def require_auth(self, username: str, password: str) -> None:
        """From now on every secured call needs a token obtained by logging in as this user."""
        self._credentials = (username, password)
        self._tokens.clear()

    def drop_pushes(self, enabled: bool = True) -> None:
        """Lose every config / naming push (the client must recover by itself)."""
        self._drop_pushes = enabled

    def delay_pushes(self, seconds: float) -> None:
        """Deliver every later config / naming push this much late."""
        self._push_delay = seconds

    # ------------------------------------------------------------------ state, as another client would change it

    def set_config(self, namespace: str, group: str, data_id: str, content: str, *, config_type: str = "text") -> None:
        """Create or update a config; like Nacos, an update keeps its row (its place in searches)."""
        if not content:
            raise ValueError("Nacos refuses empty content; use delete_config")
        key = (_namespace(namespace), group, data_id)
        row = self._config_rows.get(key)
        self._config_rows[key] = (row[0] if row else next(self._row_ids), config_type or "text")
        if self._configs.get(key) == content:
            return
        self._configs[key] = content
        self._config_changed(key)

    def delete_config(self, namespace: str, group: str, data_id: str) -> None:
        key = (_namespace(namespace), group, data_id)
        self._config_rows.pop(key, None)
        if self._configs.pop(key, None) is not None:
            self._config_changed(key)

    def config(self, namespace: str, group: str, data_id: str) -> str | None:
        return self._configs.get((_namespace(namespace), group, data_id))

    def add_instance(
        self,
        namespace: str,
        group: str,
        service: str,
        ip: str,
        port: int,
        *,
        weight: float = 1.0,
        healthy: bool = True,
        enabled: bool = True,
        metadata: dict[str, str] | None = None,
        cluster: str = "DEFAULT",
    ) -> None:
        """A persistent instance, as if registered by a client that is not connected here."""
        key = (_namespace(namespace), group, service)
        instance = _StoredInstance(ip, port, weight, healthy, enabled, False, cluster, dict(metadata or {}), None)
        self._services.setdefault(key, {})[(ip, port, cluster)] = instance
        self._service_changed(key)

    def remove_instance(
        self, namespace: str, group: str, service: str, ip: str, port: int, cluster: str = "DEFAULT"
    ) -> None:
        key = (_namespace(namespace), group, service)
        if self._services.get(key, {}).pop((ip, port, cluster), None) is not None:
            self._service_changed(key)

    def instances(self, namespace: str, group: str, service: str) -> list[dict[str, Any]]:
        key = (_namespace(namespace), group, service)
        return [self._instance_json(key, inst) for inst in self._services.get(key, {}).values()]

    def config_listeners(self, namespace: str, group: str, data_id: str) -> int:
        key = (_namespace(namespace), group, data_id)
        return sum(1 for conn in self._connections.values() if key in conn.listened)

    def subscribers(self, namespace: str, group: str, service: str) -> int:
        key = (_namespace(namespace), group, service)
        return sum(1 for conn in self._connections.values() if key in conn.subscribed)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; re-checked on every change the double sees."""
        assert self._changed is not None, "start the double first"
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _notify_soon(self) -> None:
        if self._changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    # ------------------------------------------------------------------ pushes

    def _push(self, conn: _Connection, request_type: str, body: dict[str, Any]) -> None:
        if self._drop_pushes:
            return
        body = {**body, "requestId": str(next(self._push_ids)), "headers": {}}
        payload = _payload(request_type, body)
        self.pushes_sent += 1
        if self._push_delay > 0:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def deliver() -> None:
                self._delayed.discard(handle)
                conn.outbound.put_nowait(payload)
                self._pushed(request_type, body)

            handle = loop.call_later(self._push_delay, deliver)
            self._delayed.add(handle)
        else:
            conn.outbound.put_nowait(payload)
            self._pushed(request_type, body)

    def _pushed(self, request_type: str, body: dict[str, Any]) -> None:
        for observer in list(self.push_observers):
            observer(request_type, body)

    def _config_changed(self, key: ConfigId) -> None:
        namespace, group, data_id = key
        for conn in self._connections.values():
            if key in conn.listened:
                self._push(
                    conn,
                    "ConfigChangeNotifyRequest",
                    {"module": "config", "dataId": data_id, "group": group, "tenant": namespace},
                )
        self._notify_soon()

    def _service_changed(self, key: ServiceId) -> None:
        self._ref_times[key] = self._tick()
        for conn in self._connections.values():
            if key in conn.subscribed:
                namespace, group, service = key
                self._push(
                    conn,
                    "NotifySubscriberRequest",
                    {
                        "module": "naming",
                        "namespace": namespace,
                        "groupName": group,
                        "serviceName": service,
                        "serviceInfo": self._service_info(key),
                    },
                )
        self._notify_soon()

    def _tick(self) -> int:
        # Nacos uses wall-clock millis; the SDK drops a push whose lastRefTime does not grow.
        self._clock_ms = max(int(time.time() * 1000), self._clock_ms + 1)
        return self._clock_ms

    def _service_info(self, key: ServiceId) -> dict[str, Any]:
        _, group, service = key
        if key not in self._ref_times:
            self._ref_times[key] = self._tick()
        return {
            "name": service,
            "groupName": group,
            "clusters": "",
            "cacheMillis": 10000,
            "hosts": [self._instance_json(key, inst) for inst in self._services.get(key, {}).values()],
            "lastRefTime": self._ref_times[key],
            "checksum": "",
            "allIps": False,
            "reachProtectionThreshold": False,
        }

    @staticmethod
    def _instance_json(key: ServiceId, inst: _StoredInstance) -> dict[str, Any]:
        _, group, service = key
        grouped = f"{group}@@{service}"
        return {
            "instanceId": f"{inst.ip}#{inst.port}#{inst.cluster}#{grouped}",
            "ip": inst.ip,
            "port": inst.port,
            "weight": inst.weight,
            "healthy": inst.healthy,
            "enabled": inst.enabled,
            "ephemeral": inst.ephemeral,
            "clusterName": inst.cluster,
            "serviceName": grouped,
            "metadata": dict(inst.metadata),
        }

    # ------------------------------------------------------------------ connections

    def _register_connection(self, peer: str, body: dict[str, Any], outbound: asyncio.Queue[Payload | None]) -> None:
        connection_id = self._checked.pop(peer, None) or f"{int(time.time() * 1000)}_{uuid.uuid4().hex[:8]}"
        conn = _Connection(
            connection_id, peer, _namespace(body.get("tenant")), dict(body.get("labels") or {}), outbound
        )
        self._connections[peer] = conn
        self._push_raw(conn, "SetupAckRequest", {"module": "internal", "abilityTable": _ABILITY_TABLE})
        self._notify_soon()

    def _push_raw(self, conn: _Connection, request_type: str, body: dict[str, Any]) -> None:
        # Handshake traffic is not subject to the push fault controls.
        body = {**body, "requestId": str(next(self._push_ids)), "headers": {}}
        conn.outbound.put_nowait(_payload(request_type, body))

    def _drop_connection(self, conn: _Connection) -> None:
        if self._connections.get(conn.peer) is not conn:
            return
        del self._connections[conn.peer]
        for key, instances in self._services.items():
            owned = [iid for iid, inst in instances.items() if inst.owner == conn.connection_id]
            for iid in owned:
                del instances[iid]
            if owned:
                self._service_changed(key)
        self._notify_soon()

    # ------------------------------------------------------------------ request handling

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self._credentials is None:
            return
        token = headers.get("accessToken")
        if not token:
            raise _Fail(_NO_RIGHT, "user not found!")
        if token not in self._tokens:
            raise _Fail(_NO_RIGHT, "token invalid!")

    def handle_unary(self, peer: str, payload: Payload) -> Payload:
        request_type = payload.metadata.type
        self.requests_seen.append(request_type)
        body: dict[str, Any] = json.loads(payload.body.value.decode("utf-8") or "{}")
        headers = {**(body.get("headers") or {}), **dict(payload.metadata.headers)}
        request_id = str(body.get("requestId") or "")
        if request_type == "ServerCheckRequest":
            connection_id = f"{int(time.time() * 1000)}_{uuid.uuid4().hex[:8]}"
            self._checked[peer] = connection_id
            return _response(
                "ServerCheckResponse", request_id, {"connectionId": connection_id, "supportAbilityNegotiation": True}
            )
        conn = self._connections.get(peer)
        if conn is None:
            return _response("ErrorResponse", request_id, {}, _Fail(_UN_REGISTER, "Connection is unregistered."))
        if request_type == "HealthCheckRequest":
            return _response("HealthCheckResponse", request_id, {})
        route = self._routes().get(request_type)
        if route is None:
            return _response(
                "ErrorResponse", request_id, {}, _Fail(_NO_HANDLER, f"RequestHandler Not Found: {request_type}")
            )
        response_type, handler = route
        try:
            self._check_auth(headers)
            return _response(response_type, request_id, handler(conn, body))
        except _Fail as failure:
            return _response(response_type, request_id, {}, failure)

    def _routes(self) -> dict[str, tuple[str, Callable[[_Connection, dict[str, Any]], dict[str, Any]]]]:
        return {
            "ConfigQueryRequest": ("ConfigQueryResponse", self._config_query),
            "ConfigPublishRequest": ("ConfigPublishResponse", self._config_publish),
            "ConfigRemoveRequest": ("ConfigRemoveResponse", self._config_remove),
            "ConfigBatchListenRequest": ("ConfigChangeBatchListenResponse", self._config_batch_listen),
            "InstanceRequest": ("InstanceResponse", self._instance),
            "PersistentInstanceRequest": ("InstanceResponse", self._instance),
            "BatchInstanceRequest": ("BatchInstanceResponse", self._batch_instance),
            "SubscribeServiceRequest": ("SubscribeServiceResponse", self._subscribe),
            "ServiceQueryRequest": ("QueryServiceResponse", self._service_query),
            "ServiceListRequest": ("ServiceListResponse", self._service_list),
        }

    def handle_stream_message(self, peer: str, payload: Payload, outbound: asyncio.Queue[Payload | None]) -> None:
        request_type = payload.metadata.type
        self.requests_seen.append(request_type)
        if request_type == "ConnectionSetupRequest":
            self._register_connection(peer, json.loads(payload.body.value.decode("utf-8") or "{}"), outbound)
        # Everything else on the stream acknowledges a push; the double needs no ack.

    @staticmethod
    def _config_key(body: dict[str, Any]) -> ConfigId:
        if not body.get("dataId") or not body.get("group"):
            raise _Fail(_INVALID_PARAM, "dataId and group are required")
        return (_namespace(body.get("tenant")), str(body["group"]), str(body["dataId"]))

    def _config_query(self, _conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        key = self._config_key(body)
        content = self._configs.get(key)
        if content is None:
            raise _Fail(_CONFIG_NOT_FOUND, "config data not exist")
        return {
            "content": content,
            "md5": _md5(content),
            "contentType": "json",
            "lastModified": int(time.time() * 1000),
        }

    def _config_publish(self, _conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        key = self._config_key(body)
        content = body.get("content") or ""
        if not content:
            raise _Fail(_INVALID_PARAM, "content is required")
        cas = body.get("casMd5")
        if cas and cas != _md5(self._configs.get(key)):
            raise _Fail(_FAIL, "Cas publish fail, server md5 may have changed.")
        self.set_config(*key, content, config_type=str((body.get("additionMap") or {}).get("type") or "text"))
        return {}

    def _config_remove(self, _conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        self.delete_config(*self._config_key(body))
        return {}

    def _config_batch_listen(self, conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        listen = bool(body.get("listen", True))
        changed = []
        for ctx in body.get("configListenContexts") or []:
            key = (_namespace(ctx.get("tenant")), str(ctx.get("group")), str(ctx.get("dataId")))
            if not listen:
                conn.listened.discard(key)
                continue
            conn.listened.add(key)
            if (ctx.get("md5") or "") != _md5(self._configs.get(key)):
                changed.append({"group": key[1], "dataId": key[2], "tenant": key[0]})
        self._notify_soon()
        return {"changedConfigs": changed}

    @staticmethod
    def _service_key(body: dict[str, Any]) -> ServiceId:
        service = str(body.get("serviceName") or "")
        if not service:
            raise _Fail(_INVALID_PARAM, "serviceName is required")
        return (_namespace(body.get("namespace")), str(body.get("groupName") or "DEFAULT_GROUP"), service)

    @staticmethod
    def _stored(raw: dict[str, Any], owner: str | None) -> _StoredInstance:
        ephemeral = bool(raw.get("ephemeral", True))
        return _StoredInstance(
            ip=str(raw["ip"]),
            port=int(raw["port"]),
            weight=float(raw.get("weight", 1.0)),
            healthy=bool(raw.get("healthy", True)),
            enabled=bool(raw.get("enabled", True)),
            ephemeral=ephemeral,
            cluster=str(raw.get("clusterName") or "DEFAULT"),
            metadata=dict(raw.get("metadata") or {}),
            owner=owner if ephemeral else None,
        )

    def _instance(self, conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        key = self._service_key(body)
        raw = body.get("instance") or {}
        stored = self._stored(raw, conn.connection_id)
        instances = self._services.setdefault(key, {})
        iid = (stored.ip, stored.port, stored.cluster)
        kind = body.get("type")
        # As Nacos 2+/3 does over gRPC (contract-tested): a connection publishes at most one ephemeral
        # instance per service, so registering again replaces it, and deregistering removes it whatever
        # address the request names.  Persistent instances are keyed by their address.
        owned = [i for i, inst in instances.items() if stored.ephemeral and inst.owner == conn.connection_id]
        if kind == "registerInstance":
            for previous in owned:
                del instances[previous]
            instances[iid] = stored
        elif kind == "deregisterInstance":
            doomed = owned if stored.ephemeral else [iid] if iid in instances else []
            if not doomed:
                return {"type": kind}
            for gone in doomed:
                del instances[gone]
        else:
            raise _Fail(_INVALID_PARAM, f"unsupported instance request type {kind!r}")
        self._service_changed(key)
        return {"type": kind}

    def _batch_instance(self, conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        key = self._service_key(body)
        instances = self._services.setdefault(key, {})
        for iid in [iid for iid, inst in instances.items() if inst.owner == conn.connection_id]:
            del instances[iid]
        for raw in body.get("instances") or []:
            stored = self._stored(raw, conn.connection_id)
            instances[(stored.ip, stored.port, stored.cluster)] = stored
        self._service_changed(key)
        return {"type": body.get("type")}

    def _subscribe(self, conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        key = self._service_key(body)
        if body.get("subscribe", True):
            conn.subscribed.add(key)
        else:
            conn.subscribed.discard(key)
        self._notify_soon()
        return {"serviceInfo": self._service_info(key)}

    def _service_query(self, _conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        return {"serviceInfo": self._service_info(self._service_key(body))}

    def _service_list(self, _conn: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(body.get("namespace"))
        group = str(body.get("groupName") or "DEFAULT_GROUP")
        names = sorted(s for (ns, g, s) in self._services if ns == namespace and g == group)
        page_no, page_size = int(body.get("pageNo") or 1), int(body.get("pageSize") or 10)
        start = (page_no - 1) * page_size
        return {"count": len(names), "serviceNames": names[start : start + page_size]}

    # ------------------------------------------------------------------ HTTP: login and the MCP admin API

    def _http_app(self) -> ASGIApp:
        mcp = (self._mcp_list, self._mcp_write) if self.mcp_listing else (self._no_endpoint, self._no_endpoint)
        app = Starlette(
            routes=[
                Route("/nacos/v1/auth/login", self._login, methods=["POST"]),
                Route("/nacos/v1/auth/users/login", self._login, methods=["POST"]),
                Route("/nacos/v3/auth/user/login", self._login, methods=["POST"]),
                Route("/nacos/v3/admin/ai/mcp/list", mcp[0], methods=["GET"]),
                Route("/nacos/v3/admin/ai/mcp", mcp[1], methods=["POST", "PUT", "DELETE"]),
                Route("/nacos/v3/admin/cs/config/list", self._config_search, methods=["GET"]),
                Route("/nacos/v3/admin/cs/config", self._config_detail, methods=["GET"]),
                Route("/nacos/v1/cs/configs", self._config_search_v1, methods=["GET"]),
            ]
        )

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.http_requests_seen.append(str(scope["path"]))
            await app(scope, receive, send)

        return recording

    @staticmethod
    def _spring_error(request: Request, status: int, error: str, message: str) -> Response:
        """An error as Spring Boot's error controller answers it, before or outside any Nacos controller."""
        return JSONResponse(
            {"timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"), "status": status, "error": error,
             "message": message, "path": request.url.path},
            status_code=status,
        )

    async def _no_endpoint(self, request: Request) -> Response:
        return self._spring_error(request, 404, "Not Found", f"No endpoint {request.method} {request.url.path}.")

    async def _params(self, request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method in ("POST", "PUT", "DELETE"):
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params

    async def _login(self, request: Request) -> Response:
        params = await self._params(request)
        username, password = params.get("username", ""), params.get("password", "")
        if self._credentials is not None and (username, password) != self._credentials:
            # As Nacos 3.1 answers (contract-tested): an unknown user is 403 "Access Denied", a known
            # user with a wrong password is a bare HTTP 500, on the v3 path and the v1 compatibility paths.
            status, error = (500, "Internal Server Error") if username == self._credentials[0] else (403, "Forbidden")
            return JSONResponse(
                {"status": status, "error": error, "message": "No message available", "path": request.url.path},
                status_code=status,
            )
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        return JSONResponse({"accessToken": token, "tokenTtl": 18000, "globalAdmin": True, "username": username})

    def _http_denied(self, request: Request, params: dict[str, str]) -> Response | None:
        if self._credentials is None:
            return None
        token = request.headers.get("accessToken") or params.get("accessToken")
        if token in self._tokens:
            return None
        message = "token invalid!" if token else "user not found!"
        return JSONResponse({"code": _NO_RIGHT, "message": message, "data": None}, status_code=403)

    def _spring_denied(self, request: Request, params: dict[str, str]) -> Response | None:
        """Nacos 3's auth filter in front of the config controllers (v3 admin and the v1 compatibility API)."""
        if self._credentials is None:
            return None
        token = request.headers.get("accessToken") or params.get("accessToken")
        if token in self._tokens:
            return None
        message = "token invalid!" if token else "User not found! Please check user exist or password is right!"
        return self._spring_error(request, 403, "Forbidden", f"Code: 401, Message: {message}.")

    def _search(self, namespace: str, group: str, data_id: str, blur: bool) -> list[ConfigId]:
        def matches(pattern: str, value: str) -> bool:
            if not pattern:
                return True
            if not blur:
                return pattern == value
            regex = "".join(".*" if c == "*" else "." if c == "_" else re.escape(c) for c in pattern)
            return re.fullmatch(regex, value) is not None

        found = [
            key
            for key in sorted(self._configs, key=lambda k: self._config_rows[k][0])
            if key[0] == namespace and matches(group, key[1]) and matches(data_id, key[2])
        ]
        if data_id:
            # As the real one answers: with a dataId to match, its database walks the (dataId, group, tenant)
            # index, so items come in dataId order; without one, in the order the configs were created.
            found.sort(key=lambda k: (k[2], k[1], k[0]))
        return found

    @staticmethod
    def _page_of(found: list[Any], page_no: int, page_size: int) -> dict[str, Any]:
        start = (page_no - 1) * page_size
        return {
            "totalCount": len(found),
            "pageNumber": page_no,
            "pagesAvailable": (len(found) + page_size - 1) // page_size,
            "pageItems": found[start : start + page_size],
        }

    async def _config_search(self, request: Request) -> Response:
        """``GET /nacos/v3/admin/cs/config/list``: ConfigControllerV3.list, answered as Nacos 3.1 answers."""
        params = dict(request.query_params)
        if (denied := self._spring_denied(request, params)) is not None:
            return denied
        pages: dict[str, int] = {}
        for name, default in (("pageNo", 1), ("pageSize", 100)):
            raw = params.get(name) or str(default)
            if not raw.lstrip("-").isdigit():
                return JSONResponse({"code": 30000, "message": f"Validation failed for argument {name}", "data": None},
                                    status_code=400)
            if int(raw) <= 0:
                return JSONResponse(
                    {"code": 20002, "message": "parameter validate error",
                     "data": f"Required parameter '{name}' should be positive integer, current is {raw}"},
                    status_code=400,
                )
            pages[name] = int(raw)
        blur = params.get("search") == "blur"
        data_id, group = params.get("dataId", ""), params.get("groupName", "")
        if not blur and not _legal_param(data_id):
            return Response("Param 'dataId' is illegal, illegal characters should not appear in the param.\n",
                            status_code=400)
        items = [
            {"id": str(self._config_rows[key][0]), "namespaceId": key[0], "groupName": key[1], "dataId": key[2],
             "md5": _md5(self._configs[key]), "type": self._config_rows[key][1], "appName": "", "createTime": 0,
             "modifyTime": 0}
            for key in self._search(_namespace(params.get("namespaceId")), group, data_id, blur)
        ]
        page = self._page_of(items, pages["pageNo"], pages["pageSize"])
        return JSONResponse({"code": 0, "message": "success", "data": page})

    async def _config_detail(self, request: Request) -> Response:
        """``GET /nacos/v3/admin/cs/config``: one config with its content (what the console's detail view reads)."""
        params = dict(request.query_params)
        if (denied := self._spring_denied(request, params)) is not None:
            return denied
        key = (_namespace(params.get("namespaceId")), params.get("groupName", ""), params.get("dataId", ""))
        content = self._configs.get(key)
        if content is None:
            return JSONResponse({"code": 20004, "message": "resource not found",
                                 "data": "Config not exist, please publish Config first."}, status_code=404)
        row_id, config_type = self._config_rows[key]
        return JSONResponse({"code": 0, "message": "success", "data": {
            "id": str(row_id), "namespaceId": key[0], "groupName": key[1], "dataId": key[2], "md5": _md5(content),
            "type": config_type, "appName": "", "createTime": 0, "modifyTime": 0, "content": content, "desc": None,
            "encryptedDataKey": "", "createUser": "nacos", "createIp": "127.0.0.1", "configTags": None}})

    async def _config_search_v1(self, request: Request) -> Response:
        """``GET /nacos/v1/cs/configs?search=…``: gone in Nacos 3.1 unless the console compatibility API is on."""
        if not self.v1_console_api:
            message = json.dumps({
                "code": 40000,
                "message": "Current API will be deprecated, please use API(s) `GET ${contextPath:nacos}/v3/console/"
                "cs/config/list` instead, or set `nacos.core.api.compatibility.console.enabled=true` in "
                "application.properties.",
            })
            return self._spring_error(request, 410, "Gone", message)
        params = dict(request.query_params)
        if (denied := self._spring_denied(request, params)) is not None:
            return denied
        if "search" not in params:
            return Response("the double serves only the v1 config search (search=blur|accurate)", status_code=501)
        if "pageNo" not in params or "pageSize" not in params:
            return self._spring_error(request, 400, "Bad Request", "Required parameter 'pageNo' is not present.")
        page_no, page_size = int(params["pageNo"]), int(params["pageSize"])
        data_id, group = params.get("dataId", ""), params.get("group", "")
        if page_no <= 0 or page_size <= 0:
            return Response(f"caused: serialize page error, dataId={data_id}, group={group};caused: pageNo and "
                            "pageSize must be greater than zero;", status_code=400)
        items = [
            {"id": str(self._config_rows[key][0]), "dataId": key[2], "group": key[1], "content": self._configs[key],
             "md5": _md5(self._configs[key]), "encryptedDataKey": "", "tenant": key[0], "appName": "",
             "type": self._config_rows[key][1]}
            for key in self._search(_namespace(params.get("tenant")), group, data_id, params["search"] == "blur")
        ]
        return JSONResponse(self._page_of(items, page_no, page_size))

    def _versions(self, namespace: str) -> list[dict[str, Any]]:
        found = []
        for (ns, group, _), content in sorted(self._configs.items()):
            if ns == namespace and group == VERSIONS_GROUP:
                with contextlib.suppress(ValueError):
                    found.append(json.loads(content))
        return found

    async def _mcp_list(self, request: Request) -> Response:
        params = await self._params(request)
        if (denied := self._http_denied(request, params)) is not None:
            return denied
        namespace = _namespace(params.get("namespaceId"))
        name = params.get("mcpName") or ""
        blur = params.get("search", "blur") == "blur"
        page_no = max(int(params.get("pageNo") or 1), 1)
        page_size = max(int(params.get("pageSize") or 100), 1)
        items = []
        for version in self._versions(namespace):
            server_name = str(version.get("name", ""))
            if name and not (name in server_name if blur else name == server_name):
                continue
            # As Nacos 3.1 answers (contract-tested): the versions file read through its models, with
            # is_latest recomputed up to the latest published version (transferToMcpServerVersionInfo).
            latest = version.get("latestPublishedVersion") or ""
            details = [dict(d) for d in version.get("versionDetails") or [] if isinstance(d, dict)]
            detail = None
            for candidate in details:
                if candidate.get("version") == latest:
                    candidate["is_latest"], detail = True, candidate
                    break
                candidate["is_latest"] = False
            items.append(
                {
                    "id": version.get("id"),
                    "name": server_name,
                    "protocol": version.get("protocol"),
                    "frontProtocol": version.get("frontProtocol"),
                    "description": version.get("description"),
                    "repository": version.get("repository"),
                    "packages": None,
                    "versionDetail": detail,
                    "version": latest,
                    "remoteServerConfig": None,
                    "localServerConfig": None,
                    "enabled": version.get("enabled", True),
                    "status": version.get("status", "active"),
                    "capabilities": version.get("capabilities") or [],
                    "latestPublishedVersion": latest,
                    "versionDetails": details,
                }
            )
        total = len(items)
        pages = (total + page_size - 1) // page_size
        start = (page_no - 1) * page_size
        page = {
            "totalCount": total,
            "pageNumber": page_no,
            "pagesAvailable": pages,
            "pageItems": items[start : start + page_size],
        }
        return JSONResponse({"code": 0, "message": "success", "data": page})

    async def _mcp_write(self, request: Request) -> Response:
        params = await self._params(request)
        if (denied := self._http_denied(request, params)) is not None:
            return denied
        namespace = _namespace(params.get("namespaceId"))
        try:
            if request.method == "DELETE":
                self._mcp_delete(namespace, params)
                return JSONResponse({"code": 0, "message": "success", "data": "ok"})
            server_id = self._mcp_upsert(namespace, params, create=request.method == "POST")
        except _Fail as failure:
            return JSONResponse(
                {"code": failure.error_code, "message": failure.message, "data": None},
                status_code=500 if failure.error_code == _SERVER_ERROR else max(failure.error_code, 400),
            )
        return JSONResponse({"code": 0, "message": "success", "data": server_id if request.method == "POST" else "ok"})

    def _find_versions(self, namespace: str, *, server_id: str = "", name: str = "") -> dict[str, Any] | None:
        for version in self._versions(namespace):
            if (server_id and version.get("id") == server_id) or (name and version.get("name") == name):
                return version
        return None

    def _mcp_upsert(self, namespace: str, params: dict[str, str], *, create: bool) -> str:
        try:
            spec: dict[str, Any] = json.loads(params["serverSpecification"])
            tools: dict[str, Any] = json.loads(params.get("toolSpecification") or '{"tools": [], "toolsMeta": {}}')
        except (KeyError, ValueError) as exc:
            raise _Fail(_INVALID_PARAM, f"serverSpecification / toolSpecification invalid: {exc}") from exc
        if spec.get("protocol", "http") != "stdio" and not params.get("endpointSpecification"):
            # What Nacos 3 answers (McpServerOperationService): a remote server needs an endpoint.
            raise _Fail(_INVALID_PARAM, "request parameter `endpointSpecification` should not be null")
        name = str(spec.get("name") or "")
        version = str((spec.get("versionDetail") or {}).get("version") or spec.get("version") or "")
        if not name or not version:
            raise _Fail(_INVALID_PARAM, "serverSpecification needs name and versionDetail.version")
        existing = self._find_versions(namespace, server_id=str(spec.get("id") or ""), name=name)
        if create and existing is not None:
            raise _Fail(409, f"mcp server {name} has existed")
        if not create and existing is None:
            raise _Fail(404, f"mcp server {name} not found")
        server_id = str(existing["id"]) if existing else str(spec.get("id") or uuid.uuid4())
        latest = create or params.get("latest", "true").lower() == "true"  # Nacos' McpUpdateForm defaults to true
        released = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # As McpServerOperationService.updateMcpServer does (contract-tested): a new version is appended as a
        # draft (no release date); publishing walks the list in order, clears is_latest of the versions
        # *before* the published one, stamps that one with the current time and stops, so versions after it
        # keep an is_latest of true; latestPublishedVersion is what says which version is served.
        details = [dict(d) for d in (existing or {}).get("versionDetails") or [] if isinstance(d, dict)]
        capabilities = ["TOOL"] if tools.get("tools") is not None or tools.get("securitySchemes") is not None else []
        if create:
            # createMcpServer: a single, released version (no is_latest in the stored detail).
            details = [{"version": version, "release_date": released}]
        elif all(d.get("version") != version for d in details):
            details.append({"version": version})
        if latest and not create:
            for detail in details:
                if detail.get("version") == version:
                    detail["release_date"], detail["is_latest"] = released, True
                    break
                detail["is_latest"] = False
        versions = dict(existing or {})
        if latest:  # a draft leaves name, description, protocols and capabilities as they were
            versions.update(
                id=server_id,
                name=name,
                protocol=spec.get("protocol", "http"),
                frontProtocol=spec.get("frontProtocol", "mcp-sse"),
                description=spec.get("description", ""),
                enabled=spec.get("enabled", True),
                status="active",
                capabilities=capabilities,
                latestPublishedVersion=version,
            )
        versions["versionDetails"] = details
        tools = _stored_tool_specification(tools)
        sent_detail: dict[str, Any] = spec["versionDetail"] if isinstance(spec.get("versionDetail"), dict) else {}
        server = {
            **spec,
            "id": server_id,
            "status": "active",
            "capabilities": capabilities,
            # Only creation stamps the spec's own versionDetail; an update stores it as sent.
            "versionDetail": {**sent_detail, "version": version, **({"release_date": released} if create else {})},
            "toolsDescriptionRef": f"{server_id}-{version}-mcp-tools.json",
        }
        endpoint = json.loads(params.get("endpointSpecification") or "{}")
        if endpoint and not isinstance(spec.get("remoteServerConfig"), dict):
            # Nacos 3.1 fails with a NullPointerException (code 30000, HTTP 500) instead of a validation message.
            raise _Fail(_SERVER_ERROR, 'Cannot invoke "McpServerRemoteServiceConfig.setServiceRef(...)" because '
                        '"McpServerStorageInfo.getRemoteServerConfig()" is null')
        ref = self._endpoint_service_ref(namespace, name, version, endpoint)
        if ref is not None:
            server["remoteServerConfig"] = {**(server.get("remoteServerConfig") or {}), "serviceRef": ref}
        # Nacos writes the versions file first: readers may see a version whose spec is not there yet.
        self.set_config(namespace, VERSIONS_GROUP, f"{server_id}-mcp-versions.json", json.dumps(versions))
        self.set_config(namespace, SERVER_GROUP, f"{server_id}-{version}-mcp-server.json", json.dumps(server))
        self.set_config(namespace, TOOLS_GROUP, f"{server_id}-{version}-mcp-tools.json", json.dumps(tools))
        return server_id

    def _endpoint_service_ref(
        self, namespace: str, name: str, version: str, endpoint: dict[str, Any]
    ) -> dict[str, str] | None:
        """The serviceRef Nacos 3.1 stores for an ``endpointSpecification`` (checked against the real server).

        ``REF`` names an existing service, always taken in the server's own namespace.  ``DIRECT`` (what the
        console sends for an MCP server given by its URL) makes Nacos create a persistent service of its own,
        ``mcp-endpoints@@{name}::{version}``, holding one persistent instance at the address; deleting the MCP
        server leaves that service and instance behind, as on the real server.  Both keep ``transportProtocol``.
        """
        data = endpoint.get("data") or {}
        kind = str(endpoint.get("type") or "").upper()
        if kind == "REF":
            ref = {"namespaceId": namespace, "groupName": data.get("groupName") or "DEFAULT_GROUP",
                   "serviceName": data.get("serviceName", "")}
        elif kind == "DIRECT":
            try:
                address, port = str(data["address"]), int(data["port"])
            except (KeyError, ValueError) as exc:
                raise _Fail(_INVALID_PARAM, f"DIRECT endpointSpecification needs address and port: {exc}") from exc
            ref = {"namespaceId": namespace, "groupName": MCP_ENDPOINTS_GROUP, "serviceName": f"{name}::{version}"}
            self.add_instance(namespace, MCP_ENDPOINTS_GROUP, ref["serviceName"], address, port)
        else:
            return None
        if data.get("transportProtocol"):
            ref["transportProtocol"] = str(data["transportProtocol"])
        return ref

    def _mcp_delete(self, namespace: str, params: dict[str, str]) -> None:
        existing = self._find_versions(namespace, server_id=params.get("mcpId", ""), name=params.get("mcpName", ""))
        if existing is None:
            raise _Fail(404, "mcp server not found")
        server_id = str(existing["id"])
        versions = [str(d.get("version")) for d in existing.get("versionDetails") or []]
        doomed = [params["version"]] if params.get("version") else versions
        for version in doomed:
            self.delete_config(namespace, SERVER_GROUP, f"{server_id}-{version}-mcp-server.json")
            self.delete_config(namespace, TOOLS_GROUP, f"{server_id}-{version}-mcp-tools.json")
        remaining = [d for d in existing.get("versionDetails") or [] if d.get("version") not in doomed]
        if remaining:
            self.set_config(
                namespace,
                VERSIONS_GROUP,
                f"{server_id}-mcp-versions.json",
                json.dumps({**existing, "versionDetails": remaining}),
            )
        else:
            self.delete_config(namespace, VERSIONS_GROUP, f"{server_id}-mcp-versions.json")


_TOOL_FIELDS = ("name", "description", "inputSchema")
_TOOL_META_FIELDS = ("invokeContext", "enabled", "templates")
_SECURITY_SCHEME_FIELDS = ("id", "type", "scheme", "in", "name", "defaultCredential")


def _stored_tool_specification(tools: dict[str, Any]) -> dict[str, Any]:
    """A tools spec as Nacos 3.1's admin API stores it: read into its Java models, written back without nulls.

    ``McpTool`` has only name, description and inputSchema (annotations and outputSchema are dropped),
    ``McpToolMeta`` has invokeContext, ``enabled`` (absent = true) and templates.
    """

    def project(item: object, fields: tuple[str, ...]) -> dict[str, Any]:
        source = item if isinstance(item, dict) else {}
        return {key: source[key] for key in fields if source.get(key) is not None}

    # Checked against the real server too: the three lists are always written (a console's
    # {"securitySchemes": []} is stored as {"tools": [], "toolsMeta": {}, "securitySchemes": []}),
    # invokeContext values become strings ({"n": 1} -> {"n": "1"}), and the keys the console's tool
    # editor adds to a toolsMeta entry (transparentAuth, securitySchemeId, clientSecuritySchemeId) are dropped.
    def meta_of(meta: object) -> dict[str, Any]:
        kept = project(meta, _TOOL_META_FIELDS)
        if isinstance(kept.get("invokeContext"), dict):
            kept["invokeContext"] = {str(k): str(v) for k, v in kept["invokeContext"].items()}
        return {**kept, "enabled": bool((meta if isinstance(meta, dict) else {}).get("enabled", True))}

    stored: dict[str, Any] = {}
    raw_tools, raw_meta, raw_schemes = tools.get("tools"), tools.get("toolsMeta"), tools.get("securitySchemes")
    stored["tools"] = [project(tool, _TOOL_FIELDS) for tool in raw_tools] if isinstance(raw_tools, list) else []
    stored["toolsMeta"] = {n: meta_of(m) for n, m in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    stored["securitySchemes"] = (
        [project(scheme, _SECURITY_SCHEME_FIELDS) for scheme in raw_schemes] if isinstance(raw_schemes, list) else []
    )
    return stored


def _payload(message_type: str, body: dict[str, Any]) -> Payload:
    return Payload(
        metadata=Metadata(type=message_type, clientIp="127.0.0.1"),
        body=AnyMessage(value=json.dumps(body).encode("utf-8")),
    )


def _response(response_type: str, request_id: str, fields: dict[str, Any], failure: _Fail | None = None) -> Payload:
    # Nacos serialises with NON_NULL inclusion: absent fields are omitted, never null.
    body: dict[str, Any] = {"resultCode": 200, "errorCode": 0, "requestId": request_id, **fields}
    if failure is not None:
        body.update(resultCode=failure.result_code, errorCode=failure.error_code, message=failure.message)
    return _payload(response_type, body)


class _RequestServicer(pb_grpc.RequestServicer):  # type: ignore[misc]
    def __init__(self, double: NacosDouble) -> None:
        self._double = double

    async def request(self, request: Payload, context: grpc.aio.ServicerContext[Payload, Payload]) -> Payload:
        return self._double.handle_unary(context.peer(), request)


class _BiStreamServicer(pb_grpc.BiRequestStreamServicer):  # type: ignore[misc]
    def __init__(self, double: NacosDouble) -> None:
        self._double = double

    async def requestBiStream(
        self, request_iterator: AsyncIterator[Payload], context: grpc.aio.ServicerContext[Payload, Payload]
    ) -> AsyncIterator[Payload]:
        peer = context.peer()
        outbound: asyncio.Queue[Payload | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for payload in request_iterator:
                    self._double.handle_stream_message(peer, payload, outbound)
            finally:
                outbound.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (payload := await outbound.get()) is not None:
                yield payload
        finally:
            reader.cancel()
            conn = self._double._connections.get(peer)
            if conn is not None and conn.outbound is outbound:
                self._double._drop_connection(conn)
