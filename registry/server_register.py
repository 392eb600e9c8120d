"""The in-memory server register: every backend instance by service name, with its origin.

Two origins feed it. ``connect``: MCP servers that register themselves with
the gateway (``POST /api/mcp/servers/connect``). ``source``: the instances
Nacos or the files tree lists for the services the gateway watches, mirrored
by ``remote.overlay.RegisteringSource`` as the source delivers them. The
design (a Java ``McpMemoryRegister``) keeps many instances under one name,
each with a unique id, drops a name's record when its last instance goes,
and selects healthy, enabled, active instances by load balancing.

The design's API is here under its own names, on its server model
(``McpServer``: id, name, host, port, ``McpTransportType``, ``McpServerStatus``):
``register``, ``unregister``, ``get_server``, ``get_servers_by_name``,
``get_server_by_load_balance``, ``has_server``, ``get_server_count``,
``get_all_servers`` (a list) and ``get_statistics``. Its load-balanced pick
takes ACTIVE servers only, by the register's strategy (round robin unless
named otherwise, any name of the ``mcpgw.balancers`` entry points), and
answers None when none is active: panic mode is a data-plane policy of
``select`` and the clusters, off for this API. The gateway's own paths use
``connect``/``select``, which keep the connect origin's transport and scheme
and the data plane's outlier ejection and panic mode.

The two origins are kept apart because they flow in opposite directions.
Connected instances must reach the gateway's clusters, so subscribers (the
overlay) hear of every connect-origin change and re-deliver it into the
source cascade. Source instances already took that cascade: telling the
overlay about them would only echo each source change as a second delivery
and reconcile, so mirroring notifies nobody. Writes of either origin never
touch the other's entries.

Selection is on the hot path and must never wait for a writer: writers
serialise on a lock and publish a new immutable snapshot, and readers use
whichever snapshot is current without locking. The snapshot is a HAMT
(``immutables.Map``), so one service's change costs O(log n) rather than a
copy of every service: the source mirrors services one delivery at a time,
and a 10,000-service sync must not pay 10,000 full copies. Each name's
``ClusterRuntime`` (balancing position, health statistics) outlives
snapshots; it is created on the first selection, since most mirrored names
are never selected here (the gateway's calls balance over its clusters) and
10,000 runtimes would cost ~0.1 s of a sync for nothing. Subscribers are
told the name that changed (level-triggered: they re-read), after the lock
is released so they may call back into the register.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import immutables
import structlog

from mcpgw.registry.balancing import Balancer, BalancingPolicy, Clock, ClusterRuntime, make_balancer, strategy_name
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.models import Instance

log = structlog.get_logger("mcpgw.server_register")

Transport = Literal["mcp-streamable", "mcp-sse", "http", "https"]
TRANSPORTS: Final[tuple[str, ...]] = get_args(Transport)

Origin = Literal["connect", "source"]
"""``connect``: registered through the connect API; ``source``: mirrored from Nacos or the files tree."""

Subscriber = Callable[[str], None]


class RegistrationError(McpgwError, ValueError):
    """A registration that cannot be accepted (empty name, bad port, negative weight, ...)."""


class McpServerStatus(enum.StrEnum):
    """The design's ``McpServerStatus``: only ``ACTIVE`` servers are chosen by ``get_server_by_load_balance``."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    """Disabled (Nacos ``enabled: false``): registered, never chosen."""
    UNHEALTHY = "UNHEALTHY"
    """Failing its health check (Nacos ``healthy: false``): registered, not chosen."""


class McpTransportType(enum.StrEnum):
    """The design's ``McpTransportType``: how the gateway talks to the server."""

    STREAMABLE_HTTP = "mcp-streamable"
    SSE = "mcp-sse"
    HTTP = "http"
    HTTPS = "https"


@dataclass(frozen=True, slots=True)
class McpServer:
    """The design's ``McpServer``: one instance of a named server, where it listens, and its status."""

    id: str
    name: str
    host: str
    port: int
    transport_type: McpTransportType = McpTransportType.STREAMABLE_HTTP
    status: McpServerStatus = McpServerStatus.ACTIVE
    weight: float = 1.0
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    origin: Origin = "connect"
    """``connect`` (registered here) or ``source`` (mirrored from Nacos or the files tree)."""

    @classmethod
    def of(cls, name: str, instance: Instance, origin: Origin) -> McpServer:
        transport = instance.metadata.get("transport", instance.scheme)
        status = (McpServerStatus.INACTIVE if not instance.enabled
                  else McpServerStatus.UNHEALTHY if not instance.healthy else McpServerStatus.ACTIVE)
        return cls(id=instance.id, name=name, host=instance.host, port=instance.port,
                   transport_type=McpTransportType(transport) if transport in TRANSPORTS
                   else McpTransportType.HTTP, status=status, weight=instance.weight,
                   metadata=instance.metadata, origin=origin)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One service's instances by origin, each in the order it arrived."""

    source: tuple[Instance, ...] = ()
    connected: tuple[Instance, ...] = ()

    @property
    def instances(self) -> tuple[Instance, ...]:
        """Every instance, the source's first."""
        return (*self.source, *self.connected)

    def entries(self) -> Iterator[tuple[Instance, Origin]]:
        """Every instance with its origin, the source's first."""
        for instance in self.source:
            yield instance, "source"
        for instance in self.connected:
            yield instance, "connect"

    def served(self) -> tuple[Instance, ...]:
        """What selection balances over: the source's instances, then the connected ones at an address and
        with an id the source does not have (the source wins, as in ``remote.overlay.merge_instances``)."""
        if not self.source or not self.connected:
            return self.instances
        taken = {f"{i.host}:{i.port}" for i in self.source} | {i.id for i in self.source}
        return (*self.source, *(i for i in self.connected if i.id not in taken and f"{i.host}:{i.port}" not in taken))


_NO_RECORD: Final = ServiceRecord()


class ServerRegister:
    """Backend instances by service name and origin; thread-safe, lock-free on the read and select path."""

    def __init__(self, policy: BalancingPolicy | None = None, *, clock: Clock = time.monotonic,
                 strategy: str = "round_robin") -> None:
        self._policy = policy or BalancingPolicy()
        self._clock = clock
        self._strategy = strategy_name(strategy, where="for the server register")
        self._design_balancers: dict[str, Balancer] = {}
        self._lock = threading.Lock()
        self._records: immutables.Map[str, ServiceRecord] = immutables.Map()
        # Only names someone selected from have a runtime; written under the lock, read without it.
        self._runtimes: dict[str, ClusterRuntime] = {}
        self._subscribers: tuple[Subscriber, ...] = ()

    # ------------------------------------------------------------------ connect origin

    def connect(
        self,
        service_name: str,
        server_id: str,
        host: str,
        port: int,
        *,
        weight: float = 1.0,
        metadata: Mapping[str, str] | None = None,
        transport: Transport = "mcp-streamable",
        scheme: Literal["http", "https"] = "http",
        healthy: bool = True,
        enabled: bool = True,
    ) -> bool:
        """Add or update the connected instance ``server_id`` of ``service_name``.

        Returns ``True`` when the instance is new, ``False`` when an existing
        registration was updated (or was already identical, which changes
        nothing and notifies nobody). ``transport`` is kept in the instance's
        ``metadata["transport"]``.
        """
        instance = replace(
            self._instance(service_name, server_id, host, port, weight, metadata, transport, scheme),
            healthy=healthy,
            enabled=enabled,
        )
        with self._lock:
            record = self._records.get(service_name, _NO_RECORD)
            current = record.connected
            position = next((n for n, i in enumerate(current) if i.id == server_id), None)
            if position is None:
                updated = (*current, instance)
            elif current[position] == instance:
                return False
            else:
                updated = (*current[:position], instance, *current[position + 1 :])
            self._commit({service_name: replace(record, connected=updated)})
        log.info("server_register.registered", service=service_name, server=server_id, new=position is None)
        self._notify(service_name)
        return position is None

    def unregister(self, service_name: str, server_id: str) -> bool:
        """Remove one connected instance; ``False`` if no connected instance has that id.

        Source instances are the source's to remove: ``origin`` tells a caller which one it was asked for.
        """
        with self._lock:
            record = self._records.get(service_name, _NO_RECORD)
            remaining = tuple(i for i in record.connected if i.id != server_id)
            if len(remaining) == len(record.connected):
                return False
            self._commit({service_name: replace(record, connected=remaining)})
        log.info("server_register.unregistered", service=service_name, server=server_id)
        self._notify(service_name)
        return True

    def set_status(
        self, service_name: str, server_id: str, *, healthy: bool | None = None, enabled: bool | None = None
    ) -> bool:
        """Change a connected instance's health or enabled flag (an active health check's verdict).

        Returns ``False`` when no connected instance has that id or nothing
        changed; a source instance's status is the source's.
        """
        with self._lock:
            record = self._records.get(service_name, _NO_RECORD)
            updated = tuple(
                replace(
                    i,
                    healthy=i.healthy if healthy is None else healthy,
                    enabled=i.enabled if enabled is None else enabled,
                )
                if i.id == server_id
                else i
                for i in record.connected
            )
            if updated == record.connected:
                return False
            self._commit({service_name: replace(record, connected=updated)})
        self._notify(service_name)
        return True

    # ------------------------------------------------------------------ the design's register (McpMemoryRegister)

    def register(self, server: McpServer) -> bool:
        """Register ``server`` under its name (the connect origin); ``True`` when its id is new under that name.

        Registering a known id again updates it in place (``False``). Its
        ``status`` becomes the instance's health (``UNHEALTHY``) and enabled
        flag (``INACTIVE``). Invalid servers raise ``RegistrationError``.
        """
        return self.connect(
            server.name, server.id, server.host, server.port, weight=server.weight,
            metadata={k: v for k, v in server.metadata.items() if k != "transport"},
            transport=server.transport_type.value,
            scheme="https" if server.transport_type is McpTransportType.HTTPS else "http",
            healthy=server.status is not McpServerStatus.UNHEALTHY,
            enabled=server.status is not McpServerStatus.INACTIVE,
        )

    def get_server(self, name: str, server_id: str) -> McpServer | None:
        """The server with that id under ``name`` (the source's, when both origins have one), or None."""
        record = self._records.get(name, _NO_RECORD)
        return next((McpServer.of(name, i, origin) for i, origin in record.entries() if i.id == server_id), None)

    def get_servers_by_name(self, name: str) -> list[McpServer]:
        """Every server registered under ``name``, whatever its status, the source's first."""
        return [McpServer.of(name, i, origin) for i, origin in self._records.get(name, _NO_RECORD).entries()]

    def get_server_by_load_balance(self, name: str) -> McpServer | None:
        """One ``ACTIVE`` server of ``name`` by the register's strategy (round robin unless told otherwise).

        Only ACTIVE servers take part; None when none is (no panic mode here:
        that is a data-plane policy of ``select`` and the clusters). Picks take
        no lock.
        """
        record = self._records.get(name)
        if record is None:
            return None
        active = tuple(i for i in record.served() if i.enabled and i.healthy)
        if not active:
            return None
        balancer = self._design_balancers.get(name)
        if balancer is None:
            balancer = self._design_balancers.setdefault(name, make_balancer(self._strategy, clock=self._clock))
        chosen = balancer.pick(active)
        if chosen is None:
            return None
        origin: Origin = "source" if any(i is chosen for i in record.source) else "connect"
        return McpServer.of(name, chosen, origin)

    def has_server(self, name: str) -> bool:
        """Whether any server is registered under ``name``."""
        return name in self._records

    def get_server_count(self, name: str | None = None) -> int:
        """Servers registered under ``name``, or under every name when none is given."""
        return self.count(name)

    def get_all_servers(self) -> list[McpServer]:
        """Every registered server, by name, the source's first within a name."""
        return [McpServer.of(name, i, origin) for name, record in sorted(self._records.items())
                for i, origin in record.entries()]

    def get_statistics(self) -> dict[str, Any]:
        """The design's ``getStatistics``: ``{totalServerNames, totalServers, serverCounts}``, plus
        ``originCounts`` and ``statusCounts``."""
        stats = self._counts()
        statuses = dict.fromkeys((s.value for s in McpServerStatus), 0)
        for server in self.get_all_servers():
            statuses[server.status.value] += 1
        return {**stats, "statusCounts": statuses}

    # ------------------------------------------------------------------ source origin

    def mirror_source(
        self, services: Mapping[str, Sequence[Instance]], removed: Collection[str] = ()
    ) -> frozenset[str]:
        """Make the source instances of each service in ``services`` exactly the given ones, in one publication.

        Names in ``removed`` (and not in ``services``) lose all their source
        instances. Connected instances stay as they are; a name goes when it
        has neither. Instances with one id keep the last. Costs O(log n) per
        named service, whatever the register holds, and notifies no
        subscriber (see the module docstring). Returns the names whose
        source instances changed.
        """
        with self._lock:
            updates: dict[str, ServiceRecord] = {}
            for name, given in (*services.items(), *((n, ()) for n in removed if n not in services)):
                record = self._records.get(name, _NO_RECORD)
                source = tuple({i.id: i for i in given}.values())
                if source != record.source:
                    updates[name] = replace(record, source=source)
            if updates:
                self._commit(updates)
        return frozenset(updates)

    # ------------------------------------------------------------------ reads

    def get(self, service_name: str, server_id: str) -> Instance | None:
        """The instance with that id, the source's if both origins have one."""
        return next((i for i in self.instances(service_name) if i.id == server_id), None)

    def origin(self, service_name: str, server_id: str) -> Origin | None:
        """Where the instance with that id came from (``source`` if both origins have one)."""
        record = self._records.get(service_name, _NO_RECORD)
        return next((origin for i, origin in record.entries() if i.id == server_id), None)

    def instances(self, service_name: str) -> tuple[Instance, ...]:
        """All instances of a service, the source's first, whatever their state."""
        return self._records.get(service_name, _NO_RECORD).instances

    def connected(self, service_name: str) -> tuple[Instance, ...]:
        """The connected instances of a service, in registration order."""
        return self._records.get(service_name, _NO_RECORD).connected

    def mirrored(self, service_name: str) -> tuple[Instance, ...]:
        """The source's instances of a service, as last mirrored."""
        return self._records.get(service_name, _NO_RECORD).source

    def select(self, service_name: str, key: str | None = None, exclude: Collection[str] = ()) -> Instance | None:
        """One healthy, enabled, non-ejected instance by the service's balancing strategy.

        ``key`` is for sticky strategies (the MCP session id), ``exclude`` the
        ids a retry already tried. ``None`` when the service is unknown or
        has no usable instance. Both origins take part, the source winning an
        address or id both have (``ServiceRecord.served``).
        """
        runtime = self.runtime(service_name)
        return None if runtime is None else runtime.pick(key, exclude)

    def runtime(self, service_name: str) -> ClusterRuntime | None:
        """The balancing and health state of a service: call ``record_start``/``record_finish`` on it."""
        runtime = self._runtimes.get(service_name)
        if runtime is not None or service_name not in self._records:
            return runtime
        with self._lock:
            record = self._records.get(service_name)
            if record is None:
                return None
            runtime = self._runtimes.get(service_name)
            if runtime is None:
                runtime = ClusterRuntime(service_name, self._policy, service=service_name, clock=self._clock)
                runtime.update_instances(record.served())
                self._runtimes[service_name] = runtime
            return runtime

    def has(self, service_name: str, server_id: str | None = None) -> bool:
        if server_id is None:
            return service_name in self._records
        return self.get(service_name, server_id) is not None

    def count(self, service_name: str | None = None) -> int:
        """Instances of one service, or of all services when no name is given (both origins)."""
        records = self._records
        if service_name is not None:
            record = records.get(service_name, _NO_RECORD)
            return len(record.source) + len(record.connected)
        return sum(len(r.source) + len(r.connected) for r in records.values())

    def all(self) -> Mapping[str, ServiceRecord]:
        """Every service and its record: a consistent read-only snapshot."""
        return self._records

    def _counts(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        by_origin = {"connect": 0, "source": 0}
        for name, record in self._records.items():
            counts[name] = len(record.source) + len(record.connected)
            by_origin["source"] += len(record.source)
            by_origin["connect"] += len(record.connected)
        return {"totalServerNames": len(counts), "totalServers": sum(counts.values()), "serverCounts": counts,
                "originCounts": by_origin}

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(service_name)`` after every change of that service's connected instances.

        Returns an unsubscribe. Mirrored source changes are not told (see the module docstring).
        """
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def _instance(
        self,
        service_name: str,
        server_id: str,
        host: str,
        port: int,
        weight: float,
        metadata: Mapping[str, str] | None,
        transport: str,
        scheme: str,
    ) -> Instance:
        where = f"server {server_id!r} of service {service_name!r}"
        problems = []
        if not service_name.strip():
            problems.append("the service name is empty")
        if not server_id.strip():
            problems.append("the server id is empty")
        if not host.strip():
            problems.append("the host is empty")
        if not 1 <= port <= 65535:
            problems.append(f"port {port} is outside 1-65535")
        if not (math.isfinite(weight) and weight >= 0):
            problems.append(f"weight {weight} is not a finite number ≥ 0")
        if transport not in TRANSPORTS:
            problems.append(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
        if scheme not in ("http", "https"):
            problems.append(f"scheme {scheme!r} is not http or https")
        if problems:
            raise RegistrationError(
                f"cannot register {where}: {'; '.join(problems)}. Fix the registration and send it again."
            )
        return Instance(
            id=server_id,
            host=host,
            port=port,
            weight=weight,
            scheme=scheme,
            metadata=MappingProxyType({**(metadata or {}), "transport": transport}),
        )

    def _commit(self, records: Mapping[str, ServiceRecord]) -> None:
        """Swap in a snapshot with these records, an empty one dropping its name; called with the lock held."""
        mutation = self._records.mutate()
        for name, record in records.items():
            if record.source or record.connected:
                mutation[name] = record
                if (runtime := self._runtimes.get(name)) is not None:
                    runtime.update_instances(record.served())
            else:
                mutation.pop(name, None)
                self._runtimes.pop(name, None)
                self._design_balancers.pop(name, None)
        self._records = mutation.finish()

    def _notify(self, service_name: str) -> None:
        for callback in self._subscribers:
            try:
                callback(service_name)
            except Exception:
                log.exception("server_register.subscriber_failed", service=service_name)
